"""Temporal-guided mixup (SpARC A.2) and vanilla mixup: the two augmentations."""

from __future__ import annotations

import math
from typing import Optional

import torch

from sparc.mixup import (ALIGN_MODES, CANDIDATE_MODES, mixup, resolve_candidates, sample_lambda, sample_partners,
                         temporal_guided_mixup)
from sparc.selection import FrameSelector
from sparc.techniques.base import Augmentation
from sparc.techniques.temporal_guidance import frames_from_shorthand


def _check_shape_param(who: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive number (λ ~ Beta(alpha, beta)), got {value!r}")
    return float(value)


def _check_candidates(who: str, candidates) -> str:
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f"{who}: candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
    return candidates


class _MixupBase(Augmentation):
    """What both mixups share: λ ~ Beta(alpha, beta) per batch, partners a random permutation, and
    the candidate mode settled against the adapter when ``wrap`` binds the technique."""

    def __init__(self, alpha: float, beta: float, candidates: str, seed: int):
        super().__init__(seed)
        who = type(self).__name__
        self.alpha = _check_shape_param(who, "alpha", alpha)
        self.beta = _check_shape_param(who, "beta", beta)
        self.candidates = _check_candidates(who, candidates)
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

    def _draw(self, batch_size: int):
        return sample_lambda(self.alpha, self.beta, self.generator), sample_partners(batch_size, self.generator)


class TemporalGuidedMixup(_MixupBase):
    """Mixes only the causal frames ``step.keep`` of each sample with a partner's (SpARC A.2).

    λ ~ Beta(alpha, beta) per batch (SpARC Table 6: α = β = 0.1), partners a random permutation.
    The causal frames are the step's selection, made before this technique runs: ``frames`` (or the
    ``threshold``/``empty`` shorthand for ``CausalFrames``) insists on one; left unset it follows
    TemporalGuidance's, or ``CausalFrames(0.5)`` when nothing else selects.

    ``candidates`` (multiple choice) follows what the adapter can express, decided once when ``wrap``
    binds the technique to the adapter: ``"auto"`` (default) is EIGV's ``"concat"`` (the model scores
    the 2C candidates [own, partner's]) when the adapter declares a candidate field
    (``adapter.candidate``), else ``"pairwise"`` label mixing over the model's own C candidates
    (``λ·onehot(a) + (1-λ)·onehot(a_π)``; declared candidate fields are mixed k with k). An explicit
    ``"concat"`` with an adapter that declares no candidate field is an error at ``wrap`` time.
    Open-ended adapters mix the question fields instead.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, align: str = "causal", candidates: str = "auto",
                 threshold: Optional[float] = None, empty: Optional[str] = None,
                 frames: Optional[FrameSelector] = None, seed: int = 0):
        super().__init__(alpha, beta, candidates, seed)
        who = type(self).__name__
        if align not in ALIGN_MODES:
            raise ValueError(f"{who}: align must be one of {ALIGN_MODES}, got {align!r}")
        self.align = align
        self.frames = frames_from_shorthand(who, frames, None, threshold, empty, None)

    @property
    def needs_frames(self) -> bool:
        return True

    def augment(self, step) -> None:
        lam, perm = self._draw(step.answer.shape[0])
        mixed = temporal_guided_mixup(
            step.batch, temporal=step.adapter.temporal, keep=step.keep, answer=step.answer, lam=lam,
            perm=perm.to(step.answer.device), num_candidates=step.num_candidates,
            candidate=step.adapter.candidate, question=step.adapter.question, priors=step.priors,
            align=self.align, candidates=self._mode(step), open_ended=step.adapter.open_ended)
        apply_mixed(step, mixed)


class Mixup(_MixupBase):
    """Vanilla mixup (SpARC's "normal" augmentation, Table 7): every frame is mixed, position-aligned.
    It reads no causal frames; with TemporalGuidance those are still selected from the clean batch."""

    def __init__(self, alpha: float = 0.1, beta: float = 0.1, candidates: str = "auto", seed: int = 0):
        super().__init__(alpha, beta, candidates, seed)

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
    candidates_from = None
    if mixed.target.shape[1] != step.num_candidates:   # concat: the candidate fields now hold 2C
        candidates_from = (f"candidates='concat' appended the partner's candidates to the adapter's candidate "
                           f"fields {sorted(step.adapter.candidate)}: does the adapter's forward pass them to the "
                           f"model? candidates='pairwise' keeps the model's own candidates")
    step.replace_batch(mixed.batch, mixed.target, mixed.priors, mixed.target.shape[1], candidates_from)
