"""TGIF-QA's four tasks in the released files (YunseokJANG/tgif-qa@9ecbbc7, ``dataset/``):
``{Train,Test}_{action,transition,count,frameqa}_question.csv``, tab-separated with a header and
standard CSV quoting (a Transition candidate ``respond "no"`` is stored quoted, its quotes doubled).

- Action / Transition: ``gif_name, question, a1..a5, answer, vid_id, key``; ``answer`` is the 0-based
  index of the correct candidate.
- Count: ``gif_name, question, answer, vid_id, key``; answers run 0, 2, 3 ... 10 (no 1). Every
  baseline trains and scores against ``max(answer, 1)``; the table keeps both.
- FrameQA: ``gif_name, question, answer, type, vid_id, key, description``; open-ended, ``type`` 0 object,
  1 number, 2 color, 3 location.

``vid_id`` (ACTION4, COUNT12, ...) is already a unique question id; ``key`` names the GIF's features.
"""

from __future__ import annotations

import csv
import os
from typing import Optional, Union

TASKS = ("action", "transition", "count", "frameqa")
FRAMEQA_TYPES = {0: "object", 1: "number", 2: "color", 3: "location"}
COLUMNS = {
    "action": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "transition": ("gif_name", "question", "a1", "a2", "a3", "a4", "a5", "answer", "vid_id", "key"),
    "count": ("gif_name", "question", "answer", "vid_id", "key"),
    "frameqa": ("gif_name", "question", "answer", "type", "vid_id", "key"),
}

PathLike = Union[str, os.PathLike]


def tgifqa_task(path: PathLike) -> str:
    """The task a released file name says (``Test_count_question.csv`` -> ``count``)."""
    name = os.path.basename(str(path)).lower()
    found = [t for t in TASKS if f"_{t}_" in name]
    if len(found) != 1:
        raise ValueError(f"{path}: cannot tell the TGIF-QA task from the file name; pass task= (one of {TASKS})")
    return found[0]


def _rows(path: PathLike, task: str):
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")     # standard quoting: "respond ""no""" -> respond "no"
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS[task] if c not in header]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} for task {task!r} (columns: {header}) (field: {missing[0]})")
        for line, row in enumerate(reader, start=2):
            yield line, row


def _int(value: str, path, line: int, qid: str, field: str, low: int, high: int) -> int:
    if value is None or not value.strip().lstrip("-").isdigit() or not low <= int(value) <= high:
        raise ValueError(f"{path}, line {line} (qid {qid}): {field} {value!r} is not an integer in {low}..{high} "
                         f"(field: {field})")
    return int(value)


def read_tgifqa_table(path: PathLike, task: Optional[str] = None):
    """The file as a ``datasets.Dataset`` in file order, every row kept: ``qid`` (= ``vid_id``),
    ``key``, ``gif_name``, ``question``; multiple choice adds ``candidates`` (5) and ``answer`` (index);
    Count ``answer`` (as released) and ``target`` (``max(answer, 1)``); FrameQA ``answer`` (word) and
    ``type`` (int). A malformed row is an error naming file, line, qid and field."""
    import datasets

    task = task or tgifqa_task(path)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    columns = {"qid": [], "key": [], "gif_name": [], "question": []}
    extra = {"action": ("candidates", "answer"), "transition": ("candidates", "answer"),
             "count": ("answer", "target"), "frameqa": ("answer", "type")}[task]
    columns.update({name: [] for name in extra})
    seen = {}
    for line, row in _rows(path, task):
        qid = row["vid_id"]
        if not qid:
            raise ValueError(f"{path}, line {line}: empty vid_id (field: vid_id)")
        if qid in seen:
            raise ValueError(f"{path}, line {line}: question {qid} also on line {seen[qid]} (field: vid_id)")
        seen[qid] = line
        if not row["key"]:
            raise ValueError(f"{path}, line {line} (qid {qid}): empty key (field: key)")
        for name in ("key", "gif_name", "question"):
            columns[name].append(row[name])
        columns["qid"].append(qid)
        if task in ("action", "transition"):
            columns["candidates"].append([row[f"a{k}"] for k in range(1, 6)])
            columns["answer"].append(_int(row["answer"], path, line, qid, "answer", 0, 4))
        elif task == "count":
            answer = _int(row["answer"], path, line, qid, "answer", 0, 10)
            columns["answer"].append(answer)
            columns["target"].append(max(answer, 1))
        else:
            columns["answer"].append(row["answer"])
            columns["type"].append(_int(row["type"], path, line, qid, "type", 0, 3))
    return datasets.Dataset.from_dict(columns)


__all__ = ["TASKS", "FRAMEQA_TYPES", "read_tgifqa_table", "tgifqa_task"]
