"""AGQA 2.0 balanced as batches for the open-ended HGA (``HGAAdapter(open_ended=True)``), on the video
features the AGQA baselines release in HME's layout.

- Questions: ``AGQA_balanced/{train,test}_balanced.txt`` as the memory-mapped table of
  :func:`sparc.data.agqa.read_agqa_table` (one question at a time, never a Python list of them).
- Video features (madeleinegrunde/AGQA_baselines_code@40c2884, README "Appearance features" and
  ``models/HME/make_tgif.py`` ``load_video_feature``, ``image_feature_net='concat'``, ``layer='fc'``):
  ``TGIF_RESNET_pool5.hdf5`` (appearance) and ``TGIF_RESNEXT.hdf5`` (motion), each one dataset
  ``resnet_features`` ``(videos, frames, 2048)`` whose row is the video's number in
  ``strID2numID.json`` (``{"YSKX3": 17, ...}``, the Charades id of the question's ``video_id``). The
  file names are TGIF-QA's, but the rows are AGQA's (Charades) videos. ``num_frames`` (SpARC: 8) of
  a video's frames are taken with :func:`sparc.data.frames.uniform_indices` and appearance | motion
  concatenated, ``(num_frames, 4096)``, as NExT-QA's ``app_mot``.
- Question text: word ids over the train split's :class:`sparc.data.words.WordVocabulary` (no
  question features are released for AGQA), the first ``max_words`` words (35: HME's AGQA
  ``max_sequence_length`` and Jumpin2/HGA's ``q_max_length``).
- Answers: a class of one answer set (:mod:`sparc.data.answer_sets`); -1 for a
  question whose answer is outside it (it can never be predicted, so it counts as wrong).

Feature files are opened lazily in each process (:class:`sparc.data.hdf5.LazyH5`); every question's
video is checked against the mapping and the files once, up front.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.frames import uniform_indices
from sparc.data.hdf5 import LazyH5
from sparc.data.words import WordVocabulary, answer_index

PathLike = Union[str, os.PathLike]
APPEARANCE, MOTION = "TGIF_RESNET_pool5.hdf5", "TGIF_RESNEXT.hdf5"
DATASET = "resnet_features"         # the dataset name in both files (make_tgif.py reads f['resnet_features'])
STR2NUM = "strID2numID.json"
CHUNK = 1 << 16                     # table rows per batch when a column is scanned


def column(table, name: str) -> Iterator[str]:
    """The values of one column, read batch by batch (no list of every question)."""
    for batch in table.iter(batch_size=CHUNK):
        yield from batch[name]


def answer_counts(table) -> Counter:
    """``Counter`` of the table's answers."""
    counts: Counter = Counter()
    for batch in table.iter(batch_size=CHUNK):
        counts.update(batch["answer"])
    return counts


def read_str2num(path: PathLike) -> Dict[str, int]:
    """``strID2numID.json``: Charades id -> the video's row in the feature files."""
    path = Path(path)
    with open(path) as f:
        mapping = json.load(f)
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: expected a JSON object {{video id: number}}, got {type(mapping).__name__}")
    out = {}
    for video, number in mapping.items():
        try:
            out[str(video)] = int(number)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: video {video!r} maps to {number!r}, not a row number (field: {video})") from None
    return out


class AGQAFeatures(torch.utils.data.Dataset):
    """Item ``i`` is row ``i`` of ``table``: ``{"qid", "index", "vid_feats" (num_frames, 4096), "qns"
    (words,) ids, "qns_lengths", "answer" (class, -1 outside ``answers``), "ans_type"}``;
    :func:`collate_agqa` makes the batch ``HGAAdapter(open_ended=True)`` reads.

    ``appearance``/``motion``: the two HDF5 files (dataset ``dataset``, ``(videos, frames, 2048)``),
    ``str2num`` the Charades id -> row mapping; ``annotations`` names the question file in errors."""

    def __init__(self, table, appearance: PathLike, motion: PathLike, str2num: Dict[str, int],
                 vocabulary: WordVocabulary, answers: Sequence[str], num_frames: int = 8, max_words: int = 35,
                 dataset: str = DATASET, annotations: Optional[PathLike] = None):
        self.table = table
        self.appearance, self.motion = Path(appearance), Path(motion)
        self.str2num, self.vocabulary = str2num, vocabulary
        self.answers = list(answers)
        self.classes = answer_index(self.answers)
        self.num_frames, self.max_words, self.dataset = int(num_frames), int(max_words), dataset
        self.annotations = str(annotations) if annotations is not None else "the AGQA table"
        self._h5 = LazyH5()
        self.frames = self._check_features()

    def __len__(self) -> int:
        return len(self.table)

    def _check_features(self) -> int:
        """Both files hold ``(videos, frames, D)`` with the same frame count, and every question's video
        has a row in both (checked once: a missing video found mid-epoch wastes the run). Returns the
        frame count."""
        shapes = {}
        for path in (self.appearance, self.motion):
            shape = tuple(self._h5.dataset(path, self.dataset).shape)
            if len(shape) != 3:
                raise ValueError(f"{path}: dataset {self.dataset!r} has shape {shape}, expected (videos, frames, "
                                 f"features) (field: {self.dataset})")
            shapes[path] = shape
        (a, sa), (m, sm) = shapes.items()
        if sa[1] != sm[1]:
            raise ValueError(f"{a} has {sa[1]} frames per video but {m} has {sm[1]}; the appearance and motion "
                             f"features must be of the same frames (field: {self.dataset})")
        rows = min(sa[0], sm[0])
        checked = set()
        for batch in self.table.iter(batch_size=CHUNK):
            for qid, video in zip(batch["qid"], batch["video_id"]):
                if video in checked:
                    continue
                number = self.str2num.get(video)
                if number is None:
                    raise ValueError(f"{self.annotations}: question {qid}: video {video!r} is not in {STR2NUM} "
                                     f"(field: video_id)")
                if not 0 <= number < rows:
                    raise ValueError(f"{self.annotations}: question {qid}: video {video!r} is number {number} in "
                                     f"{STR2NUM}, beyond the {rows} videos of {a if sa[0] == rows else m} "
                                     f"(field: video_id)")
                checked.add(video)
        return sa[1]

    def video(self, video_id: str) -> np.ndarray:
        """``(num_frames, 2 * D)`` float32: the sampled frames' appearance | motion."""
        row = self.str2num[video_id]
        positions = uniform_indices(self.frames, self.num_frames)
        parts = [np.asarray(self._h5.dataset(path, self.dataset)[row], dtype=np.float32)[positions]
                 for path in (self.appearance, self.motion)]
        return np.concatenate(parts, axis=1)

    def __getitem__(self, i: int) -> dict:
        row = self.table[int(i)]
        ids, length = self.vocabulary.encode(row["question"], self.max_words)
        return {"qid": row["qid"], "index": int(i), "ans_type": row["ans_type"],
                "answer": self.classes.get(row["answer"], -1),
                "vid_feats": torch.from_numpy(self.video(row["video_id"])),
                "qns": torch.from_numpy(ids[:length]), "qns_lengths": torch.tensor(length)}


def collate_agqa(items: List[dict]) -> dict:
    """Stack :class:`AGQAFeatures` items; questions padded to the batch's longest."""
    return stack_items(items, labels=("answer", "index"), ragged=("qns",))


__all__ = ["AGQAFeatures", "collate_agqa", "answer_counts", "read_str2num",
           "column", "APPEARANCE", "MOTION", "DATASET", "STR2NUM"]
