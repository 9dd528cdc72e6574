"""NExT-QA in the files VGT reads (sail-sg/VGT@9715ff2, ``data/vqa_loader.py``), as batches for
``VGTAdapter``.

- Region features ``region_feat_n/acregion_8c20b_{split}.h5``: ``ids``, ``feat`` ``(videos, 8 clips, 4
  frames, 20 regions, 2048)``, ``bbox`` ``(..., 20, 4)`` absolute pixel ``xyxy``; the first ``bnum``
  regions are kept (5 for NExT-QA) and each gets VGT's box feature ``[x1/w, y1/h, x2/w, y2/h,
  (x2-x1+1)(y2-y1+1)/(w h)]`` with the CSV's width and height (320 x 240 when the CSV has none), so
  ``video_o`` is ``(8, 4, bnum, 2053)``.
- Frame features ``frame_feat/app_feat_{split}.h5``: ``ids``, ``resnet_features`` ``(videos, 8, 4, 2048)``.
- Text: each candidate as ``question + " [SEP] " + a_k`` through a BERT tokenizer (a local vocabulary),
  at most ``amax_words`` tokens, padded to the question's longest candidate; ``seq_len`` is that padded
  width for every candidate, as the original gives it, and a batch pads the tokens to its longest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from sparc.data.collate import stack_items
from sparc.data.hdf5 import LazyH5
from sparc.data.nextqa import read_nextqa_table

PathLike = Union[str, os.PathLike]
DEFAULT_SIZE = (320, 240)


def box_features(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """VGT's ``transform_bb``: ``(..., 4)`` xyxy pixels -> ``(..., 5)`` relative corners and area."""
    flat = boxes.reshape(-1, 4).astype(np.float64)
    relative = flat / np.asarray([width, height, width, height])
    area = (flat[:, 2] - flat[:, 0] + 1) * (flat[:, 3] - flat[:, 1] + 1) / (width * height)
    return np.hstack((relative, area[:, None])).reshape(boxes.shape[:-1] + (5,))


class NExTQAVGT(torch.utils.data.Dataset):
    """Item ``i`` is CSV row ``i``: ``{"question_id", "video_o", "video_f", "answer" (5, L) token ids,
    "seq_len" (5,), "answer_id", "type"}``; :func:`collate_nextqa_vgt` pads and stacks them."""

    def __init__(self, annotations_csv: PathLike, region_features: PathLike, frame_features: PathLike, tokenizer,
                 amax_words: int = 38, bnum: int = 5, cache_dir: Optional[PathLike] = None):
        self.table = read_nextqa_table(annotations_csv, cache_dir)
        self.annotations = Path(annotations_csv)
        self.region_features, self.frame_features = Path(region_features), Path(frame_features)
        self.tokenizer, self.amax_words, self.bnum = tokenizer, amax_words, bnum
        columns = self.table.column_names
        self._size = ("width" in columns and "height" in columns)
        self._h5 = LazyH5()
        for path, name in ((self.region_features, "feat"), (self.frame_features, "resnet_features")):
            index = self._ids(path)
            for row, (video, key) in enumerate(zip(self.table["video"], self.table["key"])):
                if video not in index:
                    raise ValueError(f"{self.annotations}, line {row + 2} (qid {key}): video {video} is not in "
                                     f"{path} (field: ids)")
            if self._dataset(path, name).shape[0] != len(index):
                raise ValueError(f"{path}: {len(index)} ids but {self._dataset(path, name).shape[0]} {name} rows (field: {name})")

    def __len__(self) -> int:
        return len(self.table)

    def _dataset(self, path: Path, name: str):
        return self._h5.dataset(path, name)

    def _ids(self, path: Path) -> Dict[str, int]:
        return self._h5.ids(path)

    def __getitem__(self, i: int) -> dict:
        row = self.table[int(i)]
        video = row["video"]
        n = self._ids(self.region_features)[video]
        regions = np.asarray(self._dataset(self.region_features, "feat")[n][:, :, :self.bnum], dtype=np.float32)
        boxes = np.asarray(self._dataset(self.region_features, "bbox")[n][:, :, :self.bnum])
        width, height = (float(row["width"]), float(row["height"])) if self._size else DEFAULT_SIZE
        video_o = np.concatenate([regions, box_features(boxes, width, height).astype(np.float32)], axis=-1)
        video_f = np.asarray(self._dataset(self.frame_features, "resnet_features")[self._ids(self.frame_features)[video]],
                             dtype=np.float32)
        texts = [row["question"] + " [SEP] " + row[f"a{k}"] for k in range(5)]
        tokens = self.tokenizer(texts, add_special_tokens=True, max_length=self.amax_words, padding="longest",
                                truncation=True)["input_ids"]
        answer = torch.tensor(tokens, dtype=torch.long)
        return {"question_id": row["key"], "video_o": torch.from_numpy(video_o), "video_f": torch.from_numpy(video_f),
                "answer": answer, "seq_len": torch.full((5,), answer.shape[1], dtype=torch.long),
                "answer_id": row["answer"], "type": row["type"], "index": row["row"]}


def collate_nextqa_vgt(items: List[dict]) -> dict:
    """Stack items, the candidate tokens zero-padded to the batch's longest (VGT's ``videoqa_collate_fn``)."""
    return stack_items(items, labels=("answer_id", "index"), ragged=("answer",))


__all__ = ["NExTQAVGT", "collate_nextqa_vgt", "box_features"]
