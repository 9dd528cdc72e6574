"""DramaQA as batches for HGA (``HGAAdapter``, multiple choice over the 5 candidates, word ids), on
per-frame features of the released frames, and the frame folders that give the teacher exactly the
same frames.

DramaQA releases frames, not features (``AnotherMissOh_images/AnotherMissOh{EE}/{SSS}/{TTTT}/*.jpg``,
3 fps; liveseongho/DramaQA@643db2b ``data_loader/preprocess_image.py`` ``load_image`` names a shot
``'_'.join(parts[-3:])`` = ``AnotherMissOh{EE}_{SSS}_{TTTT}``, the questions' ``vid``). Which frames a
question sees:

- a shot-level question (``vid`` shot ``TTTT`` != 0000, difficulty 1-2): its shot's frames
  (the starter code's ``get_bbft``: ``{vid[:24]: image_dt[vid[:19]][vid[:24]]}``);
- a scene-level question (shot 0000, difficulty 3-4): the frames of shots ``shot_contained[0]`` ..
  ``shot_contained[-1]`` of its scene, in shot order (liveseongho/DramaQAChallenge2020@446efa5
  ``code/dataloader/dataset_multichoice.py`` ``get_image_by_vid``: from the first frame of the first
  shot to the last frame of the last). Every shot of that range must exist.

Features (the user extracts them; no released layout exists): one HDF5 file, one dataset per shot
``AnotherMissOh{EE}_{SSS}_{TTTT}`` of shape ``(frames, D)``, row ``i`` the feature of the shot
folder's ``i``-th image in :func:`sparc.data.frames.list_frame_files` order (natural sort of the
file names, e.g. ``IMAGE_0000046147.jpg``). A question's frames are its shots' rows concatenated;
``num_frames`` of them are taken with :func:`sparc.data.frames.uniform_indices`.

Teacher frames: ``sparc extract-priors --frames ROOT`` reads ``ROOT/<video>/`` per question, the
video being :func:`frames_key` (the shot vid, or ``AnotherMissOh{EE}_{SSS}_{first}-{last}`` for a
scene-level question). :func:`link_frame_folders` writes those folders as symbolic links to the
released images, numbered in the order above, so the teacher's ``uniform_indices`` over a folder
picks exactly the frames the features give the student.

Text: "question answer_k" per candidate as word ids over the train split's
:class:`sparc.data.words.WordVocabulary` (Jumpin2/HGA feeds its multiple-choice TGIF-QA tasks
``question + ' ' + candidate`` as word ids, ``data_utils/dataset.py``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.frames import list_frame_files, uniform_indices
from sparc.data.hdf5 import LazyH5
from sparc.data.words import WordVocabulary

PathLike = Union[str, os.PathLike]
_VID = re.compile(r"^(AnotherMissOh\d{2}_\d{3})_(\d{4})$")


def _parse_vid(vid: str, qid: str, where: str):
    m = _VID.match(str(vid))
    if not m:
        raise ValueError(f"{where} (qid {qid}): vid {vid!r} is not AnotherMissOh{{EE}}_{{SSS}}_{{TTTT}} (field: vid)")
    return m.group(1), int(m.group(2))


def question_shots(vid: str, shot_contained=None, *, qid: str = "?", where: str = "DramaQA") -> List[str]:
    """The shot vids whose frames a question sees, in order (module docstring)."""
    scene, shot = _parse_vid(vid, qid, where)
    if shot != 0:
        return [str(vid)]
    if not isinstance(shot_contained, (list, tuple)) or not shot_contained:
        raise ValueError(f"{where} (qid {qid}): scene-level question (vid {vid}) without its shots "
                         f"(field: shot_contained)")
    try:
        first, last = int(shot_contained[0]), int(shot_contained[-1])
    except (TypeError, ValueError):
        raise ValueError(f"{where} (qid {qid}): shot_contained {shot_contained!r} is not a list of shot numbers "
                         f"(field: shot_contained)") from None
    if not 1 <= first <= last:
        raise ValueError(f"{where} (qid {qid}): shot_contained {shot_contained!r} is not a range of shots "
                         f"first..last, both >= 1 (field: shot_contained)")
    return [f"{scene}_{s:04d}" for s in range(first, last + 1)]


def frames_key(vid: str, shot_contained=None, *, qid: str = "?", where: str = "DramaQA") -> str:
    """The frame folder (the teacher's video id) of a question: the shot vid, or for a scene-level
    question ``AnotherMissOh{EE}_{SSS}_{first:04d}-{last:04d}``."""
    shots = question_shots(vid, shot_contained, qid=qid, where=where)
    if len(shots) == 1 and shots[0] == str(vid):
        return shots[0]
    return f"{shots[0]}-{shots[-1][-4:]}"


def read_split(path: PathLike):
    """The split as :func:`sparc.data.dramaqa.read_dramaqa_table` gives it, and each row's shots."""
    from sparc.data.dramaqa import read_dramaqa_table

    path = Path(path)
    table = read_dramaqa_table(path)
    with open(path) as f:
        entries = json.load(f)
    shots = [question_shots(e["vid"], e.get("shot_contained"), qid=str(e["qid"]), where=f"{path}, entry {n}")
             for n, e in enumerate(entries)]
    return table, shots


def shot_folder(images_root: PathLike, shot_vid: str) -> Path:
    """``AnotherMissOh_images/AnotherMissOh{EE}/{SSS}/{TTTT}`` of a shot vid."""
    episode, scene, shot = shot_vid[:15], shot_vid[16:19], shot_vid[20:24]
    return Path(images_root) / episode / scene / shot


def link_frame_folders(split_files: Sequence[PathLike], images_root: PathLike, out_root: PathLike,
                       features: Optional[PathLike] = None) -> Dict[str, int]:
    """``out_root/<frames_key>/`` for every question of ``split_files``: symbolic links
    ``{n:06d}_{image name}`` to its shots' images, in order, for ``sparc extract-priors --frames
    out_root``. An existing folder with the right count is left as it is. With ``features`` (the
    per-frame HDF5), each folder's frame count must equal its shots' feature rows. Returns ``{key:
    frames}``. A missing shot folder, or one without images, names the question and the shot."""
    h5 = LazyH5() if features is not None else None
    out_root = Path(out_root)
    counts: Dict[str, int] = {}
    for split in split_files:
        with open(split) as f:
            entries = json.load(f)
        for n, e in enumerate(entries):
            qid, where = str(e.get("qid", "?")), f"{split}, entry {n}"
            key = frames_key(e.get("vid", ""), e.get("shot_contained"), qid=qid, where=where)
            if key in counts:
                continue
            images = []
            for shot in question_shots(e["vid"], e.get("shot_contained"), qid=qid, where=where):
                folder = shot_folder(images_root, shot)
                files = list_frame_files(folder) if folder.is_dir() else []
                if not files:
                    raise ValueError(f"{where} (qid {qid}): shot {shot} has no images in {folder} (field: shot_contained)")
                if h5 is not None:
                    rows = _shot_rows(h5, Path(features), shot, qid, where)
                    if rows != len(files):
                        raise ValueError(f"{where} (qid {qid}): shot {shot} has {len(files)} images in {folder} but "
                                         f"{rows} feature rows in {features} (field: {shot})")
                images.extend(files)
            target = out_root / key
            if not (target.is_dir() and len(list_frame_files(target)) == len(images)):
                target.mkdir(parents=True, exist_ok=True)
                for old in target.iterdir():
                    old.unlink()
                for i, image in enumerate(images):
                    os.symlink(os.path.abspath(image), target / f"{i:06d}_{image.name}")
            counts[key] = len(images)
    return counts


def _shot_rows(h5: LazyH5, path: Path, shot: str, qid: str, where: str) -> int:
    f = h5.file(path)
    if shot not in f:
        raise ValueError(f"{where} (qid {qid}): shot {shot} has no features in {path} (field: {shot})")
    if f[shot].ndim != 2 or f[shot].shape[0] < 1:
        raise ValueError(f"{path}: dataset {shot} has shape {tuple(f[shot].shape)}, expected (frames, D) with at "
                         f"least one frame (qid {qid}) (field: {shot})")
    return int(f[shot].shape[0])


class DramaQAFeatures(torch.utils.data.Dataset):
    """Item ``i`` is question ``i`` of the split file: ``{"qid", "index", "level", "vid_feats"
    (num_frames, D), "qas" (5, words) ids of "question answer_k", "qas_lengths" (5,), "answer"}``
    (-1 in the test split); :func:`collate_dramaqa` makes the batch ``HGAAdapter`` reads."""

    def __init__(self, split_file: PathLike, features: PathLike, vocabulary: WordVocabulary, num_frames: int = 16,
                 max_words: int = 50):
        self.split_file, self.features = Path(split_file), Path(features)
        self.table, self.shots = read_split(self.split_file)
        self.vocabulary, self.num_frames, self.max_words = vocabulary, int(num_frames), int(max_words)
        self._h5 = LazyH5()
        self.feature_dim, self.shot_frames = self._check_features()

    def __len__(self) -> int:
        return len(self.table)

    def _check_features(self):
        """Every question's shots have ``(frames, D)`` features of one D, checked once up front."""
        frames: Dict[str, int] = {}
        dims = set()
        f = self._h5.file(self.features)
        for n, (qid, shots) in enumerate(zip(self.table["qid"], self.shots)):
            for shot in shots:
                if shot not in frames:
                    frames[shot] = _shot_rows(self._h5, self.features, shot, qid, f"{self.split_file}, entry {n}")
                    dims.add(int(f[shot].shape[1]))
        if len(dims) > 1:
            raise ValueError(f"{self.features}: the shots' features differ in size ({sorted(dims)}); one D for every "
                             f"shot (field: D)")
        return (dims.pop() if dims else 0), frames

    def video(self, i: int) -> np.ndarray:
        """``(num_frames, D)``: the sampled frames of question ``i``'s shots."""
        shots = self.shots[i]
        counts = np.array([self.shot_frames[s] for s in shots])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        positions = np.asarray(uniform_indices(int(counts.sum()), self.num_frames))
        which = np.searchsorted(starts, positions, side="right") - 1
        f = self._h5.file(self.features)
        out = np.empty((self.num_frames, self.feature_dim), dtype=np.float32)
        for s in np.unique(which):
            rows = positions[which == s] - starts[s]
            unique, inverse = np.unique(rows, return_inverse=True)     # h5py reads increasing, distinct rows
            out[which == s] = np.asarray(f[shots[s]][unique.tolist()], dtype=np.float32)[inverse]
        return out

    def __getitem__(self, i: int) -> dict:
        row = self.table[int(i)]
        encoded = [self.vocabulary.encode(f"{row['question']} {c}", self.max_words) for c in row["candidates"]]
        width = max(length for _, length in encoded)
        return {"qid": row["qid"], "index": int(i), "level": row["level"], "answer": row["answer"],
                "vid_feats": torch.from_numpy(self.video(int(i))),
                "qas": torch.from_numpy(np.stack([ids[:width] for ids, _ in encoded])),
                "qas_lengths": torch.tensor([length for _, length in encoded])}


def collate_dramaqa(items: List[dict]) -> dict:
    """Stack :class:`DramaQAFeatures` items; candidates padded to the batch's longest."""
    return stack_items(items, labels=("answer", "index", "level"), ragged=("qas",))


def texts(table) -> List[str]:
    """The texts a train split's vocabulary is built from: each question and each of its candidates."""
    return [text for q, cands in zip(table["question"], table["candidates"]) for text in (q, *cands)]


__all__ = ["DramaQAFeatures", "collate_dramaqa", "question_shots", "frames_key", "read_split", "shot_folder",
           "link_frame_folders", "texts"]
