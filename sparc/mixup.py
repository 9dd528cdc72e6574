"""Vanilla mixup and temporal-guided mixup (SpARC A.2, building on EIGV's mixup), as pure functions.

A batch is a dict of tensors; the caller says which fields carry the frame axis (``temporal``), the
candidate axis (``candidate``) and, for open-ended QA, the question (``question``), each as
``{field: dim}``. Temporal-guided mixup changes only the causal frames of each sample:

    f*[b, t] = λ·f[b, t] + (1-λ)·f[π(b), t']     for t in causal(b)

with ``π`` a permutation of the batch and ``t'`` the partner frame given by ``align``. Labels and the
teacher priors of the changed frames are mixed with the same λ, so every later technique sees one
consistent augmented batch.

Multiple-choice labels follow what the model can score (``candidates``):

- ``"concat"`` (EIGV): the candidate fields are concatenated with the partner's, the model scores 2C
  candidates, target λ on the own answer and 1-λ on the partner's. Needs candidate fields: a model
  that does not take its candidates as input cannot score the partner's.
- ``"pairwise"`` (label mixing): the model keeps its own C candidates; candidate k is mixed with the
  partner's candidate k (when there are candidate fields; none are mixed otherwise) and the target is
  ``λ·onehot(a) + (1-λ)·onehot(a_π)``.
- ``"auto"`` (default): ``"concat"`` when ``candidate`` names a field, else ``"pairwise"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

ALIGN_MODES = ("causal", "position")
CANDIDATE_MODES = ("auto", "concat", "pairwise")


@dataclass
class MixedBatch:
    batch: dict                       # the augmented inputs
    target: torch.Tensor              # [B, C'] soft labels
    priors: Optional[torch.Tensor]    # [B, T, C'] teacher priors laid out over the same candidates
    lam: float
    perm: torch.Tensor                # partner of each row
    source_frame: torch.Tensor        # [B, T] partner frame t' mixed into (b, t); t where unchanged


def sample_lambda(alpha: float, beta: float, generator: torch.Generator) -> float:
    """λ ~ Beta(α, β), drawn deterministically from ``generator`` (the global RNGs stay untouched)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, beta))


def sample_partners(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """π: a random permutation of the batch (any batch size; a row may be its own partner)."""
    return torch.randperm(batch_size, generator=generator)


def partner_frames(keep: torch.Tensor, perm: torch.Tensor, align: str = "causal") -> torch.Tensor:
    """``t'`` for every ``(b, t)``: ``align="causal"`` pairs the i-th causal frame of b with the
    (i mod n)-th causal frame of π(b) (temporal order, cycled when π(b) has fewer); ``"position"``
    uses ``t' = t``. Frames that are not kept map to themselves."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
    B, T = keep.shape
    same = torch.arange(T, device=keep.device).expand(B, T)
    if align == "position":
        return same.clone()
    perm = perm.to(keep.device)
    kept_first = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept positions, in order
    counts = keep.sum(dim=1)
    rank = torch.cumsum(keep.long(), dim=1) - 1
    partner_count = counts[perm]
    src = kept_first[perm].gather(1, (rank.clamp(min=0) % partner_count.clamp(min=1)[:, None]))
    # A partner without causal frames (empty="skip") falls back to the same position.
    return torch.where(keep & (partner_count[:, None] > 0), src, same)


def _expand_like(mask: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Broadcast a ``[B, T]`` mask/weight to ``x`` whose time axis is ``dim``."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = mask.shape
    return mask.reshape(shape)


def mix_frames(x: torch.Tensor, keep: torch.Tensor, perm: torch.Tensor, src: torch.Tensor, lam: float, dim: int = 1) -> torch.Tensor:
    """``x*[b, t] = λ x[b, t] + (1-λ) x[π(b), src[b, t]]`` where ``keep``; unchanged elsewhere."""
    partner = x[perm.to(x.device)]
    moved = partner.movedim(dim, 1)
    index = src.to(x.device).view(src.shape + (1,) * (moved.dim() - 2)).expand(moved.shape)
    partner = moved.gather(1, index).movedim(1, dim)
    mixed = lam * x + (1 - lam) * partner
    return torch.where(_expand_like(keep.to(x.device), x, dim), mixed, x)


def resolve_candidates(candidates: str, candidate: Optional[Dict[str, int]], who: str = "mixup",
                       adapter_name: Optional[str] = None) -> str:
    """The concrete candidate mode (``"concat"`` or ``"pairwise"``) for ``candidates`` given the declared
    candidate fields; ``"concat"`` without any is an error (the 2C-wide target could not be scored)."""
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f"{who}: candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
    if candidates == "auto":
        return "concat" if candidate else "pairwise"
    if candidates == "concat" and not candidate:
        whose = f"{adapter_name} declares none" if adapter_name else "none was given (candidate={})"
        raise ValueError(f"{who}: candidates='concat' makes the model score its partner's candidates too, which "
                         f"needs an adapter that declares its candidate field (adapter.candidate); {whose}. "
                         "Declare it (e.g. FunctionAdapter(..., candidate={'cands': 1})) or use candidates='auto' "
                         "or 'pairwise' to mix the labels over the model's own candidates")
    return candidates


def _is_length_field(name: str) -> bool:
    return "len" in name.lower()


def _mix_whole(name: str, x: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
    """Mix a per-sample field (a candidate or a question) with its partner's."""
    partner = x[perm.to(x.device)]
    if x.is_floating_point():
        return lam * x + (1 - lam) * partner
    if _is_length_field(name):
        return torch.maximum(x, partner)  # mixed padded sequences are as long as the longer one
    raise ValueError(
        f"field {name!r} holds integers (token ids?) and cannot be interpolated; "
        "use candidates='concat' or pass features instead of ids"
    )


def temporal_guided_mixup(
    batch: dict,
    *,
    temporal: Dict[str, int],
    keep: torch.Tensor,
    answer: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
    num_candidates: int,
    candidate: Optional[Dict[str, int]] = None,
    question: Optional[Dict[str, int]] = None,
    priors: Optional[torch.Tensor] = None,
    align: str = "causal",
    candidates: str = "auto",
    open_ended: bool = False,
) -> MixedBatch:
    """Temporal-guided mixup (SpARC A.2). See the module docstring for the frame equation.

    Multiple choice, ``candidates="concat"`` (EIGV): the 2C candidates ``[own C, partner's C]``, target
    λ on the own answer and 1-λ on the partner's (shifted by C); needs ``candidate`` fields.
    ``"pairwise"``: candidate k is mixed with the partner's candidate k (no candidate fields: nothing
    but the frames is mixed), target ``λ·onehot(a) + (1-λ)·onehot(a_π)`` over the C candidates.
    ``"auto"``: concat when ``candidate`` names a field, else pairwise. Open-ended
    (``open_ended=True``): the question fields are mixed with λ and the target is the pairwise one.
    Priors of changed frames are mixed the same way over the same candidate layout.
    """
    candidate = candidate or {}
    # Open-ended labels are always mixed pairwise: no candidate mode applies there.
    mode = "pairwise" if open_ended and candidates in CANDIDATE_MODES else resolve_candidates(candidates, candidate)
    question = question or {}
    answer = answer.long()
    perm = perm.to(keep.device)
    src = partner_frames(keep, perm, align)
    out = dict(batch)
    for name, dim in temporal.items():
        x = batch[name]
        if torch.is_tensor(x) and x.is_floating_point():
            out[name] = mix_frames(x, keep, perm, src, lam, dim)

    onehot = F.one_hot(answer, num_candidates).float()
    concat = mode == "concat"
    if concat:
        for name, dim in candidate.items():
            x = batch.get(name)
            if x is None:  # an optional candidate field (e.g. VGT's seq_len, derived when absent)
                continue
            out[name] = torch.cat([x, x[perm.to(x.device)]], dim=dim)
        target = torch.cat([lam * onehot, (1 - lam) * onehot[perm]], dim=1)
    else:
        for name, dim in (question if open_ended else candidate).items():
            out[name] = _mix_whole(name, batch[name], perm, lam)
        target = lam * onehot + (1 - lam) * onehot[perm]

    mixed_priors = None
    if priors is not None:
        partner_p = priors[perm].gather(1, src[..., None].expand(-1, -1, priors.shape[2]))
        changed = keep[..., None]
        if concat:
            own = torch.where(changed, lam * priors, priors)
            other = torch.where(changed, (1 - lam) * partner_p, torch.zeros_like(partner_p))
            mixed_priors = torch.cat([own, other], dim=2)
        else:
            mixed_priors = torch.where(changed, lam * priors + (1 - lam) * partner_p, priors)
    return MixedBatch(out, target, mixed_priors, lam, perm, src)


def mixup(
    batch: dict,
    *,
    temporal: Dict[str, int],
    answer: torch.Tensor,
    lam: float,
    perm: torch.Tensor,
    num_candidates: int,
    valid: Optional[torch.Tensor] = None,
    **kwargs,
) -> MixedBatch:
    """Vanilla mixup (SpARC's "normal" augmentation): every frame is mixed with the partner's frame at
    the same position; labels, candidates and priors as in :func:`temporal_guided_mixup`."""
    name, dim = next(iter(temporal.items()))
    B, T = batch[name].shape[0], batch[name].shape[dim]
    keep = torch.ones(B, T, dtype=torch.bool, device=answer.device) if valid is None else valid
    return temporal_guided_mixup(
        batch, temporal=temporal, keep=keep, answer=answer, lam=lam, perm=perm,
        num_candidates=num_candidates, align="position", **kwargs,
    )
