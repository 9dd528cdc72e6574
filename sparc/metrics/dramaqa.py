"""DramaQA (``DramaQAChallenge2020:code/scripts/eval_submission.py``): accuracy per difficulty
(``q_level_logic`` 1-4) and ``total`` over every question (micro, not the starter code's mean of
per-batch means)."""

from __future__ import annotations

import os
from typing import Dict, Mapping

from sparc.metrics.predictions import prediction_of, read_predictions, source_name


def dramaqa_accuracy(annotations, predictions) -> Dict[str, float]:
    """DramaQA accuracy (percent) per difficulty ``level_1`` .. ``level_4`` and ``total``.
    ``annotations``: a split JSON with ``correct_idx`` or its table
    (:func:`sparc.data.dramaqa.read_dramaqa_table`); ``predictions`` ``{qid: index}`` or the submission
    layout ``{qid: {"correct_idx": index}}``."""
    from sparc.data.dramaqa import LEVELS, read_dramaqa_table

    table = read_dramaqa_table(annotations) if isinstance(annotations, (str, os.PathLike)) else annotations
    source = source_name(predictions)
    preds = read_predictions(predictions)
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
