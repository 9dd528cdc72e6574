"""AGQA 2.0: exact-match accuracy of the predicted answer (open-ended over one answer set, so a question
whose answer is outside it is wrong), overall and by ``ans_type`` (binary / open), in percent. No
official AGQA 2.0 scoring script is public; this is the arithmetic the papers report (and AGQA-Decomp's
``compute_acc_ca_rwr.py``: ``correct = answer == prediction``)."""

from __future__ import annotations

import os
from typing import Dict

from sparc.metrics.predictions import prediction_of, read_predictions, source_name


def agqa_accuracy(annotations, predictions) -> Dict[str, float]:
    """``{"binary", "open", "total"}`` accuracy (percent). ``annotations``: a ``{split}_balanced.txt``
    or its table (:func:`sparc.data.agqa.read_agqa_table`); ``predictions`` ``{qid: answer}``."""
    from sparc.data.agqa import ANSWER_TYPES, read_agqa_table

    table = read_agqa_table(annotations) if isinstance(annotations, (str, os.PathLike)) else annotations
    source = source_name(predictions)
    preds = read_predictions(predictions)
    right = {t: [0, 0] for t in ANSWER_TYPES}
    for qid, answer, kind in zip(table["qid"], table["answer"], table["ans_type"]):
        right[kind][0] += int(str(prediction_of(preds, qid, source)) == answer)
        right[kind][1] += 1
    result = {t: 100.0 * c / n for t, (c, n) in right.items() if n}
    total = sum(n for _, n in right.values())
    result["total"] = 100.0 * sum(c for c, _ in right.values()) / total
    return result
