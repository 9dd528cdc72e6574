"""STAGE's attention labels on TVQA+ (``jayleicn/TVQAplus@d2dc721``: ``utils.computeIoU``,
``tvqa_dataset.get_iou_data`` and ``mk_att_label``): which detected regions of an annotated frame a
word of the ground-truth hypothesis ("question + correct answer") should attend to.

A region is a positive for a word when its IoU with a ground-truth box whose label is that word
(compared lower-cased) reaches ``iou_thd`` (0.5, ``--att_iou_thd``); a word's positives share its
label mass equally (each gets ``1 / #positives``). Kept as the original computes it:

- the IoU counts the intersection with ``+1`` pixels but the two areas without (``computeIoU``),
  and is rounded to 4 decimals before the threshold;
- the ground-truth frames (sorted by number, those past the clip's last frame dropped) are paired
  with the sampled frames from the first annotated one *by position*; TVQA+'s boxes are on the
  0.5-fps grid, so position and frame agree;
- only the first ``min(count, num_region)`` regions of a frame are candidates;
- the label has one row per word of ``q + " " + a`` plus one for the end token (always zero).
"""

from __future__ import annotations

from typing import List, Mapping, Sequence

import numpy as np


def box_iou(gt_box: Sequence[float], box: Sequence[float]) -> float:
    """``computeIoU`` of two ``[x1, y1, x2, y2]`` boxes: intersection with +1 pixels, areas without."""
    ix1, iy1 = max(gt_box[0], box[0]), max(gt_box[1], box[1])
    ix2, iy2 = min(gt_box[2], box[2]), min(gt_box[3], box[3])
    inter = (ix2 - ix1 + 1) * (iy2 - iy1 + 1) if ix1 < ix2 and iy1 < iy2 else 0
    union = (gt_box[2] - gt_box[0]) * (gt_box[3] - gt_box[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return float(inter) / union


def gt_corners(box: Mapping[str, float]) -> List[float]:
    """A TVQA+ box ``{left, top, width, height}`` as ``[left, top, right, bottom]``."""
    return [box["left"], box["top"], box["left"] + box["width"], box["top"] + box["height"]]


def attention_labels(bbox: Mapping[str, list], detected: Sequence[np.ndarray], region_counts: Sequence[int],
                     words: Sequence[str], num_frames: int, iou_thd: float = 0.5) -> np.ndarray:
    """``(len(region_counts), len(words) + 1, max(region_counts))`` float32 labels for the sampled frames
    from the first annotated one on (``region_counts[i]``: regions kept in that frame).

    ``bbox``: the question's ``{frame: [box, ...]}``; ``detected[i]``: the detector's ``(n, 4)`` boxes of the
    i-th annotated frame in frame order (all of them; only the first ``region_counts[i]`` count);
    ``words``: ``(q + " " + correct answer).split()``; ``num_frames``: the clip's 3-fps frame count.
    Cells past a frame's region count stay 0 (they are not regions)."""
    frames = sorted((f for f in bbox if int(f) < num_frames + 1), key=int)
    if len(frames) > len(region_counts):
        raise ValueError(f"{len(frames)} annotated frames but only {len(region_counts)} sampled frames from the "
                         f"first annotated one (field: bbox)")
    if len(detected) != len(frames):
        raise ValueError(f"{len(detected)} detected-box lists for {len(frames)} annotated frames (field: boxes)")
    width = max(region_counts) if len(region_counts) else 0
    labels = np.zeros((len(region_counts), len(words) + 1, width), dtype=np.float32)
    for i, frame in enumerate(frames):
        count = int(region_counts[i])
        boxes = np.asarray(detected[i], dtype=np.float64).reshape(-1, 4)[:count]
        gts = bbox[frame]
        # IoU of every ground-truth box with every kept region, rounded as the original's "{:.4f}".
        ious = [[float("{:.4f}".format(box_iou(gt_corners(g), b))) for b in boxes] for g in gts]
        names = [str(g["label"]).lower() for g in gts]
        for w, word in enumerate(words):
            hits = [j for j, name in enumerate(names) if name == word.lower()]
            if not hits:
                continue
            positive = np.zeros(len(boxes), dtype=bool)
            for j in hits:
                positive |= np.asarray(ious[j], dtype=np.float64) >= iou_thd
            if positive.any():
                labels[i, w, :len(boxes)] = positive / positive.sum()
    return labels


__all__ = ["box_iou", "gt_corners", "attention_labels"]
