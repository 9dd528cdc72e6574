"""MSVD-QA and MSRVTT-QA (Xu et al., "Video Question Answering via Gradually Refined Attention over
Appearance and Motion", ACM MM 2017): ``{train,val,test}_qa.json``, a JSON list of ``{"answer", "id",
"question", "video_id"}`` (MSRVTT adds ``category_id``). ``id`` is a global question id, contiguous
across the splits.

Open-ended: the answer set is a protocol, stated here and configurable. The original's
(``create_answerset``): the ``size`` = 1000 most frequent train answers; train questions whose answer is
outside the set are dropped from training (:func:`in_answer_set`); val and test keep every question,
and one whose answer is outside the set can never be predicted, so it counts as wrong. Ties in the
frequency order are broken by first appearance in train (the original left them to pandas' sort).
"""

from __future__ import annotations

import json
import os
from typing import List, Sequence, Union

PathLike = Union[str, os.PathLike]
QUESTION_WORDS = ("what", "who", "how", "when", "where")


def read_msqa_table(path: PathLike):
    """The split as a ``datasets.Dataset`` in file order, every question kept: ``qid`` (``id`` as a
    string), ``video_id``, ``question``, ``answer``, ``question_word`` (its first word, lower case) and,
    where present, ``category_id``. A malformed entry names file, position, qid and field."""
    import datasets

    with open(path) as f:
        try:
            entries = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    columns = {"qid": [], "video_id": [], "question": [], "answer": [], "question_word": []}
    with_category = bool(entries) and "category_id" in entries[0]
    if with_category:
        columns["category_id"] = []
    seen = set()
    for n, entry in enumerate(entries):
        qid = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        where = f"{path}, entry {n} (qid {qid or '?'})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: not an object")
        for field in ("id", "video_id", "question", "answer") + (("category_id",) if with_category else ()):
            if entry.get(field) in (None, ""):
                raise ValueError(f"{where}: no {field!r} (field: {field})")
        if qid in seen:
            raise ValueError(f"{where}: question id {qid} appears twice (field: id)")
        seen.add(qid)
        columns["qid"].append(qid)
        columns["video_id"].append(str(entry["video_id"]))
        columns["question"].append(str(entry["question"]))
        columns["answer"].append(str(entry["answer"]))
        columns["question_word"].append(str(entry["question"]).strip().split(" ")[0].lower())
        if with_category:
            columns["category_id"].append(int(entry["category_id"]))
    return datasets.Dataset.from_dict(columns)


def answer_set(train_answers: Sequence[str], size: int = 1000) -> List[str]:
    """The ``size`` most frequent train answers, most frequent first; ties by first appearance
    (:func:`sparc.data.answer_sets.train_answer_set`'s rule ``"top"``)."""
    from sparc.data.answer_sets import train_answer_set

    return train_answer_set(train_answers, "top", size=size)


def in_answer_set(table, answers: Sequence[str]):
    """``table`` without the questions whose answer is outside ``answers`` (the original trains only on
    those; never apply it to val or test, whose out-of-set questions must count as wrong)."""
    allowed = set(answers)
    return table.filter(lambda answer: answer in allowed, input_columns="answer")


__all__ = ["read_msqa_table", "answer_set", "in_answer_set", "QUESTION_WORDS"]
