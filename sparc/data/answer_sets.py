"""The answer set of an open-ended benchmark (TGIF-QA FrameQA, MSVD-QA, MSRVTT-QA): the classes the
model's head scores, in the order of its outputs.

Two sources, one rule between them:

- **A prior store.** An open-ended store records the answer set its teacher scored (``sparc
  extract-priors --answers-from``: the store's metadata ``"answers"``); prior ``[t, c]`` is answer ``c``
  of that list. A run with these priors must score exactly that list, in that order, or the
  teacher's distribution lands on the wrong classes. :func:`store_answer_set` reads and checks it.
- **A protocol over the train answers**, for a run without a store (:func:`train_answer_set`):
  ``"top"`` the ``size`` most frequent (Xu et al.'s ``create_answerset``, 1000 for MSVD-QA and
  MSRVTT-QA), ``"all"`` every distinct train answer (HCRN's FrameQA vocabulary), ``"sparc"`` the
  answers seen at least ``min_count`` times (2: what ``sparc extract-priors --answers-from`` writes,
  SpARC 3.1), so a run without priors can use the set a run with them gets.

Ordering: "top" and "all" most frequent first, ties by first appearance in train; "sparc" as
:func:`sparc.data.questions.open_answer_set` orders it (ties alphabetical). A question whose answer is
outside the set has class -1 (:func:`sparc.data.words.answer_index`): train drops it, evaluation
counts it wrong.
"""

from __future__ import annotations

from typing import List, Sequence

RULES = ("top", "all", "sparc")


def train_answer_set(train_answers: Sequence[str], rule: str = "top", size: int = 1000, min_count: int = 2) -> List[str]:
    """The answer set ``rule`` gives over the train split's answers (see the module docstring)."""
    from sparc.data.msqa import answer_set
    from sparc.data.questions import VideoQuestion, open_answer_set

    answers = [str(a) for a in train_answers]
    if not answers:
        raise ValueError("the train split has no answers to build an answer set from")
    if rule == "top":
        return answer_set(answers, size=size)
    if rule == "all":
        return answer_set(answers, size=len(set(answers)))
    if rule == "sparc":
        records = (VideoQuestion(str(i), "", "", None, a) for i, a in enumerate(answers))
        found = list(open_answer_set(records, min_count))
        if not found:
            raise ValueError(f"no train answer occurs {min_count} times (field: answer)")
        return found
    raise ValueError(f"answer set rule must be one of {RULES}, got {rule!r}")


def store_answer_set(store, train_answers: Sequence[str], train_file: str = "the train split") -> List[str]:
    """The answer list an open-ended prior store was extracted over (metadata ``"answers"``), checked
    against the store and the train split: one entry per candidate of the store, each once, each an
    answer of ``train_file`` (a list from another dataset or split fails here, not as wrong priors)."""
    where = f"prior store {store.path}"
    answers = store.metadata.get("answers")
    if answers is None:
        raise ValueError(f"{where} records no answer list (metadata 'answers'): an open-ended store is extracted "
                         f"with sparc extract-priors --answers-from {train_file} (field: metadata.answers)")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"{where}: metadata 'answers' must be a list of answer strings (field: metadata.answers)")
    if len(answers) != store.num_candidates:
        raise ValueError(f"{where}: its answer list has {len(answers)} answers but its priors have "
                         f"{store.num_candidates} candidates (field: metadata.answers)")
    if len(set(answers)) != len(answers):
        twice = next(a for a in answers if answers.count(a) > 1)
        raise ValueError(f"{where}: answer {twice!r} is listed twice in its answer list (field: metadata.answers)")
    known = set(str(a) for a in train_answers)
    foreign = [a for a in answers if a not in known]
    if foreign:
        raise ValueError(f"{where}: {len(foreign)} answer(s) of its answer list never occur in {train_file}, e.g. "
                         f"{foreign[0]!r}: the priors were extracted over another dataset's or split's answers "
                         f"(re-extract with --answers-from {train_file}) (field: metadata.answers)")
    return list(answers)


__all__ = ["RULES", "train_answer_set", "store_answer_set"]
