"""TGIF-QA (``YunseokJANG/tgif-qa@9ecbbc7:code/gifqa``): accuracy for Action, Transition and FrameQA
(FrameQA also per answer type); Count is the mean squared error of the prediction rounded half to even
and clamped to 1..10 against ``max(answer, 1)`` (``models/count_base.py``: ``clip_by_value(round(logits),
1, 10)``; HGA's ``torch.clamp(torch.round(out), 1, 10)`` is the same; HCRN rounds halves up)."""

from __future__ import annotations

import os
from typing import Dict, Optional

from sparc.metrics.predictions import prediction_of, read_predictions, source_name


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
    source = source_name(predictions)
    preds = read_predictions(predictions)
    qids = table["qid"]
    if task == "count":
        raw = torch.tensor([float(prediction_of(preds, q, source)) for q in qids], dtype=torch.float64)
        counts = torch.clamp(torch.round(raw), 1, 10)          # round half to even, then clamp
        target = torch.tensor(table["target"], dtype=torch.float64)
        return {"mse": float(((counts - target) ** 2).mean())}
    answers = table["answer"]
    right = [prediction_of(preds, q, source) == a for q, a in zip(qids, answers)]
    result = {"accuracy": 100.0 * sum(right) / len(right)}
    if task == "frameqa":
        for code, name in FRAMEQA_TYPES.items():
            of_type = [r for r, t in zip(right, table["type"]) if t == code]
            if of_type:
                result[name] = 100.0 * sum(of_type) / len(of_type)
    return result
