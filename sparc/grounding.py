"""How well selected frames ground a question in time: the teacher's causal frames (or a model's
attention) against human time spans, NExT-GQA's (Xiao et al., "Can I Trust Your Answer? Visually
Grounded Video Question Answering", CVPR 2024) or TVQA+'s.

NExT-GQA's ``gsub_{val,test}.json``: ``{video: {"duration": seconds, "fps": ..., "location": {qid:
[[start, end], ...]}}}`` for NExT-QA's causal and temporal val/test questions (key ``f"{video}_{qid}"``).

The metric is ``code/TempGQA/eval_ground.py``'s, on one predicted span per question. Against each
ground-truth segment it takes IoU = intersection / hull and IoP = intersection / predicted length (a
zero-length prediction scores IoU 0, and IoP 1 inside the segment). Per question it keeps the best
over the segments, starting from 0 (so a disjoint span's negative overlap counts as 0). It reports
mIoP, IoP@0.3, IoP@0.5, mIoU, IoU@0.3, IoU@0.5 and, with QA predictions, Acc@GQA (answer right and
IoP >= 0.5), all in percent.

Frames to a span: the T frames of a store stand for T equal segments of the video (the features
sample it uniformly: NExT-QA's 16 clips), so a selection covers ``[first * d / T, (last + 1) * d / T]``
for its first and last selected frame, the hull of the selection, as a span predictor would output.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def read_nextgqa(path: PathLike) -> Dict[str, dict]:
    """``{f"{video}_{qid}": {"duration": float, "spans": [[start, end], ...]}}`` from a gsub file."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for video, entry in data.items():
        for field in ("duration", "location"):
            if field not in entry:
                raise ValueError(f"{path}: video {video} has no {field!r} (field: {field})")
        for qid, spans in entry["location"].items():
            if not spans or any(len(s) != 2 for s in spans):
                raise ValueError(f"{path}: question {video}_{qid} has no [start, end] spans (field: location)")
            out[f"{video}_{qid}"] = {"duration": float(entry["duration"]), "spans": [[float(a), float(b)] for a, b in spans]}
    return out


def span_scores(truth, pred):
    """(IoU over the hull, IoP) of predicted span ``pred`` against one ground-truth segment ``truth``."""
    if pred[0] == pred[-1]:
        return 0.0, (1.0 if truth[0] <= pred[0] <= truth[1] else 0.0)
    hull = (min(truth[0], pred[0]), max(truth[-1], pred[-1]))
    inter = min(truth[-1], pred[-1]) - max(truth[0], pred[0])
    iou = inter / (hull[1] - hull[0]) if hull[1] > hull[0] else 0.0
    iop = inter / (pred[-1] - pred[0]) if pred[-1] > pred[0] else 0.0
    return iou, iop


def selection_span(keep: Sequence[bool], duration: float):
    """The span a frame selection covers: from its first selected frame's segment to its last's."""
    idx = np.flatnonzero(np.asarray(keep))
    if idx.size == 0:
        return None
    T = len(keep)
    return [float(idx[0] * duration / T), float((idx[-1] + 1) * duration / T)]


def temporal_grounding(pred_spans: Mapping[str, Sequence[float]], truth: Mapping[str, dict],
                       qa: Optional[Mapping[str, Mapping]] = None) -> Dict[str, float]:
    """The NExT-GQA grounding numbers (percent) of ``pred_spans`` ``{key: [start, end]}`` over the
    ground-truth questions that have a prediction (others are skipped, as the official script does).
    ``qa`` ``{key: {"prediction", "answer"}}`` adds Acc@GQA."""
    n = crt_p3 = crt_p5 = crt_u3 = crt_u5 = correct = 0
    total_iou = total_iop = 0.0
    for key, entry in truth.items():
        if key not in pred_spans:
            continue
        best_iou = best_iop = 0.0
        for segment in entry["spans"]:
            iou, iop = span_scores(segment, pred_spans[key])
            best_iou, best_iop = max(best_iou, iou), max(best_iop, iop)
        n += 1
        total_iou, total_iop = total_iou + best_iou, total_iop + best_iop
        crt_p3, crt_p5 = crt_p3 + (best_iop >= 0.3), crt_p5 + (best_iop >= 0.5)
        crt_u3, crt_u5 = crt_u3 + (best_iou >= 0.3), crt_u5 + (best_iou >= 0.5)
        if qa is not None and best_iop >= 0.5:
            correct += int(qa[key]["answer"] == qa[key]["prediction"])
    if n == 0:
        raise ValueError("no ground-truth question has a predicted span")
    result = {"questions": n, "mIoP": 100 * total_iop / n, "IoP@0.3": 100 * crt_p3 / n, "IoP@0.5": 100 * crt_p5 / n,
              "mIoU": 100 * total_iou / n, "IoU@0.3": 100 * crt_u3 / n, "IoU@0.5": 100 * crt_u5 / n}
    if qa is not None:
        result["Acc@GQA"] = 100 * correct / n
    return result


def score_grounding(scores: Mapping[str, np.ndarray], truth: Mapping[str, dict], thresholds: Sequence[float],
                    groups: Optional[Mapping[str, Sequence[str]]] = None) -> list:
    """Rows of grounding numbers, one per threshold and group, for per-frame scores ``{key: [T]}`` over a
    video's real frames: the frames scoring above the threshold are kept (none above it: the whole
    video, ``CausalFrames``' ``empty="all"``) and their hull is the predicted span. ``groups`` ``{name:
    keys}`` come after the group of every key."""
    from sparc.prior_tools import ALL_GROUP

    groups = {ALL_GROUP: list(scores), **(groups or {})}
    rows = []
    for t in thresholds:
        spans: Dict[str, list] = {}
        for key, frame_scores in scores.items():
            keep = np.asarray(frame_scores) > t
            if not keep.any():
                keep = np.ones(len(keep), dtype=bool)
            spans[key] = selection_span(keep, truth[key]["duration"])
        for g in [ALL_GROUP] + sorted(k for k in groups if k != ALL_GROUP):
            if g not in groups:
                continue
            chosen = {q: truth[q] for q in groups[g]}
            rows.append({"threshold": float(t), "group": g, **temporal_grounding(spans, chosen)})
    return rows


def prior_grounding(store, answers: Mapping[str, object], truth: Mapping[str, dict], thresholds: Sequence[float],
                    by: Optional[str] = None) -> Dict[str, object]:
    """For each threshold, the grounding of the frames ``CausalFrames(threshold, empty="all")`` keeps
    (what training selects), overall and per value of the answers' field ``by``, over the questions that
    are in the store, the answers file and the ground truth."""
    from sparc.prior_tools import ALL_GROUP, answer_probs

    records = [r for q, r in answers.items() if q in truth]
    if not records:
        raise ValueError("no question of the answers file has a ground-truth span (check the keys: video_qid)")
    p, lengths = answer_probs(store, records)
    scores = {r.qid: probs[:int(length)] for r, probs, length in zip(records, p, lengths)}   # real frames only
    groups = {ALL_GROUP: [r.qid for r in records]}
    if by is not None:
        for r in records:
            groups.setdefault(str(r.fields.get(by, "")), []).append(r.qid)
    rows = score_grounding(scores, truth, thresholds, groups)
    return {"questions": len(records), "thresholds": [float(t) for t in thresholds], "by": by, "rows": rows}


def format_grounding(result: Mapping[str, object]) -> str:
    head = ["threshold", "group", "questions", "mIoP", "IoP@0.3", "IoP@0.5", "mIoU", "IoU@0.3", "IoU@0.5"]
    lines = ["  ".join(f"{h:>9}" for h in head)]
    for row in result["rows"]:
        cells = [f"{row['threshold']:9.2f}", f"{row['group']:>9}", f"{row['questions']:9d}"]
        cells += [f"{row[k]:9.1f}" for k in head[3:]]
        lines.append("  ".join(cells))
    return "\n".join(lines)


__all__ = ["read_nextgqa", "span_scores", "selection_span", "temporal_grounding", "score_grounding", "prior_grounding", "format_grounding"]
