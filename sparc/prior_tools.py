"""Statistics on teacher priors: how many frames each selection threshold keeps.

Pure functions behind ``sparc priors-stats`` and ``sparc viz-priors``:

* :func:`load_answers` reads a small JSON or CSV file mapping qid -> answer index (plus optional
  fields such as a question ``type``);
* :func:`check_answers` validates it against a :class:`~sparc.priors.PriorStore` (errors name the
  qid and the field);
* :func:`prior_stats` computes, per threshold, overall and per group (``--by FIELD``):
  ``kept_fraction`` (kept frames / valid frames, pooled over questions), ``mean_kept`` (mean kept
  frames per question) and ``empty_rate`` (fraction of questions with no frame above the
  threshold);
* :func:`format_table` renders the result as text.

A frame is kept exactly as :func:`sparc.select_causal_frames` keeps it with ``empty="skip"``:
``P[t, answer] > threshold`` over the valid (unpadded) frames, so these numbers are what training
sees before any empty-set fallback.

Answers files:

* JSON ``{"q1": 2, "q2": 0}`` or ``{"q1": {"answer": 2, "type": "what"}, ...}`` or a list of
  records ``[{"qid": "q1", "answer": 2, "type": "what"}, ...]``;
* CSV with a header row containing ``qid`` and ``answer`` (other columns become fields).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["AnswerRecord", "load_answers", "answers_from_questions", "check_answers", "answer_probs", "prior_stats", "format_table",
           "ALL_GROUP", "DEFAULT_THRESHOLDS"]

DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)
ALL_GROUP = "(all)"
_CHUNK = 4096  # qids looked up per store read


@dataclass(frozen=True)
class AnswerRecord:
    """One question of an answers file: its correct candidate index and any extra fields."""

    qid: str
    answer: int
    fields: Dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------
# answers files


def _parse_answer(qid: str, value: Any, source: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"qid {qid!r}: answer {value!r} is not an integer index in {source} (field: answer)")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"qid {qid!r}: answer {value!r} is not an integer index in {source} (field: answer)")


def _norm_qid(qid: Any, source: str) -> str:
    if isinstance(qid, str) and qid != "":
        return qid
    if isinstance(qid, (int, np.integer)) and not isinstance(qid, bool):
        return str(int(qid))
    raise ValueError(f"qid {qid!r}: not a valid qid (a non-empty string or an int) in {source} (field: qid)")


def _record(qid: Any, answer: Any, extra: Mapping[str, Any], source: str) -> AnswerRecord:
    q = _norm_qid(qid, source)
    if answer is None:
        raise ValueError(f"qid {q!r}: no answer in {source} (field: answer)")
    fields = {str(k): ("" if v is None else str(v)) for k, v in extra.items()}
    return AnswerRecord(q, _parse_answer(q, answer, source), fields)


def answers_from_questions(path: "str | os.PathLike[str]", store=None) -> Dict[str, AnswerRecord]:
    """``{qid: AnswerRecord}`` from a question annotation file (what ``extract-priors`` read: NExT-QA
    CSV, TGIF-QA TSV, TVQA+ JSON, JSONL records), so the prior tools run on an extracted store without
    a separate answers file. Open-ended answers index the store's answer set (``metadata["answers"]``)."""
    from sparc.data.questions import read_questions, with_answer_set

    questions = read_questions(path)
    answers = (store.metadata.get("answers") if store is not None else None)
    if answers:
        questions = with_answer_set(questions, answers)
    out = {}
    for q in questions:
        fields = {"type": q.type} if q.type else {}
        fields["question"] = q.question
        out[q.qid] = AnswerRecord(q.qid, q.answer_index, fields)
    return out


def _is_question_file(path: str) -> bool:
    """An annotation file of questions (rather than a qid -> answer file)?"""
    lower = path.lower()
    if lower.endswith((".jsonl", ".tsv")):
        return True
    if lower.endswith(".csv"):
        with open(path, encoding="utf-8") as f:
            header = f.readline()
        return "video" in header or "gif_name" in header
    return False


def load_answers(path: "str | os.PathLike[str]", store=None) -> Dict[str, AnswerRecord]:
    """Read an answers file (JSON or CSV, by extension; anything else is tried as JSON).

    Returns ``{qid: AnswerRecord}`` in file order. Raises ``ValueError`` naming the qid and field
    for a duplicate qid, a missing or non-integer answer, or a malformed file. A question annotation
    file (JSONL, TSV, a CSV with a ``video`` column) is read by :func:`answers_from_questions`
    (``store`` gives open-ended questions their answer set).
    """
    path = os.fspath(path)
    if _is_question_file(path):
        return answers_from_questions(path, store)
    source = repr(path)
    records: List[AnswerRecord] = []
    if path.lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            for col in ("qid", "answer"):
                if col not in header:
                    raise ValueError(f"answers file {source}: CSV header {header} has no {col!r} column (field: {col})")
            for row in reader:
                extra = {k: v for k, v in row.items() if k not in ("qid", "answer") and k is not None}
                records.append(_record(row["qid"], row["answer"], extra, source))
    else:
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"answers file {source} is not valid JSON: {e}") from None
        if isinstance(data, dict):
            for qid, value in data.items():
                if isinstance(value, dict):
                    extra = {k: v for k, v in value.items() if k not in ("answer", "qid")}
                    records.append(_record(qid, value.get("answer"), extra, source))
                else:
                    records.append(_record(qid, value, {}, source))
        elif isinstance(data, list):
            for i, item in enumerate(data):
                if not isinstance(item, dict) or "qid" not in item:
                    raise ValueError(f"answers file {source}: item {i} is not a record with a 'qid' (field: qid)")
                extra = {k: v for k, v in item.items() if k not in ("answer", "qid")}
                records.append(_record(item["qid"], item.get("answer"), extra, source))
        else:
            raise ValueError(f"answers file {source}: expected a JSON object or list, got {type(data).__name__}")
    out: Dict[str, AnswerRecord] = {}
    for r in records:
        if r.qid in out:
            raise ValueError(f"qid {r.qid!r}: appears twice in answers file {source} (field: qid)")
        out[r.qid] = r
    return out


def check_answers(store, answers: Mapping[str, AnswerRecord], by: Optional[str] = None) -> None:
    """Every answers qid must be in ``store`` with an answer index in ``[0, num_candidates)`` and,
    if ``by`` is given, have that field. Raises ``ValueError`` naming the first offending qid."""
    C = store.num_candidates
    missing = [q for q in answers if q not in store]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"qid {missing[0]!r}: in the answers file but not in prior store {store.path!r}{more} "
                         f"(field: qid)")
    for r in answers.values():
        if not 0 <= r.answer < C:
            raise ValueError(f"qid {r.qid!r}: answer index {r.answer} is out of range for {C} candidates "
                             f"(field: answer)")
        if by is not None and by not in r.fields:
            raise ValueError(f"qid {r.qid!r}: has no {by!r} field to group by (field: {by})")


# --------------------------------------------------------------------------
# statistics


def answer_probs(store, records: Sequence[AnswerRecord]):
    """``(p, lengths)``: ``p [N, T]`` float32 with ``p[n, t] = P[t, answer_n]`` for ``records`` (in order)
    and ``lengths [N]`` valid frames. Reads the store in chunks."""
    T = store.num_frames
    p = np.zeros((len(records), T), dtype=np.float32)
    lengths = np.zeros(len(records), dtype=np.int64)
    for start in range(0, len(records), _CHUNK):
        chunk = records[start:start + _CHUNK]
        probs, lens = store.lookup([r.qid for r in chunk], return_lengths=True)
        probs = probs.numpy()
        ans = np.array([r.answer for r in chunk], dtype=np.int64)
        p[start:start + len(chunk)] = probs[np.arange(len(chunk)), :, ans]
        lengths[start:start + len(chunk)] = lens.numpy()
    return p, lengths


def _summary(kept: np.ndarray, valid: np.ndarray) -> Dict[str, Any]:
    n = int(kept.shape[0])
    per_q = kept.sum(axis=1)
    frames = int(valid.sum())
    kept_total = int(per_q.sum())
    return {
        "questions": n,
        "frames": frames,
        "kept_frames": kept_total,
        "kept_fraction": kept_total / frames if frames else float("nan"),
        "mean_kept": float(per_q.mean()) if n else float("nan"),
        "empty": int((per_q == 0).sum()),
        "empty_rate": float((per_q == 0).mean()) if n else float("nan"),
    }


def prior_stats(store, answers: Mapping[str, AnswerRecord], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                by: Optional[str] = None) -> Dict[str, Any]:
    """Selection statistics for every threshold, overall and per value of field ``by``.

    Returns a JSON-ready dict: ``{"store", "num_questions", "num_frames", "num_candidates",
    "thresholds", "by", "rows"}``, where ``rows`` lists, threshold by threshold, the overall row
    (``group == ALL_GROUP``) and then one row per group (sorted), each with ``threshold``,
    ``group``, ``questions``, ``frames`` (valid frames), ``kept_frames``, ``kept_fraction``,
    ``mean_kept``, ``empty`` and ``empty_rate``.
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("at least one threshold is needed (field: thresholds)")
    if not answers:
        raise ValueError("the answers file lists no questions (field: qid)")
    check_answers(store, answers, by)
    records = list(answers.values())
    p, lengths = answer_probs(store, records)
    valid = np.arange(store.num_frames)[None, :] < lengths[:, None]
    groups: Dict[str, np.ndarray] = {}
    if by is not None:
        keys = np.array([r.fields[by] for r in records], dtype=object)
        for g in sorted(set(keys.tolist())):
            groups[g] = keys == g
    rows = []
    for t in thresholds:
        kept = (p > t) & valid
        rows.append({"threshold": t, "group": ALL_GROUP, **_summary(kept, valid)})
        for g, mask in groups.items():
            rows.append({"threshold": t, "group": g, **_summary(kept[mask], valid[mask])})
    return {
        "store": store.path,
        "num_questions": len(records),
        "num_frames": store.num_frames,
        "num_candidates": store.num_candidates,
        "thresholds": thresholds,
        "by": by,
        "rows": rows,
    }


def format_table(stats: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`prior_stats`' rows."""
    by = stats.get("by")
    head = ["threshold", by or "group", "questions", "kept %", "mean kept", "empty %"]
    body = []
    for r in stats["rows"]:
        body.append([f"{r['threshold']:g}", str(r["group"]), str(r["questions"]), f"{100 * r['kept_fraction']:.1f}",
                     f"{r['mean_kept']:.2f}", f"{100 * r['empty_rate']:.1f}"])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    title = (f"{stats['store']}: {stats['num_questions']} questions x {stats['num_frames']} frames, "
             f"{stats['num_candidates']} candidates; kept = P[t, answer] > threshold")
    out = [title, line(head), line(["-" * w for w in widths])]
    prev = None
    for r, cells in zip(stats["rows"], body):
        if prev is not None and r["threshold"] != prev:
            out.append("")
        prev = r["threshold"]
        out.append(line(cells))
    return "\n".join(out)
