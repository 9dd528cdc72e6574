"""NExT-QA multiple choice in the files HGA's and HME's public code reads (doc-doc/NExT-QA@6b92588,
``dataloader/sample_loader.py``), as batches for ``HGAAdapter`` / ``MemoryAdapter``.

- Questions: the split's CSV (``video`` or, in VGT's copies, ``video_id``; ``question, answer, qid,
  type, a0..a4``) as a ``datasets.Dataset`` (Arrow, memory-mapped), in file order. The key of a
  question is ``f"{video}_{qid}"`` (``qid`` counts within a video); every row is kept.
- Video features: ``vid_feat/app_mot_{split}.h5``, datasets ``ids`` (video ids) and ``feat``
  ``(videos, 16, 4096)`` = appearance 2048 | motion 2048, looked up by the row's video.
- Text features: ``qas_bert/bert_ft_{split}.h5``, dataset ``feat`` ``(rows, 5, 37, 768)`` BERT tokens of
  "[CLS] q [SEP] a_k [SEP]", indexed by the CSV row's position: the CSV must not be reordered or
  filtered before that lookup, so the reader never does either. A candidate's length is the original's
  ``nozero_row``: the index of its first token row whose features *sum* to 0.

HDF5 files are opened lazily in each process (:class:`sparc.data.hdf5.LazyH5`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.hdf5 import LazyH5
from sparc.metrics.nextqa import NEXTQA_TYPES

PathLike = Union[str, os.PathLike]
CANDIDATES = 5
REQUIRED = ("question", "answer", "qid", "type") + tuple(f"a{k}" for k in range(CANDIDATES))


def read_nextqa_table(annotations_csv: PathLike, cache_dir: Optional[PathLike] = None):
    """The CSV as a ``datasets.Dataset`` with every column a string (``answer`` an int), plus ``key``
    and ``row`` (the CSV position). A malformed row is an error naming file, line and field."""
    import datasets

    path = Path(annotations_csv)
    with open(path, newline="") as f:
        header = f.readline().strip().split(",")
    video = "video" if "video" in header else "video_id" if "video_id" in header else None
    missing = [c for c in REQUIRED if c not in header] + ([] if video else ["video"])
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {header}) (field: {missing[0]})")
    features = datasets.Features({c: datasets.Value("string") for c in header})
    table = datasets.Dataset.from_csv(str(path), features=features, cache_dir=None if cache_dir is None else str(cache_dir),
                                      keep_default_na=False)
    videos, qids, types, answers = table[video], table["qid"], table["type"], table["answer"]
    keys, parsed = [], []
    for row, (v, q, t, a) in enumerate(zip(videos, qids, types, answers)):
        where = f"{path}, line {row + 2} (qid {v}_{q})"
        if not v or not q:
            raise ValueError(f"{where}: empty {'video' if not v else 'qid'} (field: {video if not v else 'qid'})")
        if t not in NEXTQA_TYPES:
            raise ValueError(f"{where}: unknown question type {t!r}; expected one of {NEXTQA_TYPES} (field: type)")
        if not a.isdigit() or not 0 <= int(a) < CANDIDATES:
            raise ValueError(f"{where}: answer {a!r} is not a candidate index 0..{CANDIDATES - 1} (field: answer)")
        keys.append(f"{v}_{q}")
        parsed.append(int(a))
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"{path}: question {dup} appears twice (fields: {video}, qid)")
    table = table.remove_columns("answer").add_column("answer", parsed)
    table = table.add_column("key", keys).add_column("row", list(range(len(keys))))
    if video != "video":
        table = table.rename_column(video, "video")
    return table


def candidate_lengths(qas: np.ndarray) -> np.ndarray:
    """``nozero_row`` of sample_loader.py per candidate: the index of the first token row whose
    features sum to 0 (all rows when none does). ``qas`` ``(5, L, 768)`` -> ``(5,)``."""
    # Summed by torch in float32, as the original does: which real row sums to exactly 0 depends on it.
    zero = (torch.from_numpy(np.ascontiguousarray(qas, dtype=np.float32)).sum(dim=-1) == 0).numpy()   # (5, L)
    return np.where(zero.any(axis=1), zero.argmax(axis=1), qas.shape[1])


class NExTQA(torch.utils.data.Dataset):
    """Item ``i`` is CSV row ``i``: ``{"qid", "vid_feats" (16, 4096), "qas" (5, 37, 768), "qas_lengths"
    (5,), "answer", "type"}`` (:func:`collate_nextqa` stacks them into the batch ``HGAAdapter`` reads).
    ``text_features`` None gives questions without ``qas`` (the teacher jobs read the text)."""

    def __init__(self, annotations_csv: PathLike, video_features: Optional[PathLike] = None,
                 text_features: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None):
        self.table = read_nextqa_table(annotations_csv, cache_dir)
        self.annotations = Path(annotations_csv)
        self.video_features = None if video_features is None else Path(video_features)
        self.text_features = None if text_features is None else Path(text_features)
        self._h5 = LazyH5()
        if self.video_features is not None or self.text_features is not None:
            self._check_features()

    def __len__(self) -> int:
        return len(self.table)

    def _dataset(self, path: Path, name: str):
        return self._h5.dataset(path, name)

    def _videos(self) -> Dict[str, int]:
        return self._h5.ids(self.video_features)

    def _check_features(self) -> None:
        """Every question's video is in the video file and the text file has one entry per CSV row,
        checked once up front (a missing feature found in the middle of an epoch wastes the run)."""
        if self.video_features is not None:
            index = self._videos()
            feat = self._dataset(self.video_features, "feat")
            if feat.shape[0] != len(index):
                raise ValueError(f"{self.video_features}: {len(index)} ids but {feat.shape[0]} feat rows (field: feat)")
            for row, (video, key) in enumerate(zip(self.table["video"], self.table["key"])):
                if video not in index:
                    raise ValueError(f"{self.annotations}, line {row + 2} (qid {key}): video {video} is not in "
                                     f"{self.video_features} (field: ids)")
        if self.text_features is not None:
            feat = self._dataset(self.text_features, "feat")
            if feat.shape[0] != len(self.table) or tuple(feat.shape[1:2]) != (CANDIDATES,):
                raise ValueError(f"{self.text_features}: feat has shape {tuple(feat.shape)}, expected one "
                                 f"({CANDIDATES}, L, 768) entry per row of {self.annotations} ({len(self.table)} rows), "
                                 f"in the CSV's order (field: feat)")

    def __getitem__(self, i: int) -> dict:
        row = self.table[int(i)]
        item = {"qid": row["key"], "answer": row["answer"], "type": row["type"], "index": row["row"]}
        if self.video_features is not None:
            feat = self._dataset(self.video_features, "feat")[self._videos()[row["video"]]]
            item["vid_feats"] = torch.from_numpy(np.asarray(feat, dtype=np.float32))
        if self.text_features is not None:
            qas = np.asarray(self._dataset(self.text_features, "feat")[row["row"]], dtype=np.float32)
            item["qas"] = torch.from_numpy(qas)
            item["qas_lengths"] = torch.from_numpy(candidate_lengths(qas).astype(np.int64))
        return item


def collate_nextqa(items: List[dict]) -> dict:
    """Stack :class:`NExTQA` items into one batch (tensors stacked, ids and types as lists)."""
    return stack_items(items, labels=("answer", "index"))


__all__ = ["NExTQA", "collate_nextqa", "read_nextqa_table", "candidate_lengths"]
