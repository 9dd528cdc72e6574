"""Batching a reader's items: tensors stacked (the ragged ones zero-padded on their last axis),
integer labels made one tensor, everything else (ids, types) kept as lists."""

from __future__ import annotations

from typing import Iterable, List

import torch


def stack_items(items: List[dict], labels: Iterable[str] = (), ragged: Iterable[str] = ()) -> dict:
    """One batch from ``items``: ``labels`` fields as a ``LongTensor``, ``ragged`` tensors padded with
    zeros to the batch's longest last axis before stacking."""
    labels, ragged = set(labels), set(ragged)
    batch = {}
    for name in items[0]:
        values = [item[name] for item in items]
        if name in ragged:
            width = max(v.shape[-1] for v in values)
            batch[name] = torch.stack([torch.nn.functional.pad(v, (0, width - v.shape[-1])) for v in values])
        elif torch.is_tensor(values[0]):
            batch[name] = torch.stack(values)
        elif name in labels:
            batch[name] = torch.tensor(values)
        else:
            batch[name] = values
    return batch


__all__ = ["stack_items"]
