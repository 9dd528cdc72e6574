"""``sparc diagnose-misfocus``: does a frame selection follow the question? (SpARC 4.1.1)

SpARC's pilot takes the questions that contain "before" or "after", swaps the two words, and counts how
often the selected causal frames stay identical: a selection that reads the question must move when its
temporal emphasis flips; IGV's stayed put for 74.87% of AGQA2.0's questions, the paper's evidence of
*misfocus*.

Layering: pure functions at the bottom, thin drivers on top.

* :func:`swap_before_after` - the edit (whole words, case preserved, both directions in one pass);
* :func:`selection_from_scores` - frames selected from any per-frame score ``[N, T]`` (a video model's
  frame attention, ``P[t, answer]``, ...) by ``top_k`` or ``threshold``;
* :func:`misfocus_summary` - identical-selection rate and mean Jaccard overlap, overall and per group;
* :func:`attention_misfocus` - the two above for a model exposing frame attention: per-frame scores under
  the original and the swapped questions in, summary out;
* :func:`teacher_misfocus` - the image-QA teacher's selection (:func:`sparc.select_causal_frames` on
  ``P[t, correct answer]``), each video's frames encoded once, original and swapped questions scored in
  one call;
* :func:`store_misfocus` - the same selection read from two :class:`~sparc.priors.PriorStore` s, one
  extracted from the original questions and one from the swapped ones (keyed by the same qids);
* :func:`synthetic_misfocus` - the embedded synthetic benchmark with the demo's teacher (see below).

``sparc diagnose-misfocus`` (:mod:`sparc.cli.misfocus`) runs the drivers.

Conventions, where the paper is silent:

* **Selection.** The teacher's causal frames are exactly what training uses:
  ``P[t, a] > threshold`` (strictly, as :func:`sparc.select_causal_frames`), with its ``empty`` policy
  for a question where no frame passes (default ``"all"``: the whole video, as training falls back to).
  The swapped question keeps the original question's correct-answer index: its own answer is unknown,
  and the diagnostic asks whether the selection *moves*, not whether it is right. ``top_k`` selects
  the k frames with the highest ``P[t, a]`` instead (IGV-style hard selection).
* **Identity.** Two selections are identical when they keep exactly the same frames. Two empty
  selections are identical (the same set: none); an empty and a non-empty one are not. The Jaccard
  overlap is ``|A ∩ B| / |A ∪ B|``, defined as 1 when both are empty.
* **Synthetic mode.** The synthetic questions are "what does <subject> do?" and "what does <subject> do
  first / in the end?" (token ids). Two edits: ``order`` is the paper's before/after swap in the
  benchmark's words, "first" <-> "in the end", on the temporal questions only (the true causal frames
  move from the subject's first frames to its last ones); ``subject`` replaces the asked subject by the
  video's other one (``subject_i -> subject_{(i+1) mod S}``), on every question. A focused selection
  must move (the edited question's true causal frames always differ: the reference row); a misfocused
  one keeps it. A frame model cannot tell first from last, so under ``order`` it cannot move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from sparc.teachers.synthetic import FINETUNE_EPOCHS, FINETUNE_LR, PRETRAIN_EPOCHS

__all__ = [
    "swap_before_after", "selection_from_scores", "misfocus_summary", "attention_misfocus",
    "teacher_misfocus", "store_misfocus", "synthetic_misfocus", "SyntheticSettings", "swap_order_tokens",
    "format_misfocus_table",
    "BEFORE_AFTER_EDIT", "SUBJECT_EDIT", "ORDER_EDIT", "SYNTHETIC_EDITS", "ALL_GROUP",
]

ALL_GROUP = "(all)"
BEFORE_AFTER_EDIT = "'before' <-> 'after' (whole words, SpARC 4.1.1)"
SUBJECT_EDIT = "asked subject -> the video's other subject (subject_i -> subject_(i+1 mod S)), every question"
ORDER_EDIT = ("'first' <-> 'last' (\"what does s do first / in the end?\"), the temporal questions only: "
              "the benchmark's before/after (SpARC 4.1.1)")
SYNTHETIC_EDITS = ("order", "subject")

_WORD = re.compile(r"\b(before|after)\b", re.IGNORECASE)
_SWAP = {"before": "after", "after": "before"}


# ==== pure functions ================================================================================


def _match_case(template: str, word: str) -> str:
    if template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_before_after(text: str) -> Optional[str]:
    """``text`` with every whole word "before" and "after" swapped in one pass ("before ... after"
    becomes "after ... before"), keeping each word's case (``Before`` -> ``After``, ``AFTER`` ->
    ``BEFORE``); words that merely contain them ("beforehand", "afterwards") are left alone.
    ``None`` when neither word occurs."""
    if not _WORD.search(text):
        return None
    return _WORD.sub(lambda m: _match_case(m.group(0), _SWAP[m.group(0).lower()]), text)


def _as_tensor(x, dtype=None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def selection_from_scores(scores, top_k: Optional[int] = None, threshold: Optional[float] = None,
                          lengths=None) -> torch.Tensor:
    """Frames selected from per-frame scores ``[N, T]`` (attention weights, ``P[t, answer]``, ...) ->
    bool ``[N, T]``.

    Exactly one of ``top_k`` (the k valid frames with the highest score, ties to the earlier frame,
    all valid frames when a video has fewer than k) or ``threshold`` (``score > threshold``, strictly,
    as :func:`sparc.select_causal_frames`; may select nothing) must be given. ``lengths [N]``: frames
    at or beyond a video's length are padding and never selected.
    """
    if (top_k is None) == (threshold is None):
        raise ValueError("give exactly one of top_k and threshold")
    scores = _as_tensor(scores).float()
    if scores.dim() != 2:
        raise ValueError(f"scores must be [N, T], got shape {tuple(scores.shape)}")
    N, T = scores.shape
    if lengths is None:
        valid = torch.ones(N, T, dtype=torch.bool)
    else:
        lengths = _as_tensor(lengths).long().reshape(-1)
        if lengths.shape[0] != N:
            raise ValueError(f"lengths must be [N] = [{N}], got shape {tuple(lengths.shape)}")
        valid = torch.arange(T)[None, :] < lengths[:, None]
    if threshold is not None:
        return (scores > float(threshold)) & valid
    k = int(top_k)
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    masked = scores.masked_fill(~valid, float("-inf"))
    order = torch.argsort(-masked, dim=1, stable=True)[:, :min(k, T)]
    return torch.zeros(N, T, dtype=torch.bool).scatter_(1, order, True) & valid


def _row(orig: np.ndarray, swap: np.ndarray) -> Dict[str, Any]:
    n = int(orig.shape[0])
    identical = (orig == swap).all(axis=1)
    jaccard = _jaccard(orig, swap)
    return {
        "questions": n,
        "identical": int(identical.sum()),
        "identical_rate": float(identical.mean()),
        "mean_jaccard": float(jaccard.mean()),
        "mean_kept_original": float(orig.sum(axis=1).mean()),
        "mean_kept_swapped": float(swap.sum(axis=1).mean()),
        "empty_original": int((orig.sum(axis=1) == 0).sum()),
        "empty_swapped": int((swap.sum(axis=1) == 0).sum()),
    }


def _jaccard(orig: np.ndarray, swap: np.ndarray) -> np.ndarray:
    inter, union = (orig & swap).sum(axis=1), (orig | swap).sum(axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def misfocus_summary(original_sel, swapped_sel, groups: Optional[Sequence[Any]] = None) -> Dict[str, Any]:
    """How often two selections ``[N, T]`` (bool: the original and the edited questions) are identical.

    Returns ``{"questions", "identical", "identical_rate", "mean_jaccard", "mean_kept_original",
    "mean_kept_swapped", "empty_original", "empty_swapped", "groups"}``; ``groups`` maps each label of
    ``groups`` (one per question, sorted by ``str``) to the same numbers for its questions (``{}`` without
    ``groups``). Identity: same kept frames; two empty selections are identical. Jaccard
    ``|A ∩ B| / |A ∪ B|``, 1 when both are empty.
    """
    orig = _as_tensor(original_sel).bool().numpy()
    swap = _as_tensor(swapped_sel).bool().numpy()
    if orig.ndim != 2 or orig.shape != swap.shape:
        raise ValueError(f"selections must be two [N, T] masks of one shape, got {orig.shape} and {swap.shape}")
    if orig.shape[0] == 0:
        raise ValueError("no questions to compare")
    out = _row(orig, swap)
    out["groups"] = {}
    if groups is not None:
        labels = list(groups)
        if len(labels) != orig.shape[0]:
            raise ValueError(f"groups must give one label per question: {len(labels)} labels for {orig.shape[0]} "
                             "questions")
        keys = np.array([str(g) for g in labels], dtype=object)
        for g in sorted(set(keys.tolist())):
            mask = keys == g
            out["groups"][g] = _row(orig[mask], swap[mask])
    return out


def attention_misfocus(original_scores, swapped_scores, top_k: Optional[int] = None,
                       threshold: Optional[float] = None, lengths=None,
                       groups: Optional[Sequence[Any]] = None) -> Dict[str, Any]:
    """The diagnostic for any model exposing frame attention: per-frame scores ``[N, T]`` under the
    original and the swapped questions, frames selected by ``top_k`` or ``threshold``
    (:func:`selection_from_scores`), summarised by :func:`misfocus_summary`."""
    a = selection_from_scores(original_scores, top_k=top_k, threshold=threshold, lengths=lengths)
    b = selection_from_scores(swapped_scores, top_k=top_k, threshold=threshold, lengths=lengths)
    return misfocus_summary(a, b, groups)


# ==== drivers =======================================================================================


def _select(probs: torch.Tensor, answer: torch.Tensor, threshold: float, empty: str, top_k: Optional[int],
            lengths=None) -> torch.Tensor:
    from sparc.frames import select_causal_frames, top_k_frames

    if top_k is not None:
        return top_k_frames(probs, answer, int(top_k), lengths=lengths)
    return select_causal_frames(probs, answer, threshold, empty=empty, lengths=lengths)


def _group_label(q, by: str) -> Optional[str]:
    value = getattr(q, by, None) if by in ("type", "video") else None
    if value is None:
        value = q.fields.get(by)
    return None if value is None or str(value) == "" else str(value)


def _groups(questions: Sequence, by: Optional[str]) -> Optional[List[str]]:
    if by is None:
        return None
    labels = []
    for q in questions:
        label = _group_label(q, by)
        if label is None:
            raise ValueError(f"qid {q.qid!r}: has no {by!r} to group by (field: {by})")
        labels.append(label)
    return labels


def default_group(questions: Sequence) -> Optional[str]:
    """``"type"`` when every question has a type, else ``None``."""
    return "type" if questions and all(q.type not in (None, "") for q in questions) else None


def _swappable(questions: Sequence):
    pairs = [(q, swap_before_after(q.question)) for q in questions]
    kept = [(q, s) for q, s in pairs if s is not None]
    if not kept:
        raise ValueError(f"none of the {len(questions)} questions contains 'before' or 'after' (field: question)")
    return kept


def _result(mode: str, edit: str, questions: Sequence, orig: torch.Tensor, swap: torch.Tensor, *, by, skipped: int,
            settings: Dict[str, Any], texts: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    summary = misfocus_summary(orig, swap, _groups(questions, by))
    o, s = orig.numpy(), swap.numpy()
    identical, jac = (o == s).all(axis=1), _jaccard(o, s)
    per_q = []
    for i, q in enumerate(questions):
        rec = {"qid": q.qid, "original": np.flatnonzero(o[i]).tolist(), "swapped": np.flatnonzero(s[i]).tolist(),
               "identical": bool(identical[i]), "jaccard": float(jac[i])}
        if texts is not None:
            rec["question"], rec["swapped_question"] = q.question, texts[i]
        if by is not None:
            rec[by] = _group_label(q, by)
        per_q.append(rec)
    return {"mode": mode, "edit": edit, **settings, "by": by, "skipped": skipped, **summary, "per_question": per_q}


def _check_selection_args(threshold: float, empty: str, top_k: Optional[int]) -> None:
    from sparc.frames import EMPTY_POLICIES

    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    if top_k is not None and int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


@torch.no_grad()
def teacher_misfocus(teacher, frame_source, questions: Sequence, threshold: float = 0.5, empty: str = "all",
                     top_k: Optional[int] = None, by: Optional[str] = None, progress: bool = False) -> Dict[str, Any]:
    """The teacher's causal frames for each question with "before"/"after" and for its swapped text.

    ``teacher``: an :class:`~sparc.teachers.base.ImageQATeacher` taking question strings;
    ``frame_source``: anything with ``frames_for(video_id)`` (a :class:`~sparc.data.frames.FrameSource`);
    ``questions``: :class:`~sparc.data.questions.VideoQuestion` s with candidates (the others are skipped
    and counted in ``skipped``). Per video the frames are encoded once and the original and swapped
    questions are scored in one call; frames are selected on ``P[t, correct answer]`` (see the module
    docstring). ``by``: a question field to group by (``"type"``). Returns :func:`misfocus_summary`'s dict
    plus ``mode``, ``edit``, the settings, ``skipped`` and ``per_question`` records.
    """
    from sparc.data.questions import group_by_video
    from tqdm.auto import tqdm

    _check_selection_args(threshold, empty, top_k)
    pairs = _swappable(questions)
    swapped_text = {q.qid: s for q, s in pairs}
    chosen = [q for q, _ in pairs]
    _groups(chosen, by)  # fail before any teacher work
    orig_rows, swap_rows = {}, {}
    for video, qs in tqdm(group_by_video(chosen).items(), desc="videos", disable=not progress, leave=False):
        answers = torch.tensor([q.answer_index for q in qs])
        for q in qs:
            if q.candidates is None:
                raise ValueError(f"qid {q.qid!r}: open-ended question without an answer set (field: candidates)")
        state = teacher.encode_images(frame_source.frames_for(video))
        texts = [q.question for q in qs] + [swapped_text[q.qid] for q in qs]
        cands = [list(q.candidates) for q in qs] * 2
        probs = torch.as_tensor(teacher.score(state, texts, cands)).float().cpu()
        if probs.dim() != 3 or probs.shape[0] != 2 * len(qs):
            raise ValueError(f"video {video!r}: teacher.score returned shape {tuple(probs.shape)}, expected "
                             f"[{2 * len(qs)}, frames, candidates]")
        a = _select(probs[:len(qs)], answers, threshold, empty, top_k)
        b = _select(probs[len(qs):], answers, threshold, empty, top_k)
        for i, q in enumerate(qs):
            orig_rows[q.qid], swap_rows[q.qid] = a[i], b[i]
    T = {row.shape[0] for row in orig_rows.values()}
    if len(T) > 1:
        raise ValueError(f"videos gave different frame counts {sorted(T)}; give the frame source a fixed num_frames")
    orig = torch.stack([orig_rows[q.qid] for q in chosen])
    swap = torch.stack([swap_rows[q.qid] for q in chosen])
    settings = {"threshold": threshold, "empty": empty, "top_k": top_k, "num_frames": int(orig.shape[1])}
    return _result("teacher", BEFORE_AFTER_EDIT, chosen, orig, swap, by=by, skipped=len(questions) - len(chosen),
                   settings=settings, texts=[swapped_text[q.qid] for q in chosen])


def store_misfocus(store, swapped_store, questions: Sequence, threshold: float = 0.5, empty: str = "all",
                   top_k: Optional[int] = None, by: Optional[str] = None) -> Dict[str, Any]:
    """The teacher's causal frames read from two prior stores: ``store`` extracted from the original
    questions, ``swapped_store`` from their before/after-swapped texts under the same qids. Compared:
    the questions of ``questions`` whose text contains "before" or "after" (the others are counted in
    ``skipped``); each must be in both stores (else ``KeyError`` naming the qid, the store and the field)."""
    _check_selection_args(threshold, empty, top_k)
    chosen = [q for q, _ in _swappable(questions)]
    _groups(chosen, by)
    for name, st in (("store", store), ("swapped store", swapped_store)):
        for q in chosen:
            if q.qid not in st:
                raise KeyError(f"qid {q.qid!r}: not in {name} {st.path!r} (field: qid)")
    for field in ("num_frames", "num_candidates"):
        if getattr(store, field) != getattr(swapped_store, field):
            raise ValueError(f"the stores disagree on {field}: {getattr(store, field)} in {store.path!r}, "
                             f"{getattr(swapped_store, field)} in {swapped_store.path!r} (field: {field})")
    C = store.num_candidates
    for q in chosen:
        if q.candidates is not None and len(q.candidates) != C:
            raise ValueError(f"qid {q.qid!r}: {len(q.candidates)} candidates, the stores hold {C} (field: candidates)")
        if not 0 <= q.answer_index < C:
            raise ValueError(f"qid {q.qid!r}: answer index {q.answer_index} is out of range for {C} candidates "
                             "(field: answer)")
    qids = [q.qid for q in chosen]
    answers = torch.tensor([q.answer_index for q in chosen])
    orig_rows, swap_rows = [], []
    for start in range(0, len(qids), 4096):
        part = slice(start, start + 4096)
        p, len_a = store.lookup(qids[part], return_lengths=True)
        s, len_b = swapped_store.lookup(qids[part], return_lengths=True)
        differ = torch.nonzero(len_a != len_b)
        if differ.numel():
            i = int(differ[0])
            raise ValueError(f"qid {qids[part][i]!r}: {int(len_a[i])} frames in {store.path!r} but {int(len_b[i])} in "
                             f"{swapped_store.path!r} (field: lengths)")
        orig_rows.append(_select(p, answers[part], threshold, empty, top_k, lengths=len_a))
        swap_rows.append(_select(s, answers[part], threshold, empty, top_k, lengths=len_b))
    settings = {"threshold": threshold, "empty": empty, "top_k": top_k, "num_frames": store.num_frames,
                "store": store.path, "swapped_store": swapped_store.path}
    return _result("stores", BEFORE_AFTER_EDIT, chosen, torch.cat(orig_rows), torch.cat(swap_rows), by=by,
                   skipped=len(questions) - len(chosen), settings=settings)


def swap_subject_tokens(bench, tokens: torch.Tensor) -> torch.Tensor:
    """Synthetic question tokens ``[..., L]`` with the asked subject ``subject_i`` replaced by
    ``subject_{(i+1) mod S}`` (every subject token in them; the other tokens unchanged)."""
    first, S = bench.token("subject0"), bench.config.num_subjects
    is_subject = (tokens >= first) & (tokens < first + S)
    return torch.where(is_subject, first + (tokens - first + 1) % S, tokens)


def swap_order_tokens(bench, tokens: torch.Tensor) -> torch.Tensor:
    """Synthetic question tokens ``[..., L]`` with "first" and "last" swapped (the other tokens unchanged)."""
    first, last = bench.token("first"), bench.token("last")
    return torch.where(tokens == first, last, torch.where(tokens == last, first, tokens))


@dataclass(frozen=True)
class SyntheticSettings:
    """The benchmark sizes and the teacher's budget of :func:`synthetic_misfocus` (the fields of
    :class:`sparc.demo.DemoSettings` it reads, so a DemoSettings serves as well)."""

    teacher_size: int = 2000
    train_size: int = 2048
    test_size: int = 500
    threshold: float = 0.5
    teacher_pretrain_epochs: int = PRETRAIN_EPOCHS
    teacher_epochs: int = FINETUNE_EPOCHS
    teacher_lr: float = FINETUNE_LR


def synthetic_misfocus(settings=None, split: str = "test", threshold: Optional[float] = None, empty: str = "all",
                       top_k: Optional[int] = None, limit: Optional[int] = None, log=None,
                       edit: str = "order") -> Dict[str, Any]:
    """The diagnostic on the embedded synthetic benchmark with the demo's teacher.

    The teacher is :class:`~sparc.teachers.frame_qa.FrameQATeacher` trained as the demo trains it
    (:func:`sparc.teachers.synthetic.train_synthetic_teacher`; ``settings``: a :class:`SyntheticSettings`
    or a :class:`~sparc.demo.DemoSettings`, default ``SyntheticSettings()``). ``edit``: ``"order"`` swaps "first" and "last" in the temporal questions
    (``ORDER_EDIT``; the others are not used), grouped by the original word; ``"subject"`` replaces the
    asked subject by the video's other one in every question (``SUBJECT_EDIT``), grouped by subject. The
    edited questions' teacher inputs are the edited token ids through ``bench.qa_features``, the
    candidates unchanged, selection on ``P[t, original answer]`` (as for real questions, which have no
    label for the edit). ``split``'s first ``limit`` questions (of those the edit applies to);
    ``reference`` holds the same summary for the true causal frames of the original and the edited
    question, which always differ: the frames where the asked (or the other) subject does the answer,
    or under ``order`` where the subject does its other action.
    """
    from sparc.data.synthetic import QUESTION_LENGTH, SyntheticBenchmark, SyntheticConfig
    from sparc.teachers.synthetic import teacher_frames, train_synthetic_teacher

    log = log or (lambda *_: None)
    settings = settings or SyntheticSettings()
    threshold = settings.threshold if threshold is None else float(threshold)
    _check_selection_args(threshold, empty, top_k)
    sizes = {"teacher": settings.teacher_size, split: settings.test_size if split == "test" else settings.train_size}
    bench = SyntheticBenchmark(SyntheticConfig(sizes=sizes))
    teacher = train_synthetic_teacher(bench, settings.teacher_pretrain_epochs, settings.teacher_epochs,
                                      settings.teacher_lr, log)
    data = bench.splits[split]
    if edit not in SYNTHETIC_EDITS:
        raise ValueError(f"edit must be one of {SYNTHETIC_EDITS}, got {edit!r}")
    rows = np.flatnonzero(data.temporal) if edit == "order" else np.arange(len(data))
    rows = rows if limit is None else rows[:int(limit)]
    n = len(rows)
    tokens = torch.from_numpy(data.qa_tokens[rows, 0, :QUESTION_LENGTH])
    questions = bench.qa_features(tokens)
    edited = swap_order_tokens(bench, tokens) if edit == "order" else swap_subject_tokens(bench, tokens)
    swapped = bench.qa_features(edited)
    candidates = bench.qa_features(torch.from_numpy(data.qa_tokens[rows, :, QUESTION_LENGTH:QUESTION_LENGTH + 1])).squeeze(-2)
    frames = teacher_frames(data)[torch.from_numpy(rows)]
    probs = []
    with torch.no_grad():
        for i in range(n):  # one video per question: encode its frames once, score both questions together
            state = teacher.encode_images(frames[i])
            probs.append(teacher.score(state, torch.cat([questions[i:i + 1], swapped[i:i + 1]]),
                                       candidates[i:i + 1].expand(2, -1, -1)))
    probs = torch.stack(probs)                                   # [n, 2, T, C]
    answer = torch.from_numpy(data.answer[rows])
    orig = _select(probs[:, 0], answer, threshold, empty, top_k)
    swap = _select(probs[:, 1], answer, threshold, empty, top_k)
    S = bench.config.num_subjects
    asked, truth = data.asked[rows], torch.from_numpy(data.causal[rows])
    subject_of = data.frame_subject[rows]                                     # [n, T, P]
    if edit == "order":
        from sparc.data.synthetic import QUESTION_TYPES

        labels = [QUESTION_TYPES[t] for t in data.qtype[rows]]
        # the edited question's causal frames: where the subject does its other action
        truth_edited = torch.from_numpy((subject_of == asked[:, None, None]).any(-1)) & ~truth
        edited_label = lambda i: {"first": "last", "last": "first"}[labels[i]]
        by, edit_text = "question word", ORDER_EDIT
    else:
        labels = [f"subject{a}" for a in asked]
        answer_action = data.candidates[rows, data.answer[rows]]
        other = (asked + 1) % S
        truth_edited = torch.from_numpy(((subject_of == other[:, None, None])
                                         & (data.frame_action[rows] == answer_action[:, None, None])).any(-1))
        edited_label = lambda i: f"subject{other[i]}"
        by, edit_text = "subject", SUBJECT_EDIT
    summary = misfocus_summary(orig, swap, labels)
    reference = misfocus_summary(truth, truth_edited)
    reference.pop("groups")
    o, s = orig.numpy(), swap.numpy()
    identical, jac = (o == s).all(axis=1), _jaccard(o, s)
    per_q = [{"qid": data.qids[r], "group": labels[i], "edited": edited_label(i),
              "original": np.flatnonzero(o[i]).tolist(), "swapped": np.flatnonzero(s[i]).tolist(),
              "identical": bool(identical[i]), "jaccard": float(jac[i])} for i, r in enumerate(rows)]
    return {"mode": "synthetic", "edit": edit_text, "threshold": threshold, "empty": empty, "top_k": top_k,
            "num_frames": bench.config.num_frames, "split": split, "by": by, "skipped": 0, **summary,
            "reference": reference, "per_question": per_q}


# ==== presentation ==================================================================================


def format_misfocus_table(result: Dict[str, Any]) -> str:
    """A plain-text table of a driver's result: overall and per group."""
    head = ["group" if not result.get("by") else str(result["by"]), "questions", "identical %", "mean Jaccard"]
    rows = [(ALL_GROUP, result)] + list(result.get("groups", {}).items())
    if result.get("reference"):
        rows.append(("ground truth", result["reference"]))
    body = [[str(g), str(r["questions"]), f"{100 * r['identical_rate']:.2f}", f"{r['mean_jaccard']:.3f}"]
            for g, r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    if result.get("top_k") is not None:
        how = f"top-{result['top_k']} frames by P[t, answer]"
    else:
        how = f"P[t, answer] > {result['threshold']:g} (empty: {result['empty']})"
    title = [f"misfocus ({result['mode']}): {result['questions']} questions x {result['num_frames']} frames; "
             f"selection {how}", f"edit: {result['edit']}"]
    if result.get("skipped"):
        title.append(f"skipped {result['skipped']} questions without 'before' or 'after'")
    out = title + [line(head), line(["-" * w for w in widths])]
    for (g, _), cells in zip(rows, body):
        if g == "ground truth":
            out.append(line(["-" * w for w in widths]))
        out.append(line(cells))
    if result.get("reference"):
        out.append("(ground truth: the true causal frames of the original and the swapped question)")
    return "\n".join(out)
