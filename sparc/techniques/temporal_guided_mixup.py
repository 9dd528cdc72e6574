"""Temporal-guided mixup (SpARC A.2): mix only the causal frames of each sample with a partner's."""

from __future__ import annotations

import math
from typing import Optional

import torch

from sparc.frames import EMPTY_POLICIES, select_causal_frames
from sparc.mixup import (ALIGN_MODES, CANDIDATE_MODES, mixup, resolve_candidates, sample_lambda, sample_partners,
                         temporal_guided_mixup)
from sparc.techniques.base import Technique


def _check_shape_param(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive number (λ ~ Beta(alpha, beta)), got {value!r}")
    return float(value)


def _check_candidates(who: str, candidates) -> str:
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f"{who}: candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
    return candidates


class TemporalGuidedMixup(Technique):
    """Runs before every view: rewrites the batch, the targets (soft) and the priors of the step.

    λ ~ Beta(alpha, beta) per batch (SpARC Table 6: α = β = 0.1), partners a random permutation.
    The causal frames are those of the step's selection: TemporalGuidance's when it is wrapped too
    (``threshold``/``empty`` left at None follow it), else this technique's own (default 0.5, "all").

    ``candidates`` (multiple choice) follows what the adapter can express, decided once when ``wrap``
    binds the technique to the adapter: ``"auto"`` (default) is EIGV's ``"concat"`` (the model scores
    the 2C candidates [own, partner's]) when the adapter declares a candidate field
    (``adapter.candidate``), else ``"pairwise"`` label mixing over the model's own C candidates
    (``λ·onehot(a) + (1-λ)·onehot(a_π)``; declared candidate fields are mixed k with k). An explicit
    ``"concat"`` with an adapter that declares no candidate field is an error at ``wrap`` time.
    Open-ended adapters mix the question fields instead.
    """

    augments = True
    selects_frames = True

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, align: str = "causal", candidates: str = "auto",
                 threshold: Optional[float] = None, empty: Optional[str] = None, seed: int = 0):
        super().__init__(seed)
        who = type(self).__name__
        self.alpha = _check_shape_param(who, "alpha", alpha)
        self.beta = _check_shape_param(who, "beta", beta)
        if align not in ALIGN_MODES:
            raise ValueError(f"{who}: align must be one of {ALIGN_MODES}, got {align!r}")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0.0 <= threshold <= 1.0):
            raise ValueError(f"{who}: threshold must be None (follow TemporalGuidance) or in [0, 1], got {threshold!r}")
        if empty is not None and empty not in EMPTY_POLICIES:
            raise ValueError(f"{who}: empty must be None or one of {EMPTY_POLICIES}, got {empty!r}")
        self.align, self.candidates = align, _check_candidates(who, candidates)
        self.threshold, self.empty = threshold, empty
        self.candidate_mode: Optional[str] = None   # "concat" / "pairwise", fixed by bind()

    def bind(self, adapter) -> None:
        """Fix the candidate mode for ``adapter`` (``wrap`` calls this; a bad pairing fails here, not mid-step)."""
        if getattr(adapter, "open_ended", False):
            self.candidate_mode = "pairwise"        # open-ended: the question fields are mixed
            return
        self.candidate_mode = resolve_candidates(
            self.candidates, getattr(adapter, "candidate", {}),
            who=f"{type(self).__name__}(candidates={self.candidates!r})", adapter_name=type(adapter).__name__)

    def _mode(self, step) -> str:
        if self.candidate_mode is None:             # used without wrap(): bind to the step's adapter now
            self.bind(step.adapter)
        return self.candidate_mode

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
            align=self.align, candidates=self._mode(step), open_ended=step.adapter.open_ended)
        apply_mixed(step, mixed)


class Mixup(TemporalGuidedMixup):
    """Vanilla mixup (SpARC's "normal" augmentation): every frame is mixed, position-aligned."""

    selects_frames = False

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, candidates: str = "auto", seed: int = 0):
        super().__init__(alpha, beta, align="position", candidates=candidates, seed=seed)

    def augment(self, step) -> None:
        if step.num_candidates <= 0:
            raise ValueError("Mixup needs the number of candidates C for its soft labels: pass priors, declare a "
                             "candidate field on the adapter, or give the adapter num_answers")
        lam, perm = self._draw(step.answer.shape[0])
        mixed = mixup(
            step.batch, temporal=step.adapter.temporal, answer=step.answer, lam=lam,
            perm=perm.to(step.answer.device), num_candidates=step.num_candidates, valid=step.valid,
            candidate=step.adapter.candidate, question=step.adapter.question, priors=step.priors,
            candidates=self._mode(step), open_ended=step.adapter.open_ended)
        apply_mixed(step, mixed)


def apply_mixed(step, mixed) -> None:
    """Make the mixed batch the step's batch: later views and techniques see only the augmented data."""
    step.batch = mixed.batch
    step.target = mixed.target
    step.priors = mixed.priors
    if mixed.target.shape[1] != step.num_candidates:   # concat: the candidate fields now hold 2C
        step.candidates_from = (f"candidates='concat' appended the partner's candidates to the adapter's candidate "
                                f"fields {sorted(step.adapter.candidate)}: does the adapter's forward pass them to the "
                                f"model? candidates='pairwise' keeps the model's own candidates")
    step.num_candidates = mixed.target.shape[1]
