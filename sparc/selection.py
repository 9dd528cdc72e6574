"""Which frames are causal: small selector values over the pure functions of :mod:`sparc.frames`.

A selector is called once per training step by the step itself, on the clean (un-augmented) batch and
priors, before any augmentation runs; techniques read the result as ``step.keep`` (``[B, T]`` bool,
padding frames never kept). Selectors are frozen dataclasses, so two of them compare by value: that
is how ``wrap`` tells whether the techniques that declare a selection agree.

- :class:`CausalFrames` -- SpARC 3.2.1: ``P[b, t, a] > threshold``, with a policy for a sample whose
  frames all fall at or below it;
- :class:`TopKFrames` -- the ``k`` frames with the highest ``P[b, t, a]``;
- :class:`SpanFrames` -- ground-truth time spans from the batch (TVQA/TVQA+, NExT-GQA);
- ``a & b`` / ``a | b`` -- :class:`Intersection` / :class:`Union` of selectors.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from sparc.frames import EMPTY_POLICIES, select_causal_frames, span_frames, top_k_frames

INTERSECTION_EMPTY = ("all", "skip")


@dataclass(frozen=True)
class SelectionInputs:
    """What a selector may read: the clean batch, its priors (None without a teacher), the hard answer
    indices ``[B]`` and the valid-frame mask ``[B, T]``."""

    batch: dict
    priors: Optional[torch.Tensor]
    answer: torch.Tensor
    valid: torch.Tensor

    @property
    def lengths(self) -> Optional[torch.Tensor]:
        return None if bool(self.valid.all()) else self.valid.sum(dim=1)

    def require_priors(self, who: str) -> torch.Tensor:
        if self.priors is None:
            raise ValueError(f"{who} selects frames from teacher priors: call the wrapped model with "
                             f"priors=store.lookup(batch['qid'])")
        return self.priors


class FrameSelector:
    """Base of every selector: ``selector(inputs) -> keep [B, T]``; ``&`` and ``|`` combine two."""

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        raise NotImplementedError

    def __and__(self, other: "FrameSelector") -> "Intersection":
        return Intersection((self, other))

    def __or__(self, other: "FrameSelector") -> "Union":
        return Union((self, other))


def _check_probability(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{who}: {name} must be a probability in [0, 1] (keep P[t, answer] > {name}), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class CausalFrames(FrameSelector):
    """``keep[b, t] = P[b, t, a[b]] > threshold`` (SpARC 3.2.1; the paper uses 0.5).

    ``empty`` decides a sample with no frame above the threshold: ``"all"`` keeps every valid frame,
    ``"top1"`` its single most confident frame, ``"skip"`` nothing (the sample gets no guided term)."""

    threshold: float = 0.5
    empty: str = "all"

    def __post_init__(self):
        object.__setattr__(self, "threshold", _check_probability("CausalFrames", "threshold", self.threshold))
        if self.empty not in EMPTY_POLICIES:
            raise ValueError(f"CausalFrames: empty must be one of {EMPTY_POLICIES}, got {self.empty!r}")

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        priors = inputs.require_priors(repr(self))
        return select_causal_frames(priors, inputs.answer, self.threshold, self.empty, inputs.lengths)


@dataclass(frozen=True)
class TopKFrames(FrameSelector):
    """The ``k`` valid frames with the highest ``P[b, t, a[b]]`` (all of them in a shorter video)."""

    k: int

    def __post_init__(self):
        k = self.k
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"TopKFrames: k must be a positive int (frames kept per sample), got {k!r}")
        object.__setattr__(self, "k", int(k))

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        priors = inputs.require_priors(repr(self))
        return top_k_frames(priors, inputs.answer, self.k, inputs.lengths)


@dataclass(frozen=True)
class SpanFrames(FrameSelector):
    """The frames whose timestamp lies in the ground-truth span ``[start, end]`` read from the batch
    (seconds; ``frame_times`` ``[T]`` or ``[B, T]``). A span that covers no frame keeps the frame
    nearest its centre."""

    start_field: str = "span_start"
    end_field: str = "span_end"
    times_field: str = "frame_times"

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        b = inputs.batch
        missing = [f for f in (self.start_field, self.end_field, self.times_field) if b.get(f) is None]
        if missing:
            raise ValueError(f"SpanFrames reads ground-truth spans from the batch, which has no "
                             f"{missing} (field: {missing[0]})")
        keep = span_frames(b[self.start_field], b[self.end_field], b[self.times_field], inputs.lengths)
        return keep.to(inputs.valid.device)


def _parts(cls, parts) -> Tuple[FrameSelector, ...]:
    parts = tuple(parts)
    for p in parts:
        if not isinstance(p, FrameSelector):
            raise TypeError(f"{cls.__name__} combines FrameSelectors, got {type(p).__name__}")
    if len(parts) < 2:
        raise ValueError(f"{cls.__name__} needs at least two selectors")
    return parts


@dataclass(frozen=True)
class Intersection(FrameSelector):
    """Frames every part keeps. A sample left with none keeps all its valid frames (``empty="all"``)
    or nothing (``"skip"``)."""

    parts: Tuple[FrameSelector, ...]
    empty: str = "all"

    def __post_init__(self):
        if self.empty not in INTERSECTION_EMPTY:
            raise ValueError(f"Intersection: empty must be one of {INTERSECTION_EMPTY}, got {self.empty!r}")
        object.__setattr__(self, "parts", _parts(Intersection, self.parts))

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        keep = inputs.valid.clone()
        for part in self.parts:
            keep &= part(inputs).to(keep.device)
        if self.empty == "all":
            keep = torch.where(keep.any(dim=1, keepdim=True), keep, inputs.valid)
        return keep


@dataclass(frozen=True)
class Union(FrameSelector):
    """Frames any part keeps."""

    parts: Tuple[FrameSelector, ...]

    def __post_init__(self):
        object.__setattr__(self, "parts", _parts(Union, self.parts))

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        keep = torch.zeros_like(inputs.valid)
        for part in self.parts:
            keep |= part(inputs).to(keep.device)
        return keep & inputs.valid
