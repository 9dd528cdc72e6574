"""STAGE's predictions in its inference format (``jayleicn/TVQAplus@d2dc721:inference.py`` and
``model/stage.py get_att_prediction``), the layout ``sparc.metrics.tvqaplus_metrics`` reads:

``{"ts_answer": {qid: [[st, ed], answer]}, "raw_bbox": [{"0": [...], ..., "4": [...]}, ...]}``

- the span is the predicted answer's most likely (start <= end) pair of frames, ``find_max_pair`` over
  its start and end probabilities (ties to the earliest pair), converted to seconds with the
  original's rule ``[st * 2 + offset, (ed + 1) * 2 + offset]``, ``offset = (first frame id % 6) / 3``
  (frame ids 1-indexed at 3 fps, one sampled frame every 2 s);
- a box record per (annotated frame, hypothesis word in the evaluation object vocabulary): the
  regions whose raw attention score (cosine similarity) reaches ``score_thd`` (0.2), in ascending
  score order, with their detector boxes ``[x1, y1, x2, y2]``.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Set, Tuple

import numpy as np

SECONDS_PER_FRAME = 2      # STAGE samples 0.5 fps
FPS = 3
INTERVAL = 6


def find_max_pair(p_start: Sequence[float], p_end: Sequence[float]) -> Tuple[Tuple[int, int], float]:
    """``((k1, k2), p_start[k1] * p_end[k2])`` maximal over k1 <= k2 (``inference.find_max_pair``: a
    running argmax of the start, strict comparisons, so ties go to the earliest pair; ``(0, 1)`` and 0
    when no product is positive)."""
    best, best_value, arg_start = (0, 1), 0.0, 0
    for i in range(len(p_start)):
        start_value = p_start[arg_start]
        if start_value < p_start[i]:
            arg_start, start_value = i, p_start[i]
        if start_value * p_end[i] > best_value:
            best, best_value = (arg_start, i), start_value * p_end[i]
    return best, float(best_value)


def span_seconds(start: int, end: int, first_frame_id: int) -> List[float]:
    """Frame positions (end inclusive) back to seconds, as ``inference.py`` converts them."""
    offset = (first_frame_id % INTERVAL) / FPS
    return [start * SECONDS_PER_FRAME + offset, (end + 1) * SECONDS_PER_FRAME + offset]


def box_records(scores: np.ndarray, word_ids: Sequence[int], object_words: Set[int], boxes: Sequence[Sequence],
                frame_ids: Sequence[int], first: int, qid: int, vid_name: str, score_thd: float = 0.2) -> List[dict]:
    """The box records of one hypothesis: ``scores (T, L, R)`` raw attention scores, ``word_ids (L,)`` the
    hypothesis' word ids, ``boxes[i]`` the region boxes of annotated frame i (frame ``first + i`` of the
    sampled frames), ``frame_ids (T,)`` the sampled 1-indexed frame numbers."""
    records = []
    for i, frame_boxes in enumerate(boxes):
        t = first + i
        for w, word in enumerate(word_ids):
            if int(word) not in object_words:
                continue
            region_scores = np.asarray(scores[t, w, :len(frame_boxes)], dtype=np.float64)
            kept = np.nonzero(region_scores >= score_thd)[0]
            order = kept[np.argsort(region_scores[kept], kind="stable")]
            records.append({"pred": [float(region_scores[r]) for r in order],
                            "bbox": [[float(x) for x in frame_boxes[r]] for r in order],
                            "word": int(word), "qid": int(qid), "vid_name": vid_name,
                            "img_idx": int(frame_ids[t])})
    return records


def stage_predictions(rows: Sequence[dict]) -> Dict[str, object]:
    """``{"ts_answer", "raw_bbox"}`` from per-question rows ``{qid, span: [st, ed] seconds, answer,
    boxes: {hypothesis: [records]}}`` (in the evaluation set's order)."""
    return {"ts_answer": {str(r["qid"]): [list(r["span"]), int(r["answer"])] for r in rows},
            "raw_bbox": [{str(h): r["boxes"].get(h, []) for h in range(5)} for r in rows]}


__all__ = ["find_max_pair", "span_seconds", "box_records", "stage_predictions"]
