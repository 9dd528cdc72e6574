"""Which frames are causal: small selector values over the pure functions of :mod:`sparc.frames`.

A selector is called once per training step by the step itself, on the clean (un-augmented) batch and
priors, before any augmentation runs; techniques read the result as ``step.keep`` (``[B, T]`` bool,
padding frames never kept). Selectors are frozen dataclasses, so two of them compare by value: that
is how ``wrap`` tells whether the techniques that declare a selection agree.

- :class:`CausalFrames` -- SpARC 3.2.1: ``P[b, t, a] > threshold``, with a policy for a sample whose
  frames all fall at or below it;
- :class:`TopKFrames` -- the ``k`` frames with the highest ``P[b, t, a]``;
- :class:`SpanFrames` -- ground-truth time spans from the batch (TVQA/TVQA+, NExT-GQA), in seconds
  against per-frame times, or already as frame positions (:data:`STAGE_SPANS`: STAGE's labels);
- ``a & b`` / ``a | b`` -- :class:`Intersection` / :class:`Union` of selectors;
- :func:`frames_choice` -- the selections a recipe or the demo names: ``teacher``, ``gt``,
  ``teacher&gt``, ``teacher|gt`` (pseudo against real causal frames), and :func:`declare_frames`, which
  points techniques built for the teacher's frames at another selection.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterable, Optional, Tuple

import torch

from sparc.frames import EMPTY_POLICIES, select_causal_frames, span_frames, span_position_frames, top_k_frames

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
    """The frames inside the ground-truth span ``[start, end]`` read from the batch.

    With ``times_field`` (the default), start and end are seconds and a frame is inside when its
    timestamp (``frame_times`` ``[T]`` or ``[B, T]``) lies in the span; a span that covers no frame
    keeps the frame nearest its centre. With ``times_field=None``, start and end are already frame
    positions (0-indexed, end inclusive), as STAGE's ``ts_label_st`` / ``ts_label_ed`` are
    (:data:`STAGE_SPANS`). ``missing_field`` names a ``[B]`` bool flag of rows without an annotated
    span (TVQA's ``ts_missing``, whose label is a stand-in): they keep every real frame, as a teacher
    with no frame above its threshold does (``CausalFrames(empty="all")``)."""

    start_field: str = "span_start"
    end_field: str = "span_end"
    times_field: Optional[str] = "frame_times"
    missing_field: Optional[str] = None

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        b = inputs.batch
        fields = [f for f in (self.start_field, self.end_field, self.times_field) if f is not None]
        missing = [f for f in fields if b.get(f) is None]
        if missing:
            raise ValueError(f"SpanFrames reads ground-truth spans from the batch, which has no "
                             f"{missing} (field: {missing[0]})")
        if self.times_field is None:
            try:
                keep = span_position_frames(b[self.start_field], b[self.end_field], inputs.valid.shape[1],
                                            inputs.valid.sum(dim=1))
            except ValueError as e:
                raise ValueError(f"SpanFrames: {e} (fields: {self.start_field}, {self.end_field})") from None
        else:
            keep = span_frames(b[self.start_field], b[self.end_field], b[self.times_field], inputs.lengths)
        keep = keep.to(inputs.valid.device)
        if self.missing_field is not None and b.get(self.missing_field) is not None:
            unannotated = torch.as_tensor(b[self.missing_field], dtype=torch.bool).reshape(-1).to(keep.device)
            keep = torch.where(unannotated[:, None], inputs.valid, keep)
        return keep & inputs.valid


# STAGE's span labels as every STAGE batch carries them (the TVQA / TVQA+ readers of
# sparc.data.tvqa_stage, the synthetic benchmark's STAGE batches): frame positions, the labels
# STAGE's own span loss trains on, with TVQA's unannotated spans flagged by ts_missing.
STAGE_SPANS = SpanFrames("ts_label_st", "ts_label_ed", times_field=None, missing_field="ts_missing")


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
    """Frames every part keeps. A sample left with none keeps all its valid frames (``empty="all"``),
    nothing (``"skip"``), or, given ``fallback`` (a selector), the frames that one keeps."""

    parts: Tuple[FrameSelector, ...]
    empty: str = "all"
    fallback: Optional[FrameSelector] = None

    def __post_init__(self):
        if self.empty not in INTERSECTION_EMPTY:
            raise ValueError(f"Intersection: empty must be one of {INTERSECTION_EMPTY}, got {self.empty!r}")
        if self.fallback is not None and not isinstance(self.fallback, FrameSelector):
            raise TypeError(f"Intersection: fallback must be a FrameSelector, got {type(self.fallback).__name__}")
        object.__setattr__(self, "parts", _parts(Intersection, self.parts))

    def __call__(self, inputs: SelectionInputs) -> torch.Tensor:
        keep = inputs.valid.clone()
        for part in self.parts:
            keep &= part(inputs).to(keep.device)
        none = ~keep.any(dim=1, keepdim=True)
        if self.fallback is not None:
            keep = torch.where(none, self.fallback(inputs).to(keep.device) & inputs.valid, keep)
        elif self.empty == "all":
            keep = torch.where(none, inputs.valid, keep)
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


# ---- named selections: pseudo against real causal frames -------------------------------------------

FRAME_CHOICES = ("teacher", "gt", "teacher&gt", "teacher|gt")


def frames_choice(choice: str, threshold: float = 0.5, gt: FrameSelector = STAGE_SPANS) -> FrameSelector:
    """The selector a name gives: ``teacher`` the teacher's causal frames ``CausalFrames(threshold)``
    (SpARC's, with its default fallback to every frame); ``gt`` the ground-truth span ``gt``;
    ``teacher&gt`` the teacher's frames inside the span and ``teacher|gt`` the span plus the teacher's
    frames. In the combinations the teacher contributes only the frames above its threshold (``empty=
    "skip"``), and the annotation is what a sample falls back on: where the teacher has no frame inside
    the span (none at all, or only outside it), the intersection is the span; where it has none, the
    union is the span."""
    if choice not in FRAME_CHOICES:
        raise ValueError(f"frames must be one of {FRAME_CHOICES}, got {choice!r}")
    if choice == "teacher":
        return CausalFrames(threshold)
    if choice == "gt":
        return gt
    own = CausalFrames(threshold, "skip")
    return Intersection((own, gt), fallback=gt) if choice == "teacher&gt" else own | gt


def declare_frames(techniques: Iterable, selector: FrameSelector, replacing: FrameSelector) -> list:
    """``techniques`` (a list, changed in place and returned) with every declaration of ``replacing``
    (the selection they were built with, e.g. ``CausalFrames(threshold)``) made ``selector``: a recipe
    builds its techniques for the teacher's frames and trains them on another selection. Other
    declarations are left alone (``wrap`` reports any disagreement with the step's selection); pass
    ``selector`` to ``wrap(frames=...)`` too, for the techniques that follow the step's selection."""
    if not isinstance(selector, FrameSelector):
        raise TypeError(f"declare_frames: selector must be a FrameSelector, got {type(selector).__name__}")
    techniques = list(techniques)
    for t in techniques:
        if getattr(t, "frames", None) == replacing:
            t.frames = selector
    return techniques
