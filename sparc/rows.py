"""Restricting per-sample values to some batch rows (the text work a step shares between views)."""

from __future__ import annotations

import torch


def select_rows(value, rows: torch.Tensor):
    """``value`` (a tensor, or a dict/list/tuple of them, batch axis first) restricted to ``rows``."""
    if value is None:
        return None
    if torch.is_tensor(value):
        return value[rows.to(value.device)]
    if isinstance(value, dict):
        return {k: select_rows(v, rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_rows(v, rows) for v in value)
    raise TypeError(f"encode_text returns batch-first tensors (or dicts/lists of them), got {type(value).__name__}")
