"""The answer set of an open-ended benchmark (TGIF-QA FrameQA, MSVD-QA, MSRVTT-QA, AGQA 2.0): the
classes the model's head scores, in the order of its outputs.

Two sources, one rule between them:

- **A prior store.** An open-ended store records the answer set its teacher scored (``sparc
  extract-priors --answers-from``: the store's metadata ``"answers"``); prior ``[t, c]`` is answer ``c``
  of that list. A run with these priors must score exactly that list, in that order, or the
  teacher's distribution lands on the wrong classes. :func:`store_answer_set` reads and checks it.
- **A protocol over the train answers**, for a run without a store (:func:`train_answer_set`):
  ``"top"`` the ``size`` most frequent (Xu et al.'s ``create_answerset``, 1000 for MSVD-QA and
  MSRVTT-QA), ``"all"`` every distinct train answer (HCRN's FrameQA vocabulary), ``"sparc"`` the
  answers seen at least ``min_count`` times (2: what ``sparc extract-priors --answers-from`` writes,
  SpARC 3.1), so a run without priors can use the set a run with them gets; ``"vocab"`` a released
  answer vocabulary file (MIST's ``vocab.json`` for AGQA 2.0, ``{answer: index}`` or a list).

The train answers come as a sequence or, from a split too large to list (AGQA 2.0's 1.6M), as a
``Counter`` built in file order (so its key order is the order of first appearance).

Ordering: "top" and "all" most frequent first, ties by first appearance in train; "sparc" as
:func:`sparc.data.questions.open_answer_set` orders it (ties alphabetical). A question whose answer is
outside the set has class -1 (:func:`sparc.data.words.answer_index`): train drops it, evaluation
counts it wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Union

RULES = ("top", "all", "sparc", "vocab")
Answers = Union[Sequence[str], Counter]


def _counts(train_answers: Answers) -> Counter:
    return train_answers if isinstance(train_answers, Counter) else Counter(str(a) for a in train_answers)


def read_answer_vocabulary(path) -> List[str]:
    """A released answer vocabulary: ``{answer: index}`` in index order (indices 0..K-1, each once), or a list."""
    from sparc.data.words import answer_index

    path = Path(path)
    with open(path) as f:
        vocab = json.load(f)
    if isinstance(vocab, dict):
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"{path}: the answer indices must be 0..{len(vocab) - 1}, each once (field: answer_set.vocab)")
        vocab = sorted(vocab, key=vocab.get)
    if not isinstance(vocab, list) or not vocab or not all(isinstance(a, str) for a in vocab):
        raise ValueError(f"{path}: expected {{answer: index}} or a list of answers (field: answer_set.vocab)")
    answer_index(vocab)   # each answer once
    return list(vocab)


def train_answer_set(train_answers: Answers, rule: str = "top", size: int = 1000, min_count: int = 2,
                     vocab: Optional[str] = None) -> List[str]:
    """The answer set ``rule`` gives over the train split's answers (see the module docstring)."""
    from sparc.data.questions import answers_by_count

    if rule == "vocab":
        if vocab is None:
            raise ValueError("answer set rule 'vocab' needs vocab= (the vocabulary file) (field: answer_set.vocab)")
        return read_answer_vocabulary(vocab)
    counts = _counts(train_answers)
    if not counts:
        raise ValueError("the train split has no answers to build an answer set from")
    first = {a: i for i, a in enumerate(counts)}            # a Counter keeps first-appearance order
    by_frequency = sorted(counts, key=lambda a: (-counts[a], first[a]))
    if rule == "top":
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size} (field: answer_set.size)")
        return by_frequency[:size]
    if rule == "all":
        return by_frequency
    if rule == "sparc":
        found = list(answers_by_count(counts, min_count))
        if not found:
            raise ValueError(f"no train answer occurs {min_count} times (field: answer_set.min_count)")
        return found
    raise ValueError(f"answer set rule must be one of {RULES}, got {rule!r} (field: answer_set.rule)")


def answer_set_from_config(train_answers: Answers, spec: dict) -> List[str]:
    """:func:`train_answer_set` from a recipe configuration's ``{"rule": ..., <its parameters>}``."""
    spec = dict(spec)
    if "rule" not in spec:
        raise ValueError(f"answer_set needs a 'rule' (one of {RULES}), got {spec!r} (field: answer_set.rule)")
    rule = spec.pop("rule")
    unknown = set(spec) - {"size", "min_count", "vocab"}
    if unknown:
        raise ValueError(f"answer_set: unknown parameter {sorted(unknown)[0]!r} for rule {rule!r} (field: answer_set)")
    return train_answer_set(train_answers, rule, **spec)


def store_answer_set(store, train_answers: Answers, train_file: str = "the train split",
                     expected: Optional[Sequence[str]] = None) -> List[str]:
    """The answer list an open-ended prior store was extracted over (metadata ``"answers"``), checked
    against the store and the train split: one entry per candidate of the store, each once, each an
    answer of ``train_file`` (a list from another dataset or split fails here, not as wrong priors);
    with ``expected`` (the configured rule's set), the same answers as it, in the store's order."""
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
    known = _counts(train_answers)
    foreign = [a for a in answers if a not in known]
    if foreign:
        raise ValueError(f"{where}: {len(foreign)} answer(s) of its answer list never occur in {train_file}, e.g. "
                         f"{foreign[0]!r}: the priors were extracted over another dataset's or split's answers "
                         f"(re-extract with --answers-from {train_file}) (field: metadata.answers)")
    if expected is not None and set(answers) != set(expected):
        extra, lacking = sorted(set(answers) - set(expected)), sorted(set(expected) - set(answers))
        example = f"{extra[0]!r} is in the store only" if extra else f"{lacking[0]!r} is missing from the store"
        raise ValueError(f"{where}: its {len(answers)} answers are not the configured answer set over {train_file} "
                         f"({len(expected)} answers; {example}); extract the priors with the same rule "
                         f"(--answers-from {train_file} --min-answer-count N) or configure answer_set to match "
                         f"(field: metadata.answers)")
    return list(answers)


__all__ = ["RULES", "train_answer_set", "answer_set_from_config", "store_answer_set", "read_answer_vocabulary"]
