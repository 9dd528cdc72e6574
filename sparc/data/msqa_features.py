"""MSVD-QA and MSRVTT-QA batches for the backbones that embed words themselves (memory-attention):
the released ``{split}_qa.json`` (:func:`sparc.data.msqa.read_msqa_table`) with Xu et al.'s features.

- **Features** (xudejing/video-question-answering@462f6e5, ``preprocess_*.py``, ``util/dataset.py``):
  ``video_feature_20.h5`` (PyTables, readable with h5py) with arrays ``/vgg`` and ``/c3d``, each
  ``(videos, 20, 4096)``, one row per video in id order. The row of a question's video differs:
  **MSVD-QA row ``video_id - 1``** (its ids run 1..1970; extraction loops ``vid1.avi`` .. ``vid1970.avi``),
  **MSRVTT-QA row ``video_id``** (ids 0..9999, ``video0.mp4`` ..). A frame is ``vgg | c3d`` (8192
  wide); ``T`` frames are taken at :func:`sparc.data.frames.uniform_indices` ``(20, T)`` (all 20 for
  ``T = 20``).
- **Text**: the question as word ids over a :class:`~sparc.data.words.WordVocabulary` of the train
  questions (``qns (L,)``, ``qns_lengths``).
- **Labels**: the class of the answer in ``answers`` (:mod:`sparc.data.answer_sets`), -1 outside it;
  ``drop_out_of_set=True`` (train) removes those questions, as the original trains only on in-set
  answers; val and test keep them and they count as wrong.
- **Keys**: ``qid`` is ``str(id)``, the key ``sparc extract-priors`` stores these priors under and
  the key ``msqa_accuracy`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.frames import uniform_indices
from sparc.data.hdf5 import LazyH5
from sparc.data.words import WordVocabulary, answer_index

PathLike = Union[str, os.PathLike]
FEATURE_FILE = "video_feature_20.h5"
#: feature row = video_id - VIDEO_ID_BASE[dataset] (MSVD's ids start at 1, MSRVTT's at 0)
VIDEO_ID_BASE = {"msvd": 1, "msrvtt": 0}
STREAMS = ("vgg", "c3d")


def feature_row(dataset: str, video_id) -> int:
    """The row of ``video_id`` in ``video_feature_20.h5``: ``video_id - 1`` (MSVD), ``video_id`` (MSRVTT)."""
    if dataset not in VIDEO_ID_BASE:
        raise ValueError(f"dataset must be one of {tuple(VIDEO_ID_BASE)}, got {dataset!r}")
    return int(video_id) - VIDEO_ID_BASE[dataset]


def msqa_vocabulary(table) -> WordVocabulary:
    """The words of a train table's questions."""
    return WordVocabulary.build(table["question"])


class MSQAFeatures(torch.utils.data.Dataset):
    """Item ``i``: ``{"qid", "video_id", "index", "answer", "question_word", "vid_feats" (T, 8192),
    "vid_lengths", "qns" (L,), "qns_lengths"}``. ``dataset`` is ``"msvd"`` or ``"msrvtt"`` (it decides
    the feature row); ``answers`` the answer set in the model's class order; ``index`` counts
    positions in this dataset (after ``drop_out_of_set``)."""

    def __init__(self, annotations: PathLike, features: PathLike, dataset: str, vocabulary: WordVocabulary,
                 answers: Sequence[str], num_frames: int = 20, max_len: int = 35, drop_out_of_set: bool = False,
                 table=None):
        from sparc.data.msqa import in_answer_set, read_msqa_table

        if dataset not in VIDEO_ID_BASE:
            raise ValueError(f"dataset must be one of {tuple(VIDEO_ID_BASE)}, got {dataset!r}")
        if num_frames < 1 or max_len < 1:
            raise ValueError(f"num_frames and max_len must be >= 1, got {num_frames}, {max_len}")
        self.annotations, self.features, self.dataset = Path(annotations), Path(features), dataset
        self.vocabulary, self.num_frames, self.max_len = vocabulary, int(num_frames), int(max_len)
        self.answers = list(answers)
        self._class = answer_index(self.answers)
        full = read_msqa_table(self.annotations) if table is None else table
        full = full.add_column("entry", list(range(len(full))))     # the file position, for messages
        self.table = in_answer_set(full, self.answers) if drop_out_of_set else full
        self._h5 = LazyH5()
        self._check_features()

    def __len__(self) -> int:
        return len(self.table)

    def _check_features(self) -> None:
        """Both streams present with one shape, and every question's video row inside them."""
        if not self.features.is_file():
            raise FileNotFoundError(f"feature file {str(self.features)!r} does not exist")
        shapes = {s: tuple(self._h5.dataset(self.features, s).shape) for s in STREAMS}
        for s, shape in shapes.items():
            if len(shape) != 3 or shape[:2] != shapes["vgg"][:2]:
                raise ValueError(f"{self.features}: /{s} has shape {shape}; /vgg and /c3d must both be "
                                 f"(videos, frames, width) over the same videos and frames (field: {s})")
        self.num_videos, self.stored_frames = shapes["vgg"][:2]
        self.appearance_dim, self.motion_dim = shapes["vgg"][2], shapes["c3d"][2]
        base = VIDEO_ID_BASE[self.dataset]
        for entry, qid, video in zip(self.table["entry"], self.table["qid"], self.table["video_id"]):
            if not str(video).isdigit() or not 0 <= feature_row(self.dataset, video) < self.num_videos:
                hint = " (MSVD-QA's video ids start at 1; is this MSRVTT-QA?)" if str(video) == "0" else ""
                raise ValueError(f"{self.annotations}, entry {entry} (qid {qid}): video_id {video} has no row in "
                                 f"{self.features} ({self.num_videos} videos; {self.dataset}: row = video_id - {base})"
                                 f"{hint} (field: video_id)")

    def video(self, video_id) -> torch.Tensor:
        row = feature_row(self.dataset, video_id)
        streams = [np.asarray(self._h5.dataset(self.features, s)[row], dtype=np.float32) for s in STREAMS]
        feats = np.concatenate(streams, axis=1)
        return torch.from_numpy(np.ascontiguousarray(feats[uniform_indices(len(feats), self.num_frames)]))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        row = self.table[i]
        ids, n = self.vocabulary.encode(row["question"], self.max_len)
        return {"qid": row["qid"], "video_id": row["video_id"], "index": i, "answer": self._class.get(row["answer"], -1),
                "question_word": row["question_word"], "vid_feats": self.video(row["video_id"]),
                "vid_lengths": torch.tensor(self.num_frames), "qns": torch.from_numpy(ids), "qns_lengths": torch.tensor(n)}


def collate_msqa(items: List[dict]) -> dict:
    """Stack :class:`MSQAFeatures` items (ids and question words stay lists)."""
    return stack_items(items, labels=("answer", "index"))


__all__ = ["MSQAFeatures", "collate_msqa", "feature_row", "msqa_vocabulary", "FEATURE_FILE", "VIDEO_ID_BASE"]
