"""Temporal guidance (SpARC 3.2.1): guided prediction on the causal frames plus whole-video consistency."""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch

from sparc.frames import EMPTY_POLICIES, select_causal_frames, span_frames, top_k_frames
from sparc.losses import consistency_kl, guided_ce
from sparc.techniques.base import Technique

SOURCES = ("priors", "top_k", "span")
DIRECTIONS = ("guided||whole", "whole||guided")   # KL(guided || whole) is the paper's order


class TemporalGuidance(Technique):
    """``L_g = CE(M(V_c, Q), A)`` and ``w_c · KL(M(V, Q), M(V_c, Q))`` (``F.kl_div`` argument order).

    ``source`` picks the causal frames: ``"priors"`` (``P[b, t, a] > threshold``, the paper),
    ``"top_k"`` (the k frames with the highest ``P[b, t, a]``) or ``"span"`` (ground-truth time spans
    from the batch fields ``span_start``, ``span_end``, ``frame_times``). The whole-video prediction
    is trained only through the consistency term, as in the paper; ``whole_ce_weight`` adds a plain
    CE on it.
    """

    replaces_answer_loss = True
    selects_frames = True

    def __init__(self, threshold: float = 0.5, consistency_weight: float = 1.0, guided_weight: float = 1.0,
                 empty: str = "all", source: str = "priors", k: Optional[int] = None,
                 whole_ce_weight: float = 0.0, detach_guided: bool = False,
                 direction: str = "guided||whole", seed: int = 0):
        super().__init__(seed)
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "top_k" and not k:
            raise ValueError("source='top_k' needs k")
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
            raise ValueError(f"k must be a positive int (frames kept by source='top_k'), got {k!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1] (keep P[t, answer] > threshold), got {threshold!r}")
        for name, w in (("consistency_weight", consistency_weight), ("guided_weight", guided_weight),
                        ("whole_ce_weight", whole_ce_weight)):
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.threshold, self.empty, self.source, self.k = threshold, empty, source, k
        self.consistency_weight, self.guided_weight = consistency_weight, guided_weight
        self.whole_ce_weight, self.detach_guided, self.direction = whole_ce_weight, detach_guided, direction

    def select(self, step) -> torch.Tensor:
        lengths = None
        valid = step.valid
        if not bool(valid.all()):
            lengths = valid.sum(dim=1)
        if self.source == "priors":
            priors = step.require_priors("TemporalGuidance(source='priors')")
            return select_causal_frames(priors, step.answer, self.threshold, self.empty, lengths)
        if self.source == "top_k":
            priors = step.require_priors("TemporalGuidance(source='top_k')")
            return top_k_frames(priors, step.answer, self.k, lengths)
        b = step.batch
        return span_frames(b["span_start"], b["span_end"], b["frame_times"], lengths).to(valid.device)

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
        guided = step.causal()
        idx = torch.nonzero(rows).squeeze(1).to(whole.device)
        terms["guided"] = self.guided_weight * guided_ce(guided[idx], step.target[idx])
        terms["consistency"] = self.consistency_weight * consistency_kl(
            whole[idx], guided[idx], direction=self.direction, detach_guided=self.detach_guided)
        return terms
