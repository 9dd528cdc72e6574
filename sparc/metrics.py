"""The benchmarks' official metrics, ported arithmetic for arithmetic (no benchmark code is imported).

NExT-QA (``doc-doc/NExT-QA@6b92588:eval_mc.py``): accuracy per question type, the temporal types
"previous" (TP) and "next" (TN) merged as ``Bef&Aft``, the causal / temporal / descriptive groups by
the type's first letter, and the micro average over every question. Like the official script, the
correct answer is read from the prediction file, not from the annotations. Values are percentages,
unrounded (the official script prints them to two decimals).

TGIF-QA (``YunseokJANG/tgif-qa@9ecbbc7:code/gifqa``): accuracy for Action, Transition and FrameQA
(FrameQA also per answer type); Count is the mean squared error of the prediction rounded half to even
and clamped to 1..10 against ``max(answer, 1)`` (``models/count_base.py``: ``clip_by_value(round(logits),
1, 10)``; HGA's ``torch.clamp(torch.round(out), 1, 10)`` is the same; HCRN rounds halves up).

MSVD-QA / MSRVTT-QA (Xu et al. 2017's ``run_gra.py``): accuracy over every question of the split,
``answer_set[prediction] == answer``, so a question whose answer is outside the answer set is wrong;
per first question word as HQGA's ``eval_oe.py`` reports it (``what, who, how, when, where``).

DramaQA (``DramaQAChallenge2020:code/scripts/eval_submission.py``): accuracy per difficulty
(``q_level_logic`` 1-4) and ``total`` over every question (micro, not the starter code's mean of
per-batch means).

ATP-hard: the same arithmetic on the subset of NExT-QA val that
``StanfordVL/atp-video-language``'s ``atp-hard-ct4.txt`` names by 0-based CSV row (or a list of
``video_qid`` keys); its questions are causal and temporal only, so the descriptive groups are absent.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Dict, Iterable, List, Mapping, Optional, Union

# eval_mc.py's groups in its print order, and the names it prints for them
NEXTQA_GROUPS = {"CW": "Why", "CH": "How", "TN": "Bef&Aft", "TC": "When", "DC": "Cnt", "DL": "Loc", "DO": "Other"}
NEXTQA_SUPERGROUPS = {"C": "Acc_C", "T": "Acc_T", "D": "Acc_D"}
NEXTQA_TYPES = tuple(NEXTQA_GROUPS) + ("TP",)   # TP ("previous") is counted as TN

PathOrPredictions = Union[str, os.PathLike, Mapping[str, Mapping[str, int]]]


# ---- reading the files ----------------------------------------------------------------------------

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


def _read_predictions(predictions: PathOrPredictions) -> Mapping[str, Mapping[str, int]]:
    if isinstance(predictions, (str, os.PathLike)):
        with open(predictions) as f:
            return json.load(f)
    return predictions


def _read_subset(subset) -> List[Union[int, str]]:
    """Row indices (ints) or keys (strs), from a path (one per line) or an iterable."""
    if isinstance(subset, (str, os.PathLike)):
        with open(subset) as f:
            items = [line.strip() for line in f if line.strip()]
    else:
        items = list(subset)
    return [int(x) if isinstance(x, int) or (isinstance(x, str) and x.isdigit()) else str(x) for x in items]


# ---- the arithmetic -------------------------------------------------------------------------------

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
    source = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"
    return _nextqa_groups(read_nextqa_rows(annotations_csv), _read_predictions(predictions), source)


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
    source = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"
    return _nextqa_groups(chosen, _read_predictions(predictions), source)


def _prediction(preds: Mapping, qid: str, source: str):
    if qid not in preds:
        raise ValueError(f"{source}: no prediction for question {qid}")
    value = preds[qid]
    return value["prediction"] if isinstance(value, Mapping) else value


def tgifqa_metrics(annotations, predictions, task: Optional[str] = None) -> Dict[str, float]:
    """TGIF-QA's official numbers for one task file (``Test_<task>_question.csv``, or its table from
    :func:`sparc.data.tgifqa.read_tgifqa_table`). ``predictions`` ``{vid_id: prediction}`` (or a JSON
    path; values may also be ``{"prediction": ...}``): the candidate index (Action, Transition), the
    answer word (FrameQA) or the raw count regression (Count). Returns ``{"accuracy"}`` in percent
    (FrameQA adds ``object, number, color, location``) or, for Count, ``{"mse"}``."""
    import torch

    from sparc.data.tgifqa import FRAMEQA_TYPES, read_tgifqa_table, tgifqa_task

    if isinstance(annotations, (str, os.PathLike)):
        task = task or tgifqa_task(annotations)
        table = read_tgifqa_table(annotations, task)
    else:
        table = annotations
        if task is None:
            raise ValueError("tgifqa_metrics needs task= when given a table")
    source = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"
    preds = _read_predictions(predictions)
    qids = table["qid"]
    if task == "count":
        raw = torch.tensor([float(_prediction(preds, q, source)) for q in qids], dtype=torch.float64)
        counts = torch.clamp(torch.round(raw), 1, 10)          # round half to even, then clamp
        target = torch.tensor(table["target"], dtype=torch.float64)
        return {"mse": float(((counts - target) ** 2).mean())}
    answers = table["answer"]
    right = [_prediction(preds, q, source) == a for q, a in zip(qids, answers)]
    result = {"accuracy": 100.0 * sum(right) / len(right)}
    if task == "frameqa":
        for code, name in FRAMEQA_TYPES.items():
            of_type = [r for r, t in zip(right, table["type"]) if t == code]
            if of_type:
                result[name] = 100.0 * sum(of_type) / len(of_type)
    return result


def msqa_accuracy(annotations, predictions, answers: Optional[List[str]] = None) -> Dict[str, float]:
    """MSVD-QA / MSRVTT-QA accuracy (percent): ``overall`` and per first question word. ``annotations``:
    a ``{split}_qa.json`` or its table (:func:`sparc.data.msqa.read_msqa_table`); ``predictions``
    ``{qid: answer word}``, or ``{qid: index}`` into ``answers`` (the answer set the model scores)."""
    from sparc.data.msqa import QUESTION_WORDS, read_msqa_table

    table = read_msqa_table(annotations) if isinstance(annotations, (str, os.PathLike)) else annotations
    source = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"
    preds = _read_predictions(predictions)
    right = []
    for qid, answer in zip(table["qid"], table["answer"]):
        predicted = _prediction(preds, qid, source)
        if not isinstance(predicted, str):
            if answers is None:
                raise ValueError(f"{source}: question {qid} has an index prediction; pass answers= (the answer set)")
            predicted = answers[int(predicted)]
        right.append(predicted == answer)
    result = {"overall": 100.0 * sum(right) / len(right)}
    for word in QUESTION_WORDS:
        of_word = [r for r, w in zip(right, table["question_word"]) if w == word]
        if of_word:
            result[word] = 100.0 * sum(of_word) / len(of_word)
    return result


def dramaqa_accuracy(annotations, predictions) -> Dict[str, float]:
    """DramaQA accuracy (percent) per difficulty ``level_1`` .. ``level_4`` and ``total``.
    ``annotations``: a split JSON with ``correct_idx`` or its table
    (:func:`sparc.data.dramaqa.read_dramaqa_table`); ``predictions`` ``{qid: index}`` or the submission
    layout ``{qid: {"correct_idx": index}}``."""
    from sparc.data.dramaqa import LEVELS, read_dramaqa_table

    table = read_dramaqa_table(annotations) if isinstance(annotations, (str, os.PathLike)) else annotations
    source = str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"
    preds = _read_predictions(predictions)
    right = {level: [] for level in LEVELS}
    for qid, answer, level in zip(table["qid"], table["answer"], table["level"]):
        if answer < 0:
            raise ValueError(f"question {qid} has no correct_idx (the test split is scored by the organisers)")
        value = preds.get(qid)
        if value is None:
            raise ValueError(f"{source}: no prediction for question {qid}")
        predicted = value["correct_idx"] if isinstance(value, Mapping) else value
        right[level].append(int(predicted) == answer)
    result = {f"level_{level}": 100.0 * sum(r) / len(r) for level, r in right.items() if r}
    every = [x for r in right.values() for x in r]
    result["total"] = 100.0 * sum(every) / len(every)
    return result


__all__ = ["nextqa_accuracy", "atp_hard_accuracy", "tgifqa_metrics", "msqa_accuracy", "dramaqa_accuracy",
           "read_nextqa_rows", "NEXTQA_GROUPS"]
