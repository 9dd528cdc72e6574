"""AGQA 2.0 balanced (Grunde-McLaughlin et al.): ``AGQA_balanced/{train,test}_balanced.txt``, one JSON
object keyed by question id, each ``{"question", "answer", "video_id", "ans_type" ("binary" | "open"),
"global", "local", "semantic", "structural", "steps", ...}``; videos are Charades.

The train file holds ~1.6M questions: it is parsed one question at a time into an Arrow table on disk
(``datasets``, memory-mapped), never into one Python dict. AGQA is open-ended over one answer set (171
answers in MIST's split); a question whose answer is outside it counts as wrong.

There is no official validation split. :func:`validation_split` carves one from train by video, as the
baselines do (no video in both parts): a seeded permutation of the distinct video ids, its first
``fraction`` of videos held out.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]
ANSWER_TYPES = ("binary", "open")
FIELDS = ("question", "answer", "video_id", "ans_type")
EXTRA = ("semantic", "structural", "global", "local", "steps")


def iter_questions(path: PathLike, chunk_size: int = 1 << 20) -> Iterator[Tuple[str, dict]]:
    """``(qid, record)`` pairs of a top-level JSON object, decoded one value at a time from a buffer
    that holds only the part of the file not yet consumed."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buffer, pos, done = f.read(chunk_size), 0, False

        def more() -> bool:
            nonlocal buffer, pos, done
            chunk = f.read(chunk_size)
            if not chunk:
                done = True
                return False
            buffer, pos = buffer[pos:] + chunk, 0
            return True

        def skip_space():
            nonlocal pos
            while True:
                while pos < len(buffer) and buffer[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buffer) or not more():
                    return

        def decode():
            nonlocal pos
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, pos)
                    if end == len(buffer) and not done and more():   # a number may continue in the next chunk
                        continue
                    pos = end
                    return value
                except json.JSONDecodeError as e:
                    if not more():
                        raise ValueError(f"{path}: not a JSON object of questions ({e})") from None

        skip_space()
        if pos >= len(buffer) or buffer[pos] != "{":
            raise ValueError(f"{path}: expected a JSON object keyed by question id")
        pos += 1
        skip_space()
        if pos < len(buffer) and buffer[pos] == "}":
            return
        while True:
            skip_space()
            qid = decode()
            skip_space()
            if pos >= len(buffer) or buffer[pos] != ":":
                raise ValueError(f"{path}: after question id {qid!r}, expected ':'")
            pos += 1
            skip_space()
            yield str(qid), decode()
            skip_space()
            if pos < len(buffer) and buffer[pos] == ",":
                pos += 1
                continue
            if pos < len(buffer) and buffer[pos] == "}":
                return
            raise ValueError(f"{path}: after question {qid!r}, expected ',' or '}}'")


def _rows(path: str, stamp: str):
    """The table's rows (``stamp``: the file's modification time, so datasets' cache, named from these
    arguments, is rebuilt when the file changes)."""
    for qid, record in iter_questions(path):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: question {qid} is not an object")
        for field in FIELDS:
            if record.get(field) in (None, ""):
                raise ValueError(f"{path}: question {qid} has no {field!r} (field: {field})")
        if record["ans_type"] not in ANSWER_TYPES:
            raise ValueError(f"{path}: question {qid}: ans_type {record['ans_type']!r} is not one of "
                             f"{ANSWER_TYPES} (field: ans_type)")
        row = {"qid": qid, "video_id": str(record["video_id"]), "question": str(record["question"]),
               "answer": str(record["answer"]), "ans_type": record["ans_type"]}
        for field in EXTRA:
            value = record.get(field, "")
            row[field] = "|".join(map(str, value)) if isinstance(value, list) else str(value)
        yield row


def read_agqa_table(path: PathLike, cache_dir: Optional[PathLike] = None):
    """The file as a ``datasets.Dataset`` written to disk and memory-mapped, in file order, every question
    kept: ``qid``, ``video_id``, ``question``, ``answer``, ``ans_type``, and ``semantic``, ``structural``,
    ``global`` (joined by ``|``), ``local``, ``steps`` where present. A malformed record names the file,
    the question and the field."""
    import datasets

    features = datasets.Features({name: datasets.Value("string")
                                  for name in ("qid", "video_id", "question", "answer", "ans_type") + EXTRA})
    path = os.path.abspath(path)
    try:
        return datasets.Dataset.from_generator(
            _rows, features=features, cache_dir=None if cache_dir is None else str(cache_dir),
            gen_kwargs={"path": path, "stamp": str(os.path.getmtime(path))})
    except datasets.exceptions.DatasetGenerationError as e:   # datasets wraps the reader's own error
        if isinstance(e.__cause__, ValueError):
            raise e.__cause__ from None
        raise


def validation_split(table, fraction: float = 0.1, seed: int = 0):
    """(train, validation) with no video in both: a ``fraction`` of the distinct videos, chosen by a
    ``seed``-ed permutation of their sorted ids, is held out with all its questions."""
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    videos = sorted(set(table["video_id"]))
    order = np.random.default_rng(seed).permutation(len(videos))
    held = {videos[i] for i in order[:max(1, round(fraction * len(videos)))]}
    return (table.filter(lambda v: v not in held, input_columns="video_id"),
            table.filter(lambda v: v in held, input_columns="video_id"))


__all__ = ["read_agqa_table", "iter_questions", "validation_split", "ANSWER_TYPES"]
