"""MSVD-QA / MSRVTT-QA (Xu et al. 2017's ``run_gra.py``): accuracy over every question of the split,
``answer_set[prediction] == answer``, so a question whose answer is outside the answer set is wrong;
per first question word as HQGA's ``eval_oe.py`` reports it (``what, who, how, when, where``)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from sparc.metrics.predictions import prediction_of, read_predictions, source_name


def msqa_accuracy(annotations, predictions, answers: Optional[List[str]] = None) -> Dict[str, float]:
    """MSVD-QA / MSRVTT-QA accuracy (percent): ``overall`` and per first question word. ``annotations``:
    a ``{split}_qa.json`` or its table (:func:`sparc.data.msqa.read_msqa_table`); ``predictions``
    ``{qid: answer word}``, or ``{qid: index}`` into ``answers`` (the answer set the model scores)."""
    from sparc.data.msqa import QUESTION_WORDS, read_msqa_table

    table = read_msqa_table(annotations) if isinstance(annotations, (str, os.PathLike)) else annotations
    source = source_name(predictions)
    preds = read_predictions(predictions)
    right = []
    for qid, answer in zip(table["qid"], table["answer"]):
        predicted = prediction_of(preds, qid, source)
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
