"""The two result types every layer speaks: what a backbone returns, and what a training step returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

# Where a ModelOutput field keeps its time axis, and what a frame a subset view did not show holds
# there: a span logit of -inf is a start/end probability of 0, an attention weight of 0 attends nothing.
TIME_AXIS = {"span_logits": -1, "attention": 2}
UNSEEN = {"span_logits": float("-inf"), "attention": 0.0}
FIELDS = ("logits", "span_logits", "attention", "hypothesis")


@dataclass
class ModelOutput:
    """A backbone's forward, as an adapter reports it.

    ``logits`` ``[B, C]`` (C candidates, or the open-ended answer set); the optional fields serve the
    STAGE-style techniques: ``span_logits`` (start, end) per hypothesis, ``[B, C, T]`` each (for a
    ``[B, T]`` span loss take the correct hypothesis' row), ``attention`` over regions (STAGE:
    ``[B, C, T, L, R]``, per hypothesis token), ``hypothesis`` ``[B, C, D]`` per-candidate
    representations for contrastive masking.

    A view of a training step (``step.view``) always reports its temporal fields over the video's T
    frames, whatever the subset mode ran: the frames it did not show hold :data:`UNSEEN` (-inf span
    logits, 0 attention), and ``frames`` ``[B, T]`` says which frames it showed.
    """

    logits: torch.Tensor
    span_logits: Optional[Any] = None
    attention: Optional[torch.Tensor] = None
    hypothesis: Optional[torch.Tensor] = None
    frames: Optional[torch.Tensor] = None


@dataclass
class StepOutput:
    """A training forward of a wrapped model: the total loss, its named weighted terms, the
    whole-video logits, and the causal-frame mask the step used (None when nothing selected frames)."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    keep: Optional[torch.Tensor] = None


# ---- laying a subset view's output out over the video's frames ----------------------------------

def _map(value, fn):
    """``fn`` on a tensor, or on each tensor of a tuple/list (STAGE's (start, end) span logits)."""
    if value is None:
        return None
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map(v, fn) for v in value)
    raise TypeError(f"a ModelOutput field holds tensors or tuples of tensors, got {type(value).__name__}")


def _along(t: torch.Tensor, axis: int, x: torch.Tensor) -> torch.Tensor:
    """``x`` ``[b, n]`` viewed to broadcast against ``t`` with n on ``axis`` and b on axis 0."""
    shape = [1] * t.dim()
    shape[0], shape[axis] = x.shape[0], x.shape[1]
    return x.to(t.device).view(shape).expand_as(t)


def to_video_frames(out: ModelOutput, keep: torch.Tensor, positions: torch.Tensor, shown: torch.Tensor,
                    where: str = "subset") -> ModelOutput:
    """A subset forward's output with its temporal fields laid over the video's ``T = keep.shape[1]``
    frames. Its time step j showed frame ``positions[b, j]`` when ``shown[b, j]`` (``[b, n]`` each;
    identity positions in mask mode, the kept frames in order for a sliced or gathered input)."""
    T = keep.shape[1]

    def place(name):
        axis, fill = TIME_AXIS[name], UNSEEN[name]

        def one(t):
            ax = axis % t.dim()
            if t.dim() < 2 or t.shape[0] != keep.shape[0] or t.shape[ax] != positions.shape[1]:
                raise ValueError(f"the {where} forward returned {name} of shape {tuple(t.shape)}: expected the "
                                 f"batch ({keep.shape[0]}) on axis 0 and the {positions.shape[1]} frames it was shown "
                                 f"on axis {axis} (field: {name})")
            shown_t = _along(t, ax, shown)
            values = t.masked_fill(~shown_t, fill)
            size = list(t.shape)
            size[ax] = T
            canvas = t.new_full(size, fill)
            index = _along(values, ax, positions.long())
            return canvas.scatter(ax, index, values)
        return one

    fields = {name: _map(getattr(out, name), place(name)) for name in TIME_AXIS}
    return ModelOutput(logits=out.logits, hypothesis=out.hypothesis, frames=keep, **fields)


def gather_positions(keep: torch.Tensor, width: int):
    """For an input holding each row's kept frames first (``sparc.frames.gather_kept``), padded to
    ``width``: the frame each time step shows and whether it is a real (kept) one, ``[b, width]`` each."""
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    shown = torch.arange(width, device=keep.device)[None, :] < keep.sum(dim=1, keepdim=True)
    return order, shown


def scatter_rows(parts, batch_size: int, keep: torch.Tensor) -> ModelOutput:
    """Groups of rows ``[(rows, ModelOutput), ...]`` (each already over the video's frames) back into
    one output in batch order. A field is kept when every group returned it."""
    def merge(values):
        if any(v is None for v in values):
            return None
        first = values[0]
        if isinstance(first, (tuple, list)):
            return type(first)(merge([v[i] for v in values]) for i in range(len(first)))
        canvas = first.new_zeros((batch_size,) + tuple(first.shape[1:]))
        for (rows, _), v in zip(parts, values):
            if tuple(v.shape[1:]) != tuple(first.shape[1:]):
                raise ValueError(f"bucket groups returned fields of different shapes {tuple(first.shape)} and "
                                 f"{tuple(v.shape)}: the model's outputs must not depend on the number of frames")
            canvas = canvas.index_copy(0, rows.to(canvas.device), v.to(canvas.dtype))
        return canvas

    fields = {name: merge([getattr(out, name) for _, out in parts]) for name in FIELDS}
    return ModelOutput(frames=keep, **fields)
