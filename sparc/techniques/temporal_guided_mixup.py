"""Temporal-guided mixup (SpARC A.2): mix only the causal frames of each sample with a partner's."""

from __future__ import annotations

from typing import Optional

import torch

from sparc.frames import select_causal_frames
from sparc.mixup import mixup, sample_lambda, sample_partners, temporal_guided_mixup
from sparc.techniques.base import Technique


class TemporalGuidedMixup(Technique):
    """Runs before every view: rewrites the batch, the targets (soft) and the priors of the step.

    λ ~ Beta(alpha, beta) per batch (SpARC Table 6: α = β = 0.1), partners a random permutation.
    The causal frames are those of the step's selection: TemporalGuidance's when it is wrapped too
    (``threshold``/``empty`` left at None follow it), else this technique's own (default 0.5, "all").
    """

    augments = True
    selects_frames = True

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, align: str = "causal", candidates: str = "concat",
                 threshold: Optional[float] = None, empty: Optional[str] = None, seed: int = 0):
        super().__init__(seed)
        self.alpha, self.beta, self.align, self.candidates = alpha, beta, align, candidates
        self.threshold, self.empty = threshold, empty

    def select(self, step) -> torch.Tensor:
        valid = step.valid
        lengths = None if bool(valid.all()) else valid.sum(dim=1)
        priors = step.require_priors("TemporalGuidedMixup")
        threshold = 0.5 if self.threshold is None else self.threshold
        return select_causal_frames(priors, step.answer, threshold, self.empty or "all", lengths)

    def _draw(self, batch_size: int):
        return sample_lambda(self.alpha, self.beta, self.generator), sample_partners(batch_size, self.generator)

    def augment(self, step) -> None:
        lam, perm = self._draw(step.answer.shape[0])
        mixed = temporal_guided_mixup(
            step.batch, temporal=step.adapter.temporal, keep=step.keep, answer=step.answer, lam=lam,
            perm=perm.to(step.answer.device), num_candidates=step.num_candidates,
            candidate=step.adapter.candidate, question=step.adapter.question, priors=step.priors,
            align=self.align, candidates=self.candidates, open_ended=step.adapter.open_ended)
        apply_mixed(step, mixed)


class Mixup(TemporalGuidedMixup):
    """Vanilla mixup (SpARC's "normal" augmentation): every frame is mixed, position-aligned."""

    selects_frames = False

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, candidates: str = "concat", seed: int = 0):
        super().__init__(alpha, beta, align="position", candidates=candidates, seed=seed)

    def augment(self, step) -> None:
        lam, perm = self._draw(step.answer.shape[0])
        mixed = mixup(
            step.batch, temporal=step.adapter.temporal, answer=step.answer, lam=lam,
            perm=perm.to(step.answer.device), num_candidates=step.num_candidates, valid=step.valid,
            candidate=step.adapter.candidate, question=step.adapter.question, priors=step.priors,
            candidates=self.candidates, open_ended=step.adapter.open_ended)
        apply_mixed(step, mixed)


def apply_mixed(step, mixed) -> None:
    """Make the mixed batch the step's batch: later views and techniques see only the augmented data."""
    step.batch = mixed.batch
    step.target = mixed.target
    step.priors = mixed.priors
    step.num_candidates = mixed.target.shape[1]
