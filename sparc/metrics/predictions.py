"""Reading a benchmark's predictions: a JSON file or a dict, and one question's predicted value."""

from __future__ import annotations

import json
import os
from typing import Mapping


def source_name(predictions) -> str:
    """How an error names the predictions: the file, or "predictions" for a dict."""
    return str(predictions) if isinstance(predictions, (str, os.PathLike)) else "predictions"


def read_predictions(predictions) -> Mapping:
    """A JSON file of predictions, or the dict itself."""
    if isinstance(predictions, (str, os.PathLike)):
        with open(predictions) as f:
            return json.load(f)
    return predictions


def prediction_of(preds: Mapping, qid: str, source: str):
    """The prediction for ``qid``: the value, or its ``"prediction"`` entry; an error names the question."""
    if qid not in preds:
        raise ValueError(f"{source}: no prediction for question {qid}")
    value = preds[qid]
    return value["prediction"] if isinstance(value, Mapping) else value
