"""PASCAL VOC detection average precision, as the TVQA+ evaluation runs it
(``jayleicn/TVQAplus@d2dc721:eval/maskrcnn_voc``, from maskrcnn-benchmark and chainercv):

- boxes are float32 ``xyxy``; before matching, x2 and y2 grow by 1, and the IoU's widths and areas add
  another 1 (pixel-inclusive counting applied twice, as that code does);
- within an image and class, predictions in decreasing score order each take the ground-truth box of
  highest IoU; at IoU >= the threshold it is a true positive the first time and a false positive after;
- AP per class is the area under the monotone precision envelope over all recall points (not VOC07's
  11 points); classes are the ground truth's; the mean skips classes whose AP is NaN.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import numpy as np

Image = Tuple[np.ndarray, np.ndarray, np.ndarray]   # boxes (N, 4) float32, labels (N,), scores (N,)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes, counting pixels inclusively (+1 on widths and areas)."""
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = np.maximum(a[:, None, :2], b[:, :2])
    rb = np.minimum(a[:, None, 2:], b[:, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area_a[:, None] + area_b - inter)


def precision_recall(predicted: Sequence[Image], truth: Sequence[Image], iou_threshold: float = 0.5):
    """Per ground-truth class: precision and recall along the score-ordered predictions, and counts."""
    score, match = defaultdict(list), defaultdict(list)
    truth_labels = []
    for (p_box, p_label, p_score), (g_box, g_label, _) in zip(predicted, truth):
        truth_labels.append(g_label)
        for label in np.unique(np.concatenate((p_label, g_label)).astype(int)):
            mine = p_label == label
            order = p_score[mine].argsort()[::-1]
            boxes, scores = p_box[mine][order], p_score[mine][order]
            theirs = g_box[g_label == label]
            score[label].extend(scores)
            if len(boxes) == 0:
                continue
            if len(theirs) == 0:
                match[label].extend((0,) * len(boxes))
                continue
            boxes, theirs = boxes.copy(), theirs.copy()
            boxes[:, 2:] += 1
            theirs[:, 2:] += 1
            iou = _iou(boxes, theirs)
            best = iou.argmax(axis=1)
            best[iou.max(axis=1) < iou_threshold] = -1
            taken = np.zeros(len(theirs), dtype=bool)
            for g in best:
                if g < 0:
                    match[label].append(0)
                else:
                    match[label].append(0 if taken[g] else 1)
                    taken[g] = True
    truth_labels = np.concatenate(truth_labels) if truth_labels else np.zeros(0, dtype=int)
    result = {}
    for label in np.unique(truth_labels.astype(int)):
        positives = int(np.sum(truth_labels.astype(int) == label))
        s, m = np.array(score[label]), np.array(match[label], dtype=np.int8)
        m = m[s.argsort()[::-1]]
        tp, fp = np.cumsum(m == 1), np.cumsum(m == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (fp + tp)
        result[int(label)] = {"precision": precision, "recall": tp / positives, "n_tp": int(np.sum(m == 1)),
                              "n_fp": int(np.sum(m == 0)), "n_positives": positives}
    return result


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point AP: the area under the precision envelope (NaN precisions count as 0)."""
    mpre = np.concatenate(([0], np.nan_to_num(precision), [0]))
    mrec = np.concatenate(([0], recall, [1]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_map(predicted: Sequence[Image], truth: Sequence[Image], iou_threshold: float = 0.5) -> Tuple[float, Dict[int, dict]]:
    """(mean AP over the ground-truth classes, per-class ``{"ap", "n_tp", "n_fp", "n_positives"}``)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted images for {len(truth)} ground-truth images")
    per_class = {}
    for label, pr in precision_recall(predicted, truth, iou_threshold).items():
        per_class[label] = {"ap": average_precision(pr["precision"], pr["recall"]),
                            **{k: pr[k] for k in ("n_tp", "n_fp", "n_positives")}}
    aps: List[float] = [c["ap"] for c in per_class.values()]
    return (float(np.nanmean(aps)) if aps else float("nan")), per_class


__all__ = ["voc_map", "average_precision", "precision_recall"]
