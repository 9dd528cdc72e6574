"""TGIF-QA batches for the backbones that embed words themselves (memory-attention): the released
question files (:func:`sparc.data.tgifqa.read_tgifqa_table`) with ST-VQA's official per-frame features.

- **Features** (YunseokJANG/tgif-qa@9ecbbc7 ``code/README.md``): ``TGIF_RESNET_pool5.hdf5`` (appearance,
  ``(#frames, 2048)``) and ``TGIF_C3D_fc6.hdf5`` (motion, ``(#frames, 4096)``), one dataset per GIF
  named ``str(key)``. A frame is ``appearance | motion`` (6144 wide).
- **Frame counts.** Both files have one row per GIF frame (C3D at stride 1 with SAME padding; GIFs of
  fewer than 16 frames padded to 16 by repeating the last one), but they are not guaranteed equal:
  the official loader (``data_util/tgif.py``, ``load_video_feature`` with ``CONCAT``) cuts both to the
  shorter and reads a 1-D C3D entry as one frame. So does this reader. Then ``T`` frames are taken at
  :func:`sparc.data.frames.uniform_indices` ``(n, T)``, the positions the teacher's priors are
  extracted at (a GIF shorter than ``T`` repeats frames, as the priors do).
- **Text** as word ids over a :class:`~sparc.data.words.WordVocabulary` of the train file
  (:func:`tgifqa_vocabulary`, which adds the separator ``<sep>`` as id 2): multiple choice scores five
  texts "question <sep> answer_k" (``qas (5, L)``, ``qas_lengths (5,)``); FrameQA and Count read the
  question alone (``qns (L,)``, ``qns_lengths``). Texts longer than ``max_len`` lose the end of the
  question, never the answer.
- **Labels.** Action/Transition the candidate index; Count ``max(answer, 1)`` (the ``target`` column:
  every baseline trains and scores 0 as 1); FrameQA the class of the answer in ``answers`` or -1
  outside it (``drop_out_of_set=True`` removes those, for training).
- **Keys.** ``qid`` is ``f"{vid_id}_{key}"``, the key ``sparc extract-priors`` stores TGIF-QA priors
  under (``sparc.data.questions``); ``vid_id`` is the question id the official metric reads.
- **Validation.** TGIF-QA has none; :func:`validation_split` carves HCRN's (the last 10 % of a
  permutation of the train questions drawn with seed 666, ``preprocess/datautils/tgif_qa.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.frames import uniform_indices
from sparc.data.hdf5 import LazyH5
from sparc.data.words import PAD, UNK, WordVocabulary, answer_index, words_of

PathLike = Union[str, os.PathLike]
RESNET_FILE, C3D_FILE = "TGIF_RESNET_pool5.hdf5", "TGIF_C3D_fc6.hdf5"
APPEARANCE_DIM, MOTION_DIM = 2048, 4096
SEP = "<sep>"
MULTIPLE_CHOICE = ("action", "transition")


def validation_split(num_questions: int, fraction: float = 0.1, seed: int = 666) -> Tuple[List[int], List[int]]:
    """``(train rows, val rows)``, each ascending: HCRN's split of a train file, the first
    ``int((1 - fraction) n)`` questions of ``np.random.seed(seed); np.random.permutation(n)`` train,
    the rest val. By question, as HCRN does: a GIF with several questions may sit on both sides."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    order = np.random.RandomState(seed).permutation(num_questions)
    cut = int((1 - fraction) * num_questions)
    return sorted(order[:cut].tolist()), sorted(order[cut:].tolist())


def tgifqa_vocabulary(table) -> WordVocabulary:
    """The words of a train table's questions (and candidates), ``<sep>`` third (id 2)."""
    texts = list(table["question"])
    if "candidates" in table.column_names:
        texts += [c for row in table["candidates"] for c in row]
    built = WordVocabulary.build(texts)
    return WordVocabulary([PAD, UNK, SEP] + built.words[2:])


def _ids(vocabulary: WordVocabulary, text: str) -> List[int]:
    return [vocabulary.index.get(w, 1) for w in words_of(text)] or [1]


def candidate_ids(vocabulary: WordVocabulary, question: str, answer: str, max_len: int) -> Tuple[np.ndarray, int]:
    """``(ids (max_len,), length)`` of "question <sep> answer": the question is cut first."""
    sep = vocabulary.index[SEP]
    a = _ids(vocabulary, answer)[:max_len - 2]
    q = _ids(vocabulary, question)[:max_len - 1 - len(a)]
    ids = q + [sep] + a
    row = np.zeros(max_len, dtype=np.int64)
    row[:len(ids)] = ids
    return row, len(ids)


def frame_features(appearance: np.ndarray, motion: np.ndarray, where: str,
                   dims: Tuple[int, int] = (APPEARANCE_DIM, MOTION_DIM)) -> np.ndarray:
    """``(n, Da + Dm)`` = appearance | motion per frame, ``n`` the shorter of the two files' counts
    (a 1-D entry is one frame)."""
    parts = []
    for x, dim, name in ((appearance, dims[0], RESNET_FILE), (motion, dims[1], C3D_FILE)):
        x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
        if x.shape[0] < 1 or x.shape[1] != dim:
            raise ValueError(f"{where}: {name} holds {x.shape[0]} frames of width {x.shape[1]}; expected at least one "
                             f"frame of width {dim} (field: key)")
        parts.append(x)
    n = min(len(p) for p in parts)
    return np.concatenate([p[:n] for p in parts], axis=1).astype(np.float32, copy=False)


class TGIFQAFeatures(torch.utils.data.Dataset):
    """Item ``i``: ``{"qid", "vid_id", "index", "answer", "vid_feats" (T, 6144), "vid_lengths"}`` plus
    ``"qas" (5, L)``, ``"qas_lengths" (5,)`` (Action, Transition) or ``"qns" (L,)``, ``"qns_lengths"``
    (Count, FrameQA; FrameQA adds ``"type"``). ``rows`` keeps those rows of the file (ascending; e.g.
    one side of :func:`validation_split`); ``index`` counts positions in this dataset.
    ``answers`` (FrameQA) is the answer set, in the model's class order."""

    def __init__(self, annotations: PathLike, task: str, resnet: PathLike, c3d: PathLike, vocabulary: WordVocabulary,
                 num_frames: int, max_len: int = 35, answers: Optional[Sequence[str]] = None,
                 rows: Optional[Sequence[int]] = None, drop_out_of_set: bool = False, table=None,
                 dims: Tuple[int, int] = (APPEARANCE_DIM, MOTION_DIM)):
        from sparc.data.tgifqa import TASKS, read_tgifqa_table

        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "frameqa" and answers is None:
            raise ValueError("FrameQA needs its answer set (answers=)")
        if num_frames < 1 or max_len < 3:
            raise ValueError(f"num_frames must be >= 1 and max_len >= 3, got {num_frames}, {max_len}")
        self.annotations, self.task = Path(annotations), task
        self.resnet, self.c3d = Path(resnet), Path(c3d)
        self.vocabulary, self.num_frames, self.max_len, self.dims = vocabulary, int(num_frames), int(max_len), dims
        full = read_tgifqa_table(self.annotations, task) if table is None else table
        rows = list(range(len(full))) if rows is None else [int(r) for r in rows]
        if rows != sorted(set(rows)) or (rows and not 0 <= rows[0] <= rows[-1] < len(full)):
            raise ValueError(f"rows must be ascending distinct positions of {self.annotations}'s {len(full)} questions")
        self.answers = None if answers is None else list(answers)
        self._class = None if answers is None else answer_index(self.answers)
        if drop_out_of_set and self._class is not None:
            given = full["answer"]
            rows = [r for r in rows if given[r] in self._class]
        self.rows = rows
        self.table = full.select(rows)
        self._h5 = LazyH5()
        self._check_keys()

    def __len__(self) -> int:
        return len(self.table)

    def _where(self, position: int, qid: str) -> str:
        return f"{self.annotations}, line {self.rows[position] + 2} (qid {qid})"

    def _check_keys(self) -> None:
        """Every question's key in both feature files, checked once before training starts."""
        for path in (self.resnet, self.c3d):
            if not path.is_file():
                raise FileNotFoundError(f"feature file {str(path)!r} does not exist")
            names = set(self._h5.file(path).keys())
            for position, (qid, key) in enumerate(zip(self.table["qid"], self.table["key"])):
                if key not in names:
                    raise ValueError(f"{self._where(position, qid)}: key {key} is not in {path} (field: key)")

    def label(self, row: dict) -> int:
        if self.task == "count":
            return int(row["target"])
        if self.task == "frameqa":
            return self._class.get(row["answer"], -1)
        return int(row["answer"])

    def video(self, position: int, qid: str, key: str) -> torch.Tensor:
        where = f"{self._where(position, qid)}, key {key}"
        feats = frame_features(np.asarray(self._h5.file(self.resnet)[key]), np.asarray(self._h5.file(self.c3d)[key]),
                               where, self.dims)
        return torch.from_numpy(np.ascontiguousarray(feats[uniform_indices(len(feats), self.num_frames)]))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        row = self.table[i]
        qid = f"{row['qid']}_{row['key']}"
        item = {"qid": qid, "vid_id": row["qid"], "index": i, "answer": self.label(row),
                "vid_feats": self.video(i, row["qid"], row["key"]), "vid_lengths": torch.tensor(self.num_frames)}
        if self.task in MULTIPLE_CHOICE:
            texts = [candidate_ids(self.vocabulary, row["question"], c, self.max_len) for c in row["candidates"]]
            item["qas"] = torch.from_numpy(np.stack([ids for ids, _ in texts]))
            item["qas_lengths"] = torch.tensor([n for _, n in texts])
        else:
            ids, n = self.vocabulary.encode(row["question"], self.max_len)
            item["qns"], item["qns_lengths"] = torch.from_numpy(ids), torch.tensor(n)
        if self.task == "frameqa":
            item["type"] = row["type"]
        return item


def collate_tgifqa(items: List[dict]) -> dict:
    """Stack :class:`TGIFQAFeatures` items (ids, vid_ids and types stay lists)."""
    return stack_items(items, labels=("answer", "index"))


__all__ = ["TGIFQAFeatures", "collate_tgifqa", "validation_split", "tgifqa_vocabulary", "candidate_ids",
           "frame_features", "RESNET_FILE", "C3D_FILE", "SEP"]
