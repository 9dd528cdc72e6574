"""TVQA+ and TVQA as STAGE's batches (``jayleicn/TVQAplus@d2dc721:tvqa_dataset.py``, ``pad_collate``,
``prepare_inputs``), the fields :class:`sparc.adapters.STAGEAdapter` reads plus STAGE's supervision.

Per question:

- **frames**: STAGE's 0.5-fps frames (:func:`sparc.data.tvqa.stage_frame_ids`), in the phase of the
  question's first annotated frame (TVQA+), or of frame 1 (TVQA, which has no boxes); 1-indexed 3-fps
  frame numbers, at most frame 300. The teacher's priors must be extracted on exactly these frames:
  :func:`frame_ids` writes them for ``sparc extract-priors --frame-ids``.
- ``vid (T, R, D)`` / ``vid_mask (T, R)``: the frames' regions (TVQA+: up to ``num_region`` 25 regions,
  300-d; TVQA: one 2048-d region per frame), ``boxes (T, R, 4)`` their detector boxes ``[x1, y1, x2, y2]``
  (zero for TVQA).
- ``sub_bert (T, Ls, E)`` / ``sub_mask``: each frame's two nearest subtitle sentences' tokens
  (truncated to ``max_sub_l`` 50, as ``prepare_inputs``).
- ``qas_bert (5, L, E)`` / ``qas_mask`` / ``qas`` (word ids): "question + answer k" tokens (truncated to
  ``max_qa_l`` 40).
- ``ts_label_st`` / ``ts_label_ed``: the span label (``get_ts_label``, on the 0-indexed frame positions
  as the original passes them), ``ts_label_mask (T,)`` the real frames, ``ts_missing`` (TVQA's NaN spans,
  labelled with TVQA's [10, 30] s).
- ``att_labels (T, L, R)``: STAGE's attention labels (:mod:`sparc.data.tvqa_att`) laid over the frame
  axis (rows of the ground-truth hypothesis' words; zero outside the annotated frames, for TVQA and
  for questions without an answer); the regions a word's negatives come from are those of
  ``vid_mask``. ``anno_st_idx`` / ``anno_ed_idx``: the annotated frames' first and last position
  (the original's ``anno_st_idx`` and the end of ``boxes``; -1 without boxes).
- ``frame_ids (T,)``, ``answer``, ``qid``, ``vid_name``, ``index`` (the row).

:func:`collate_stage` zero-pads every axis to the batch's longest. Masks are float so that a mixup's
average keeps a cell that either sample has (the adapter reads ``mask > 0``); ``ts_label_mask`` is bool.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch

from sparc.data.tvqa import read_tvqa_table, span_label, stage_frame_ids
from sparc.data.tvqa_att import attention_labels
from sparc.data.tvqa_stage_files import nearest_sentences

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class STAGELimits:
    """``config.py``'s limits: regions per frame, subtitle tokens per frame, hypothesis tokens; the IoU
    of a positive region (``att_iou_thd``)."""

    num_region: int = 25
    max_sub_l: int = 50
    max_qa_l: int = 40
    att_iou_thd: float = 0.5


def question_frames(bbox: dict, num_frames: int, where: str):
    """``(frame ids, first annotated position, last annotated position)`` (``get_all_img_ids``): the
    phase of the first annotated frame; the last position is the last annotated frame's, or the last
    sampled frame's when that one is not sampled. Without boxes (TVQA): frame 1's phase, (0, -1)."""
    if num_frames < 1:
        raise ValueError(f"{where}: the clip has {num_frames} frames (field: frm_cnt)")
    if not bbox:
        return stage_frame_ids(1, num_frames), 0, -1
    annotated = sorted(int(k) for k in bbox)
    ids = stage_frame_ids(annotated[0], num_frames)
    if annotated[0] not in ids:
        raise ValueError(f"{where}: the first annotated frame {annotated[0]} is not among the frames STAGE samples "
                         f"(the clip has {num_frames} frames, STAGE reads at most 300) (field: bbox)")
    last = ids.index(annotated[-1]) if annotated[-1] in ids else len(ids) - 1
    return ids, ids.index(annotated[0]), last


def read_frame_counts(path: PathLike) -> Dict[str, int]:
    """``frm_cnt_cache.json``: ``{vid_name: number of 3-fps frames}``."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a {{vid_name: frame count}} object (field: frm_cnt)")
    return {str(k): int(v) for k, v in data.items()}


class STAGEQuestions(torch.utils.data.Dataset):
    """STAGE's items over a question table (:func:`sparc.data.tvqa.read_tvqa_table`), from a visual
    reader (:class:`~sparc.data.tvqa_stage_files.RegionFeatures` or ``FrameFeatures``), a text reader
    (``STAGEText`` or ``GloveText``) and a subtitle reader (``STAGESubtitles`` or ``TVRSubtitles``).
    ``attention``: build the attention labels (TVQA+). Every question is checked up front (its video's
    frame count, subtitles, features, token keys and frames), so a missing entry fails before training."""

    def __init__(self, questions: PathLike, frame_counts: PathLike, visual, text, subtitles,
                 limits: STAGELimits = STAGELimits(), attention: bool = True, check: bool = True):
        self.questions = Path(questions)
        self.table = read_tvqa_table(self.questions)
        self.frame_counts_path = Path(frame_counts)
        self.frame_counts = read_frame_counts(frame_counts)
        self.visual, self.text, self.subtitles, self.limits = visual, text, subtitles, limits
        self.attention = attention
        self.vid_names: List[str] = list(self.table["vid_name"])
        self.qids: List[str] = list(self.table["qid"])
        if check:
            self.check()

    def __len__(self) -> int:
        return len(self.table)

    def where(self, i: int) -> str:
        return f"{self.questions}, entry {i} (qid {self.qids[i]})"

    def num_frames(self, i: int) -> int:
        vid = self.vid_names[i]
        if vid not in self.frame_counts:
            raise ValueError(f"{self.frame_counts_path}: {self.where(i)}: no frame count for video {vid} (field: frm_cnt)")
        return self.frame_counts[vid]

    def frames(self, i: int):
        """(frame ids, first and last annotated position) of question ``i``."""
        return question_frames(json.loads(self.table[int(i)]["bbox"]), self.num_frames(i), self.where(i))

    def frame_ids(self) -> Dict[str, List[int]]:
        """``{qid: [1-indexed 3-fps frame numbers]}``: the frames of every question, for
        ``sparc extract-priors --frame-ids``."""
        return {self.qids[i]: self.frames(i)[0] for i in range(len(self))}

    def check(self) -> None:
        questions, candidates = self.table["question"], self.table["candidates"]
        for i in range(len(self)):
            ids, _, _ = self.frames(i)
            where, vid = self.where(i), self.vid_names[i]
            self.subtitles.sentences(vid, where)
            self.text.check_video(vid, where)
            self.visual.check(vid, [f - 1 for f in ids], where)
            self.text.check(self.qids[i], questions[i], candidates[i], where)

    # ---- one item ------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict:
        i = int(i)
        row = self.table[i]
        where, vid, qid = self.where(i), row["vid_name"], row["qid"]
        bbox = json.loads(row["bbox"])
        num_frames = self.num_frames(i)
        ids, first, last = question_frames(bbox, num_frames, where)
        positions = [f - 1 for f in ids]           # the original's `indices - 1`
        T, lim = len(ids), self.limits
        st, ed = span_label(row["ts_start"], row["ts_end"], num_frames, positions)

        feats, region_mask, boxes = self.visual.frames(vid, positions, where)
        R = feats.shape[1]
        box_array = np.zeros((T, R, 4), dtype=np.float64)   # exact, for the predicted boxes
        for t, b in enumerate(boxes):
            box_array[t, :len(b)] = b[:R]

        hypotheses = [self.text.hypothesis(qid, row["question"], row["candidates"][k], k, where) for k in range(5)]
        L = max(1, min(lim.max_qa_l, max(len(w) for _, w in hypotheses)))
        E = hypotheses[0][0].shape[1]
        qas_bert = np.zeros((5, L, E), dtype=np.float32)
        qas_mask = np.zeros((5, L), dtype=np.float32)
        qas = np.zeros((5, L), dtype=np.int64)
        for k, (rows, words) in enumerate(hypotheses):
            n = min(len(words), L)
            qas_bert[k, :n], qas_mask[k, :n] = rows[:n], 1.0
            qas[k, :n] = self.text.word_ids(words[:n])

        sentences, times = self.subtitles.sentences(vid, where)
        pieces = self.text.subtitles(vid, sentences, where)
        aligned = [np.concatenate([pieces[s] for s in pick], axis=0) if pick else np.zeros((0, E), np.float32)
                   for pick in nearest_sentences(times, ids)]
        Ls = max(1, min(lim.max_sub_l, max(len(a) for a in aligned)))
        sub_bert = np.zeros((T, Ls, E), dtype=np.float32)
        sub_mask = np.zeros((T, Ls), dtype=np.float32)
        for t, a in enumerate(aligned):
            n = min(len(a), Ls)
            sub_bert[t, :n], sub_mask[t, :n] = a[:n], 1.0

        att = np.zeros((T, L, R), dtype=np.float32)
        if self.attention and bbox and row["answer"] >= 0:
            att_rows = self._attention(i, row, bbox, num_frames, region_mask, first, last, hypotheses[row["answer"]][1])
            n_words = min(att_rows.shape[1], L)
            att[first:first + att_rows.shape[0], :n_words, :att_rows.shape[2]] = att_rows[:, :n_words]

        return {
            "qid": qid, "vid_name": vid, "index": i, "answer": int(row["answer"]),
            "vid": torch.from_numpy(feats), "vid_mask": torch.from_numpy(region_mask),
            "boxes": torch.from_numpy(box_array),
            "sub_bert": torch.from_numpy(sub_bert), "sub_mask": torch.from_numpy(sub_mask),
            "qas_bert": torch.from_numpy(qas_bert), "qas_mask": torch.from_numpy(qas_mask), "qas": torch.from_numpy(qas),
            "ts_label_st": int(st), "ts_label_ed": int(ed), "ts_label_mask": torch.ones(T, dtype=torch.bool),
            "ts_missing": bool(row["ts_missing"]), "att_labels": torch.from_numpy(att),
            "anno_st_idx": int(first) if bbox else -1, "anno_ed_idx": int(last) if bbox else -1,
            "frame_ids": torch.tensor(ids, dtype=torch.long),
        }

    def _attention(self, i, row, bbox, num_frames, region_mask, first, last, words) -> np.ndarray:
        """The labels of the annotated frames (``mk_att_label`` over ``get_iou_data``)."""
        where, vid = self.where(i), row["vid_name"]
        annotated = sorted((f for f in bbox if int(f) < num_frames + 1), key=int)
        counts = [int(c) for c in region_mask[first:last + 1].sum(axis=1)]
        detected = self.visual.boxes(vid, [int(f) - 1 for f in annotated], where)
        try:
            return attention_labels(bbox, detected, counts, words, num_frames, self.limits.att_iou_thd)
        except ValueError as e:
            raise ValueError(f"{self.questions}: {where}: {e}") from None


def _pad_stack(values: List[torch.Tensor]) -> torch.Tensor:
    """Zero-pad every axis to the longest (at least 1) and stack."""
    shape = [max(max(v.shape[d] for v in values), 1) for d in range(values[0].dim())]
    out = values[0].new_zeros([len(values)] + shape)
    for n, v in enumerate(values):
        out[(n,) + tuple(slice(0, s) for s in v.shape)] = v
    return out


def collate_stage(items: List[dict]) -> dict:
    """One batch of :class:`STAGEQuestions` items: tensors zero-padded on every axis and stacked,
    integers and flags as tensors, ids and names as lists."""
    batch = {}
    for name in items[0]:
        values = [it[name] for it in items]
        if torch.is_tensor(values[0]):
            batch[name] = _pad_stack(values)
        elif isinstance(values[0], bool):
            batch[name] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(values[0], int):
            batch[name] = torch.tensor(values, dtype=torch.long)
        else:
            batch[name] = values
    return batch


def write_frame_ids(dataset: STAGEQuestions, path: PathLike) -> Path:
    """``{qid: [frame numbers]}`` of every question as JSON (``sparc extract-priors --frame-ids``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataset.frame_ids()))
    return path


def prior_lookup(store, frame_field: str = "ts_label_mask"):
    """``batch -> [B, T, C]`` priors for ``train(priors=...)``: the store's rows cut to the batch's frame
    axis (STAGE's frame count varies per question; the store pads to its longest), after checking that
    every row has exactly as many frames as the question (priors extracted on STAGE's frames)."""
    def lookup(batch: dict) -> torch.Tensor:
        probs, lengths = store.lookup(batch["qid"], return_lengths=True)
        frames = batch[frame_field].bool().sum(dim=1).cpu()
        bad = torch.nonzero(lengths != frames).flatten()
        if bad.numel():
            b = int(bad[0])
            raise ValueError(f"qid {batch['qid'][b]}: the prior store {store.path} has {int(lengths[b])} frames for "
                             f"this question, STAGE samples {int(frames[b])}; extract the priors on STAGE's frames "
                             f"(sparc extract-priors --frame-ids) (field: priors)")
        T = batch[frame_field].shape[1]
        if probs.shape[1] < T:
            probs = torch.nn.functional.pad(probs, (0, 0, 0, T - probs.shape[1]))
        return probs[:, :T]
    return lookup


__all__ = ["STAGELimits", "STAGEQuestions", "collate_stage", "question_frames", "read_frame_counts",
           "write_frame_ids", "prior_lookup"]
