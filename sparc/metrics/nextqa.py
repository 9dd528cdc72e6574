"""NExT-QA (``doc-doc/NExT-QA@6b92588:eval_mc.py``) and ATP-hard.

NExT-QA: accuracy per question type, the temporal types "previous" (TP) and "next" (TN) merged as
``Bef&Aft``, the causal / temporal / descriptive groups by the type's first letter, and the micro average
over every question. Like the official script, the correct answer is read from the prediction file, not
from the annotations. Values are percentages, unrounded (the official script prints two decimals).

ATP-hard: the same arithmetic on the subset of NExT-QA val that ``StanfordVL/atp-video-language``'s
``atp-hard-ct4.txt`` names by 0-based CSV row (or a list of ``video_qid`` keys); its questions are
causal and temporal only, so the descriptive groups are absent.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, Iterable, List, Mapping, Union

from sparc.metrics.predictions import read_predictions, source_name

# eval_mc.py's groups in its print order, and the names it prints for them
NEXTQA_GROUPS = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc", "DO": "Other"}
NEXTQA_SUPERGROUPS = {"C": "Acc_C", "T": "Acc_T", "D": "Acc_D"}
NEXTQA_TYPES = tuple(NEXTQA_GROUPS) + ("TP",)   # TP ("previous") is counted as TN

PathOrPredictions = Union[str, os.PathLike, Mapping[str, Mapping[str, int]]]


def read_nextqa_rows(annotations_csv) -> List[dict]:
    """The rows of a NExT-QA annotation CSV in file order, each with its official key
    ``f"{video}_{qid}"`` under ``"key"`` (the ``video`` column, or ``video_id`` as VGT's CSVs name it)."""
    with open(annotations_csv, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        video = "video" if "video" in columns else "video_id" if "video_id" in columns else None
        missing = [c for c in ("qid", "type") if c not in columns] + ([] if video else ["video"])
        if missing:
            raise ValueError(f"{annotations_csv}: no column {missing[0]!r} (columns: {columns})")
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["type"] not in NEXTQA_TYPES:
                raise ValueError(f"{annotations_csv}, line {line} (qid {row[video]}_{row['qid']}): unknown question "
                                 f"type {row['type']!r}; expected one of {NEXTQA_TYPES} (field: type)")
            rows.append({**row, "key": f"{row[video]}_{row['qid']}", "line": line})
    return rows


def _read_subset(subset) -> List[Union[int, str]]:
    """Row indices (ints) or keys (strs), from a path (one per line) or an iterable."""
    if isinstance(subset, (str, os.PathLike)):
        with open(subset) as f:
            items = [line.strip() for line in f if line.strip()]
    else:
        items = list(subset)
    return [int(x) if isinstance(x, int) or (isinstance(x, str) and x.isdigit()) else str(x) for x in items]


def _nextqa_groups(rows: Iterable[dict], preds: Mapping, source: str) -> Dict[str, float]:
    correct = {g: 0 for g in NEXTQA_GROUPS}
    count = {g: 0 for g in NEXTQA_GROUPS}
    for row in rows:
        group = "TN" if row["type"] == "TP" else row["type"]
        entry = preds.get(row["key"])
        if entry is None:
            raise ValueError(f"{source}: no prediction for question {row['key']} (annotations line {row['line']})")
        for field in ("prediction", "answer"):
            if field not in entry:
                raise ValueError(f"{source}: question {row['key']} has no {field!r} (field: {field})")
        count[group] += 1
        correct[group] += int(entry["answer"] == entry["prediction"])
    result = {}
    for group, name in NEXTQA_GROUPS.items():
        if count[group]:
            result[name] = 100.0 * correct[group] / count[group]
    for letter, name in NEXTQA_SUPERGROUPS.items():
        n = sum(count[g] for g in NEXTQA_GROUPS if g[0] == letter)
        if n:
            result[name] = 100.0 * sum(correct[g] for g in NEXTQA_GROUPS if g[0] == letter) / n
    total = sum(count.values())
    if not total:
        raise ValueError(f"{source}: no question to evaluate")
    result["Acc"] = 100.0 * sum(correct.values()) / total
    return result


def nextqa_accuracy(annotations_csv, predictions: PathOrPredictions) -> Dict[str, float]:
    """NExT-QA multiple-choice accuracy as ``eval_mc.py`` computes it, keyed as it prints:
    ``Why, How, Bef&Aft, When, Cnt, Loc, Other, Acc_C, Acc_T, Acc_D, Acc`` (percent).

    ``predictions``: the official result file (JSON) or a dict ``{"<video>_<qid>": {"prediction": int,
    "answer": int}}``. Every question of the annotations must have a prediction."""
    source = source_name(predictions)
    return _nextqa_groups(read_nextqa_rows(annotations_csv), read_predictions(predictions), source)


def atp_hard_accuracy(annotations_csv, predictions: PathOrPredictions, subset) -> Dict[str, float]:
    """NExT-QA's accuracy on the ATP-hard subset of val (or any subset): ``subset`` is the public
    ``atp-hard-ct4.txt`` (0-based row indices into ``annotations_csv``, the first row after the
    header being 0), or an iterable of row indices or ``video_qid`` keys. Groups without a question
    are left out (ATP-hard has no descriptive ones), so the C/T breakdown is ``Acc_C``/``Acc_T``."""
    rows = read_nextqa_rows(annotations_csv)
    by_key = {row["key"]: row for row in rows}
    chosen, seen = [], set()
    for item in _read_subset(subset):
        if isinstance(item, int):
            if not 0 <= item < len(rows):
                raise ValueError(f"subset: row index {item} is outside {annotations_csv} (rows 0..{len(rows) - 1})")
            row = rows[item]
        else:
            row = by_key.get(item)
            if row is None:
                raise ValueError(f"subset: question {item} is not in {annotations_csv}")
        if row["key"] in seen:
            raise ValueError(f"subset: question {row['key']} is listed twice")
        seen.add(row["key"])
        chosen.append(row)
    source = source_name(predictions)
    return _nextqa_groups(chosen, read_predictions(predictions), source)
