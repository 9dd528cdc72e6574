"""TVQA+ (``jayleicn/TVQAplus@d2dc721:eval/eval_tvqa_plus.py``, Python 2 in the original): QA accuracy,
temporal localisation and grounding mAP, with the official script's quirks kept:

- temporal IoU divides the intersection by the *hull* of the two spans (its own comment: "not the
  correct union"); a zero-length hull scores 0; only the questions in the prediction file are scored;
  ``R@t`` for ``t`` in ``numpy.arange(0.1, 1, 0.1)``; ``ans_span_joint_acc@.5`` needs the right answer
  and IoU >= 0.5;
- grounding scores only the boxes predicted for the **ground-truth answer's** hypothesis, and of those
  only boxes whose word is among the words annotated in that frame; labels are cleaned (curly quotes
  to ``'``, lower case) and mapped through ``word2idx.json``, words outside it (``<unk>``) dropped; a
  frame with ground truth but no prediction gets an empty prediction; VOC matching at IoU 0.5 and
  all-point AP per class, averaged with ``nanmean`` (:mod:`sparc.metrics.voc`).

Predictions in STAGE's inference format: ``{"ts_answer": {qid: [[st, ed], answer_index]}, "raw_bbox":
[{"0": [box records], ..., "4": [...]}, ...]}``, one ``raw_bbox`` entry per question with a list per
hypothesis; a box record ``{"qid", "vid_name", "img_idx", "word" (an id), "bbox": [xyxy, ...],
"pred": [score, ...]}``. Results are fractions, as the official script prints them.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Dict, Mapping

import numpy as np

from sparc.metrics.predictions import read_predictions, source_name
from sparc.metrics.voc import voc_map

IMAGE_KEY = "{vid_name}_{qid}_{frame:05d}"
HYPOTHESES = 5


def clean_label(label: str) -> str:
    return label.replace("\u2019", "'").replace("\u2018", "'").lower()


def temporal_iou(pred, truth) -> float:
    """Intersection over the hull of the two spans (0 when the hull has no length)."""
    intersection = max(0, min(pred[1], truth[1]) - max(pred[0], truth[0]))
    hull = max(pred[1], truth[1]) - min(pred[0], truth[0])
    return 0.0 if hull == 0 else 1.0 * intersection / hull


def temporal_metrics(pred_ts_answer: Mapping, truth: Mapping[int, list]) -> Dict[str, float]:
    keys = sorted(pred_ts_answer)
    for k in keys:
        if int(k) not in truth:
            raise ValueError(f"ts_answer: question {k} is not in the annotations")
    iou = np.array([temporal_iou(pred_ts_answer[k][0], truth[int(k)][0]) for k in keys])
    right = np.array([pred_ts_answer[k][1] for k in keys]) == np.array([truth[int(k)][1] for k in keys])
    result = {"R@{:.2f}".format(t): 1.0 * np.sum(iou >= t) / len(iou) for t in np.arange(0.1, 1, 0.1)}
    result["miou"] = 1.0 * np.sum(iou) / len(iou)
    result["ans_span_joint_acc@.5"] = 1.0 * np.sum(right * (iou >= 0.5)) / len(right)
    result["qa_acc"] = 1.0 * np.sum(right) / len(right)
    return {k: float(v) for k, v in result.items()}


def _truth(annotations: list):
    ts_answer, boxes = {}, defaultdict(list)
    for e in annotations:
        qid = int(e["qid"])
        ts_answer[qid] = [e["ts"], int(e["answer_idx"])]
        for frame, frame_boxes in e["bbox"].items():
            key = IMAGE_KEY.format(vid_name=e["vid_name"], qid=qid, frame=int(frame))
            for b in frame_boxes:
                boxes[key].append([clean_label(b["label"]), 1,
                                   [b["left"], b["top"], b["left"] + b["width"], b["top"] + b["height"]]])
    return ts_answer, boxes


def _predicted_boxes(raw_bbox: list, annotations: list, word2idx: Mapping[str, int], source: str):
    """The boxes the official ``load_predictions`` keeps: the GT answer's hypothesis, words annotated there."""
    idx2word = {i: w for w, i in word2idx.items()}
    answer = {int(e["qid"]): int(e["answer_idx"]) for e in annotations}
    frames = {int(e["qid"]): e["bbox"] for e in annotations}
    unk = word2idx["<unk>"]
    kept = {}
    for n, entry in enumerate(raw_bbox):
        qids = [entry[str(h)][0]["qid"] for h in range(HYPOTHESES) if entry.get(str(h))]
        if not qids:
            raise ValueError(f"{source}: raw_bbox entry {n} has no box record in any hypothesis (field: raw_bbox)")
        qid = int(qids[-1])
        if qid not in answer:
            raise ValueError(f"{source}: raw_bbox entry {n}: question {qid} is not in the annotations")
        for p in entry[str(answer[qid])]:
            frame = str(p["img_idx"])
            if frame not in frames[qid]:
                raise ValueError(f"{source}: question {qid} has boxes for frame {frame}, which has no annotation "
                                 f"(the official script fails there too) (field: img_idx)")
            annotated = [word2idx.get(clean_label(b["label"]), unk) for b in frames[qid][frame]]
            key = IMAGE_KEY.format(vid_name=p["vid_name"], qid=qid, frame=int(p["img_idx"]))
            collected = [[idx2word[p["word"]], float(p["pred"][i]), box] for i, box in enumerate(p["bbox"])
                         if p["word"] in annotated]
            kept.setdefault(key, []).extend(collected)
    return kept


def _image(boxes: list, word2idx: Mapping[str, int]):
    """(boxes float32 (N, 4), label ids, scores) without ``<unk>`` labels; None when nothing is left."""
    unk = word2idx["<unk>"]
    labels = [word2idx.get(b[0], unk) for b in boxes]
    keep = [i for i, label in enumerate(labels) if label != unk]
    if not keep:
        return None
    return (np.array([boxes[i][2] for i in keep], dtype=np.float32), np.array([labels[i] for i in keep]),
            np.array([boxes[i][1] for i in keep]))


def grounding_map(pred_boxes: Mapping[str, list], truth_boxes: Mapping[str, list], word2idx: Mapping[str, int]) -> float:
    empty = (np.zeros((1, 4), dtype=np.float32), np.array([0]), np.array([0]))
    truth, predicted = [], []
    for key, boxes in truth_boxes.items():
        image = _image(boxes, word2idx)
        if image is None:
            continue
        truth.append(image)
        mine = _image(pred_boxes[key], word2idx) if key in pred_boxes else None
        predicted.append(empty if mine is None else mine)
    overall, _ = voc_map(predicted, truth, iou_threshold=0.5)
    return overall


def tvqaplus_metrics(annotations_json, predictions, word2idx_json) -> Dict[str, float]:
    """``qa_acc``, ``overall_map``, ``miou``, ``ans_span_joint_acc@.5`` and ``R@0.10`` ... ``R@0.90``
    of STAGE-format ``predictions`` (a path or dict) against ``tvqa_plus_{split}.json``."""
    with open(annotations_json) as f:
        annotations = json.load(f)
    with open(word2idx_json) as f:
        word2idx = json.load(f)
    source = source_name(predictions)
    preds = read_predictions(predictions)
    for field in ("ts_answer", "raw_bbox"):
        if field not in preds:
            raise ValueError(f"{source}: no {field!r} (STAGE's inference format) (field: {field})")
    ts_answer, truth_boxes = _truth(annotations)
    result = {"overall_map": grounding_map(_predicted_boxes(preds["raw_bbox"], annotations, word2idx, source),
                                           truth_boxes, word2idx)}
    result.update(temporal_metrics(preds["ts_answer"], ts_answer))
    return result


__all__ = ["tvqaplus_metrics", "temporal_iou", "temporal_metrics", "grounding_map", "clean_label"]
