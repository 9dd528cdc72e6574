"""DramaQA (Choi et al., "DramaQA: Character-Centered Video Story Understanding with Hierarchical QA",
AAAI 2021): ``AnotherMissOhQA_{train,val,test}_set.json``, a JSON list of questions ``{"qid", "que",
"answers" (5), "correct_idx" (not in test), "q_level_logic" (1-4), "q_level_mem", "vid",
"shot_contained", ...}``. ``vid`` is ``AnotherMissOh{episode}_{scene}_{shot}``; scene-level questions
(difficulty 3-4) use shot ``0000``.
"""

from __future__ import annotations

import json
import os
from typing import Union

PathLike = Union[str, os.PathLike]
LEVELS = (1, 2, 3, 4)
CANDIDATES = 5


def read_dramaqa_table(path: PathLike):
    """The split as a ``datasets.Dataset`` in file order, every question kept: ``qid`` (string),
    ``vid``, ``question``, ``candidates`` (5), ``answer`` (``correct_idx``; -1 in the test split, which
    has none), ``level`` (``q_level_logic``), ``memory_level`` (``q_level_mem``, -1 when absent)."""
    import datasets

    with open(path) as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(entries).__name__}")
    columns = {k: [] for k in ("qid", "vid", "question", "candidates", "answer", "level", "memory_level")}
    seen = set()
    for n, e in enumerate(entries):
        qid = str(e.get("qid", "")) if isinstance(e, dict) else ""
        where = f"{path}, entry {n} (qid {qid or '?'})"
        for field in ("qid", "que", "answers", "q_level_logic", "vid"):
            if not isinstance(e, dict) or e.get(field) in (None, ""):
                raise ValueError(f"{where}: no {field!r} (field: {field})")
        if qid in seen:
            raise ValueError(f"{where}: question id {qid} appears twice (field: qid)")
        seen.add(qid)
        if not isinstance(e["answers"], list) or len(e["answers"]) != CANDIDATES:
            raise ValueError(f"{where}: answers must be a list of {CANDIDATES} candidates (field: answers)")
        level = e["q_level_logic"]
        if level not in LEVELS:
            raise ValueError(f"{where}: q_level_logic {level!r} is not one of {LEVELS} (field: q_level_logic)")
        answer = e.get("correct_idx", -1)
        if answer != -1 and answer not in range(CANDIDATES):
            raise ValueError(f"{where}: correct_idx {answer!r} is not a candidate index (field: correct_idx)")
        columns["qid"].append(qid)
        columns["vid"].append(str(e["vid"]))
        columns["question"].append(str(e["que"]))
        columns["candidates"].append([str(a) for a in e["answers"]])
        columns["answer"].append(int(answer))
        columns["level"].append(int(level))
        columns["memory_level"].append(int(e.get("q_level_mem", -1)))
    return datasets.Dataset.from_dict(columns)


__all__ = ["read_dramaqa_table", "LEVELS"]
