"""Temporal guidance (SpARC 3.2.1): guided prediction on the causal frames plus whole-video consistency."""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch

from sparc.losses import consistency_kl, guided_ce
from sparc.selection import CausalFrames, FrameSelector, SpanFrames, TopKFrames
from sparc.techniques.base import Technique

SOURCES = ("priors", "top_k", "span")
DIRECTIONS = ("guided||whole", "whole||guided")   # KL(guided || whole) is the paper's order


def frames_from_shorthand(who: str, frames: Optional[FrameSelector], source: Optional[str],
                          threshold, empty: Optional[str], k) -> Optional[FrameSelector]:
    """The selector the shorthand arguments name (None: follow the step's selection)."""
    given = {n: v for n, v in (("source", source), ("threshold", threshold), ("empty", empty), ("k", k))
             if v is not None}
    if frames is not None:
        if not isinstance(frames, FrameSelector):
            raise TypeError(f"{who}: frames must be a FrameSelector (CausalFrames, TopKFrames, SpanFrames, ...), "
                            f"got {type(frames).__name__}")
        if given:
            raise ValueError(f"{who}: give frames= or the shorthand {sorted(given)}, not both")
        return frames
    if source is not None and source not in SOURCES:
        raise ValueError(f"{who}: source must be one of {SOURCES}, got {source!r}")
    if source == "top_k":
        if k is None:
            raise ValueError(f"{who}: source='top_k' needs k")
        unused = sorted(set(given) - {"source", "k"})
        if unused:
            raise ValueError(f"{who}: {unused} are not read by source='top_k' (it keeps the k best frames)")
        return TopKFrames(k)
    if k is not None:
        raise ValueError(f"{who}: k is read only by source='top_k', got source={source!r}")
    if source == "span":
        if threshold is not None or empty is not None:
            raise ValueError(f"{who}: threshold/empty are not read by source='span' (ground-truth spans)")
        return SpanFrames()
    if source == "priors" or threshold is not None or empty is not None:
        return CausalFrames(0.5 if threshold is None else threshold, "all" if empty is None else empty)
    return None


class TemporalGuidance(Technique):
    """``L_g = CE(M(V_c, Q), A)`` and ``w_c · KL(M(V, Q), M(V_c, Q))`` (``F.kl_div`` argument order).

    ``V_c`` are the step's causal frames ``step.keep``. ``frames`` (a selector) or its shorthands pick
    them: ``threshold``/``empty`` for ``CausalFrames`` (``P[b, t, a] > threshold``, the paper),
    ``source="top_k"`` with ``k`` for ``TopKFrames``, ``source="span"`` for ``SpanFrames`` (ground-truth
    spans from the batch). Given none, it follows the step's selection (``CausalFrames(0.5)`` unless
    ``wrap(frames=...)`` or another technique says otherwise). The whole-video prediction is trained
    only through the consistency term, as in the paper; ``whole_ce_weight`` adds a plain CE on it.
    """

    answer_term = "guided"

    def __init__(self, threshold: Optional[float] = None, consistency_weight: float = 1.0, guided_weight: float = 1.0,
                 empty: Optional[str] = None, source: Optional[str] = None, k: Optional[int] = None,
                 whole_ce_weight: float = 0.0, detach_guided: bool = False,
                 direction: str = "guided||whole", frames: Optional[FrameSelector] = None, seed: int = 0):
        super().__init__(seed)
        self.frames = frames_from_shorthand("TemporalGuidance", frames, source, threshold, empty, k)
        for name, w in (("consistency_weight", consistency_weight), ("guided_weight", guided_weight),
                        ("whole_ce_weight", whole_ce_weight)):
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.consistency_weight, self.guided_weight = consistency_weight, guided_weight
        self.whole_ce_weight, self.detach_guided, self.direction = whole_ce_weight, detach_guided, direction

    @property
    def needs_frames(self) -> bool:
        return True

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        rows = step.keep.any(dim=1)              # empty="skip" rows get no guided/consistency term
        whole = step.whole().logits
        terms = {}
        if self.whole_ce_weight:
            terms["whole_ce"] = self.whole_ce_weight * guided_ce(whole, step.target)
        if not rows.any():
            zero = whole.sum() * 0.0             # keeps the graph connected for DDP
            terms["guided"], terms["consistency"] = zero, zero
            return terms
        guided = step.causal().logits
        idx = torch.nonzero(rows).squeeze(1).to(whole.device)
        terms["guided"] = self.guided_weight * guided_ce(guided[idx], step.target[idx])
        terms["consistency"] = self.consistency_weight * consistency_kl(
            whole[idx], guided[idx], direction=self.direction, detach_guided=self.detach_guided)
        return terms
