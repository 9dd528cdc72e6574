"""The adapter contract: what every adapter must do for sparc's training step to be correct.

An :class:`AdapterCase` bundles a tiny-model factory, its adapter and a batch factory. Each
``check_*`` function verifies one clause and raises ``AssertionError`` saying what broke:

1. :func:`check_subset_equals_slicing` -- a subset view (in every mode the case names) gives each row
   exactly what that row alone, with the dropped frames physically removed, gives;
2. :func:`check_single_frame` -- one-frame views and one-frame videos work and stay finite;
3. :func:`check_gradients` -- a full SpARC step reaches every trainable parameter (or the adapter
   declares ``find_unused_parameters`` so DistributedDataParallel is told);
4. :func:`check_eval_deterministic` -- evaluation gives the same logits twice;
5. :func:`check_overfits` -- a few SpARC steps on one fixed batch lower the loss.

sparc's own adapters run these in ``tests/test_adapter_contract.py``. To check an adapter for your
own model::

    from sparc.contract import AdapterCase, check_adapter
    check_adapter(AdapterCase("mine", build_model=lambda seed: MyModel(), adapter=MyAdapter(),
                              make_batch=my_batch, num_candidates=5))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import nn


@dataclass
class AdapterCase:
    """``build_model(seed)`` -> a fresh tiny trainable model; ``make_batch(batch_size, num_frames,
    seed)`` -> a batch dict with the labels (LongTensor [B]) under ``adapter.answer_field`` and the
    question ids (list of str) under ``adapter.qid_field``, ``num_frames`` being the length of the
    adapter's temporal axis; ``num_candidates`` the width of the logits;
    ``modes`` subset modes to check besides the one ``adapter.mode_for(model)`` picks.

    :func:`check_subset_equals_slicing` casts the model and the batch's floating tensors to ``dtype``
    (float64 by default; None leaves them as built). In float64 the clause is a statement about the
    arithmetic, not about which float32 kernels a CPU happens to pick, and it must hold to ``rtol``
    times the logits' largest magnitude; in any other precision to ``atol``."""

    name: str
    build_model: Callable[[int], nn.Module]
    adapter: object
    make_batch: Callable[[int, int, int], dict]
    num_candidates: int
    task_loss: str = "ce"
    atol: float = 1e-5
    modes: tuple = ()
    dtype: Optional[torch.dtype] = torch.float64
    rtol: float = 1e-10


# --------------------------------------------------------------------------- helpers


def varied_keep(valid: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A keep mask ``[B, T]`` with varied counts: row 0 keeps every frame, row 1 one frame, the
    others a random non-empty subset (so one batch mixes several kept counts)."""
    g = torch.Generator().manual_seed(seed)
    B, T = valid.shape
    keep = (torch.rand(B, T, generator=g) < 0.5) & valid
    keep[0] = valid[0]
    if B > 1:
        keep[1] = False
        keep[1, int(torch.nonzero(valid[1])[-1])] = True
    for b in range(B):
        if not keep[b].any():
            keep[b, int(torch.nonzero(valid[b])[0])] = True
    return keep


def cast_floating(obj, dtype: torch.dtype):
    """``obj`` with every floating-point tensor (inside dicts, lists and tuples too) cast to ``dtype``;
    integer and bool tensors (ids, lengths, masks) and everything else are left as they are."""
    if torch.is_tensor(obj):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return type(obj)({k: cast_floating(v, dtype) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(cast_floating(v, dtype) for v in obj)
    return obj


def _equivalence_tolerance(case: "AdapterCase", expected: torch.Tensor) -> float:
    if expected.dtype == torch.float64:
        # float64 rounding (eps 2.2e-16) through a small model leaves ~1e-15 relative; 1e-10 is far
        # above that on any CPU and far below what a leak does (a padded frame moves logits by ~1e-2).
        return case.rtol * float(expected.abs().max())
    return case.atol


def causal_priors(batch_size: int, num_frames: int, num_candidates: int, answer: torch.Tensor,
                  seed: int = 0) -> torch.Tensor:
    """Teacher-like priors ``[B, T, C]``: the correct answer gets 0.9 on every other frame (offset by
    the row), so TemporalGuidance at threshold 0.5 keeps a partial set of frames in every row with
    two or more frames; elsewhere at most 0.4. Every row is a distribution (sums to 1), as wrap requires."""
    if num_candidates == 1:
        return torch.ones(batch_size, num_frames, 1)
    g = torch.Generator().manual_seed(seed)
    base = torch.softmax(torch.randn(batch_size, num_frames, num_candidates, generator=g), dim=-1)
    causal = (torch.arange(num_frames)[None] + torch.arange(batch_size)[:, None]) % 2 == 0
    index = answer.long().view(-1, 1, 1).expand(batch_size, num_frames, 1)
    p_answer = torch.where(causal, torch.tensor(0.9), 0.4 * base.gather(2, index)[..., 0])
    rest = base.scatter(2, index, 0.0)
    rest = rest / rest.sum(dim=2, keepdim=True) * (1 - p_answer)[..., None]
    return rest.scatter(2, index, p_answer[..., None])


def sparc_techniques(case: AdapterCase, mixup: bool = True) -> list:
    import sparc

    made = [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation(weight=1.0)]
    # hinge needs hard labels, mixups make soft ones
    if mixup and case.task_loss != "hinge":
        made.append(sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0))
    return made


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


# --------------------------------------------------------------------------- the clauses


@torch.no_grad()
def check_subset_equals_slicing(case: AdapterCase, batch_size: int = 4, num_frames: int = 5,
                                seed: int = 0) -> List[str]:
    """Every mode's ``forward_subset`` equals running each row alone on its kept frames only (in
    ``case.dtype``, see :class:`AdapterCase`)."""
    model = case.build_model(seed).eval()
    batch = case.make_batch(batch_size, num_frames, seed)
    if case.dtype is not None:
        model, batch = model.to(case.dtype), cast_floating(batch, case.dtype)
    adapter = case.adapter
    keep = varied_keep(adapter.valid_frames(batch).cpu(), seed)
    expected = []
    for b in range(batch_size):
        rows = torch.tensor([b])
        alone = adapter.slice_frames(adapter.select_batch(batch, rows), keep[rows])
        expected.append(_logits(adapter.forward(model, alone)))
    expected = torch.cat(expected)
    if case.dtype is not None:
        assert expected.dtype == case.dtype, (f"{case.name}: cast to {case.dtype}, the model gives {expected.dtype} "
                                              "logits; set dtype=None on the AdapterCase to check it as built")
    modes = [adapter.mode_for(model)] + [m for m in case.modes if m != adapter.mode_for(model)]
    for mode in modes:
        got = adapter.with_subset_mode(mode).forward_subset(model, batch, keep).logits
        assert got.shape == expected.shape, f"{case.name} [{mode}]: shape {tuple(got.shape)} != {tuple(expected.shape)}"
        diff, tol = float((got - expected).abs().max()), _equivalence_tolerance(case, expected)
        assert diff <= tol, (f"{case.name} [{mode}]: subset view differs from physically removing the frames "
                             f"by {diff:.3g} > {tol:.3g} in {expected.dtype} (keep counts {keep.sum(1).tolist()})")
    return modes


@torch.no_grad()
def check_single_frame(case: AdapterCase, batch_size: int = 3, num_frames: int = 4, seed: int = 0) -> None:
    """One-frame views of a longer video, and a one-frame video, give finite ``[B, C]`` logits."""
    model = case.build_model(seed).eval()
    adapter = case.adapter
    batch = case.make_batch(batch_size, num_frames, seed)
    index = torch.arange(batch_size) % num_frames
    keep = torch.nn.functional.one_hot(index, num_frames).bool()
    single = adapter.forward_subset(model, batch, keep).logits
    assert single.shape == (batch_size, case.num_candidates), f"{case.name}: single-frame view shape {tuple(single.shape)}"
    assert torch.isfinite(single).all(), f"{case.name}: single-frame view is not finite"
    short = _logits(adapter.forward(model, case.make_batch(batch_size, 1, seed + 1)))
    assert short.shape == (batch_size, case.num_candidates), f"{case.name}: one-frame video shape {tuple(short.shape)}"
    assert torch.isfinite(short).all(), f"{case.name}: one-frame video gives non-finite logits"


def _sparc_step(case: AdapterCase, model: nn.Module, batch: dict, mixup: bool, seed: int):
    import sparc

    wrapped = sparc.wrap(model, case.adapter, sparc_techniques(case, mixup), task_loss=case.task_loss)
    wrapped.reseed(seed)
    answer = torch.as_tensor(batch[case.adapter.answer_field])
    T = case.adapter.num_frames(batch)
    priors = causal_priors(answer.shape[0], T, case.num_candidates, answer, seed)
    return wrapped, priors


def check_gradients(case: AdapterCase, batch_size: int = 4, num_frames: int = 4, seed: int = 0) -> List[str]:
    """A full SpARC step (TemporalGuidance + SpatialDistillation + TemporalGuidedMixup) gives every
    trainable parameter a gradient, unless the adapter declares ``find_unused_parameters``.
    Returns the names of parameters left without a gradient."""
    model = case.build_model(seed).train()
    batch = case.make_batch(batch_size, num_frames, seed)
    try:
        wrapped, priors = _sparc_step(case, model, batch, mixup=True, seed=seed)
        out = wrapped(batch, priors=priors)
    except ValueError as e:  # sparc's own input errors say what is wrong; keep the contract's error type
        raise AssertionError(f"{case.name}: the SpARC step (TemporalGuidance + SpatialDistillation + "
                             f"TemporalGuidedMixup) refused the case: {e}") from e
    assert torch.isfinite(out.loss), f"{case.name}: SpARC step loss is {float(out.loss)}"
    assert {"guided", "consistency", "spatial"} <= set(out.terms), f"{case.name}: terms {sorted(out.terms)}"
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if unused and not getattr(case.adapter, "find_unused_parameters", False):
        raise AssertionError(f"{case.name}: no gradient reaches {unused[:8]}{' ...' if len(unused) > 8 else ''}; "
                             "fix the model or set find_unused_parameters = True on the adapter")
    return unused


@torch.no_grad()
def check_eval_deterministic(case: AdapterCase, batch_size: int = 3, num_frames: int = 4, seed: int = 0) -> None:
    import sparc

    wrapped = sparc.wrap(case.build_model(seed), case.adapter, sparc_techniques(case)).eval()
    batch = case.make_batch(batch_size, num_frames, seed)
    first, second = wrapped(batch).logits, wrapped(batch).logits
    assert torch.equal(first, second), f"{case.name}: two eval forwards differ by {float((first - second).abs().max()):.3g}"


def check_overfits(case: AdapterCase, steps: int = 25, lr: float = 1e-2, batch_size: int = 4,
                   num_frames: int = 4, seed: int = 0) -> List[float]:
    """``steps`` Adam steps of a SpARC step (TemporalGuidance + SpatialDistillation; no mixup, whose
    fresh λ every step would blur the trend) on one fixed batch: the last losses are below the first.
    Returns the loss curve."""
    torch.manual_seed(seed)
    model = case.build_model(seed).train()
    batch = case.make_batch(batch_size, num_frames, seed)
    wrapped, priors = _sparc_step(case, model, batch, mixup=False, seed=seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = wrapped(batch, priors=priors).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    tail = sum(losses[-3:]) / 3
    assert tail < 0.8 * losses[0], f"{case.name}: loss did not fall on a fixed batch: {[round(x, 4) for x in losses]}"
    return losses


def check_adapter(case: AdapterCase, seed: int = 0) -> None:
    """Run every clause of the contract on ``case``."""
    check_subset_equals_slicing(case, seed=seed)
    check_single_frame(case, seed=seed)
    check_gradients(case, seed=seed)
    check_eval_deterministic(case, seed=seed)
    check_overfits(case, seed=seed)


__all__ = [
    "AdapterCase", "check_adapter", "check_subset_equals_slicing", "check_single_frame", "check_gradients",
    "check_eval_deterministic", "check_overfits", "varied_keep", "causal_priors", "cast_floating",
]
