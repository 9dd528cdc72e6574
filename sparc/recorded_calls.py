"""Constructor calls recorded as text in a fixture's ``config.json``
(``"EncoderRNN.EncoderVidHGA(dim_vid=4096, rnn_cell='gru')"``), read without evaluating them: the
reference models are rebuilt from what the original code was called with."""

from __future__ import annotations

import ast
from typing import Any, Dict, Tuple

__all__ = ["Name", "check_callee", "parse_call"]


class Name(str):
    """A bare identifier in a recorded constructor call (``vid_encoder``, ``cpu``)."""


def parse_call(source: str) -> Tuple[str, list, Dict[str, Any]]:
    """Parse a recorded call such as ``"EncoderRNN.EncoderVidHGA(dim_vid=4096, rnn_cell='gru')"``
    into (callee, args, kwargs). Arguments must be literals or bare names (returned as
    :class:`Name`); nothing is evaluated."""
    node = ast.parse(source.strip(), mode="eval").body
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a constructor call: {source!r}")

    def value(arg: ast.expr):
        if isinstance(arg, ast.Name):
            return Name(arg.id)
        return ast.literal_eval(arg)

    args = [value(a) for a in node.args]
    kwargs = {kw.arg: value(kw.value) for kw in node.keywords if kw.arg is not None}
    return ast.unparse(node.func), args, kwargs


def check_callee(callee: str, expected: str) -> None:
    """``callee`` (``"module.Class"``) names the class ``expected``; else a ``ValueError``."""
    if callee.split(".")[-1] != expected:
        raise ValueError(f"config.json builds {callee!r}; expected {expected}")
