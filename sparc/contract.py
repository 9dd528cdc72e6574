"""The adapter and technique contracts: what every adapter, and every technique, must do for sparc's
training step to be correct.

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

The technique contract is the same idea turned around: :func:`check_technique` runs a technique
(or a list of them, as one wrap) on an adapter case and verifies, in every subset mode the case's
adapter can run:

1. :func:`check_technique_terms` -- each technique returns named, finite, 0-dim loss terms, or
   (an :class:`~sparc.techniques.Augmentation`) rewrites the batch; a declared ``answer_term`` is
   among its terms; the caller's batch and priors are not changed in place;
2. :func:`check_technique_gradients` -- every term is attached to the model, and their backward
   gives some trainable model parameter a nonzero gradient and no parameter a non-finite one;
3. :func:`check_technique_modes_agree` -- the step's terms are the same in every subset mode (in
   ``case.dtype``, float64 by default, to the case's ``rtol``; the model itself in eval mode inside
   the training wrap, as views are compared): views are equal across modes by the adapter
   contract, so a difference is the technique's;
4. :func:`check_technique_resumes` -- a run resumed from ``state_dict()`` after one step computes
   the second step's loss and terms exactly (bit for bit), and the technique's terms do not depend
   on the global RNG (its draws come from its own generator, which the checkpoint carries).

sparc's own techniques run it in ``tests/test_technique_contract.py``; for your own::

    from sparc.contract import check_technique
    check_technique(lambda: MyTechnique(weight=0.5), case)     # case: an AdapterCase
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

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
    """A full SpARC step (TemporalGuidance + SpatialDistillation + TemporalGuidedMixup) reaches the
    model with finite gradients, and ``SparcModel.ddp_kwargs(batch, priors)`` tells
    DistributedDataParallel exactly when it leaves trainable parameters without a gradient (a probe
    step finds them). Returns the names of parameters left without a gradient."""
    model = case.build_model(seed).train()
    batch = case.make_batch(batch_size, num_frames, seed)
    try:
        wrapped, priors = _sparc_step(case, model, batch, mixup=True, seed=seed)
        ddp = wrapped.ddp_kwargs(batch, priors)
        out = wrapped(batch, priors=priors)
    except ValueError as e:  # sparc's own input errors say what is wrong; keep the contract's error type
        raise AssertionError(f"{case.name}: the SpARC step (TemporalGuidance + SpatialDistillation + "
                             f"TemporalGuidedMixup) refused the case: {e}") from e
    assert torch.isfinite(out.loss), f"{case.name}: SpARC step loss is {float(out.loss)}"
    assert {"guided", "consistency", "spatial"} <= set(out.terms), f"{case.name}: terms {sorted(out.terms)}"
    out.loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unused = [n for n, p in trainable if p.grad is None]
    assert len(unused) < len(trainable), f"{case.name}: no gradient reaches the model"
    bad = [n for n, p in trainable if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    assert not bad, f"{case.name}: non-finite gradients in {bad[:8]}"
    declared = bool(getattr(case.adapter, "find_unused_parameters", False))
    if ddp["find_unused_parameters"] != (bool(unused) or declared):
        raise AssertionError(f"{case.name}: ddp_kwargs(batch) says find_unused_parameters="
                             f"{ddp['find_unused_parameters']}, but the step leaves {unused[:8] or 'no parameter'} "
                             f"without gradient")
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


# --------------------------------------------------------------------------- the technique contract
#
# check_technique runs a technique through sparc.wrap on an AdapterCase, as training would, and checks
# what the training step relies on: its terms, its gradients, that every subset mode gives it the same
# terms, and that a checkpoint resumes it exactly. Each technique is built fresh for every wrap (wrap
# binds a technique to its adapter, and a technique's generator advances as it draws).

TechniqueFactory = Callable[[], Union["Technique", Sequence["Technique"]]]  # noqa: F821 (sparc.techniques)


class _Maker:
    """``make_technique`` called once per wrap: a list of fresh techniques each time, and the name the
    messages use (the techniques' class names joined by ``+`` unless given)."""

    def __init__(self, make_technique: TechniqueFactory, name: Optional[str] = None):
        self.make, self._seen, self.name = make_technique, [], name
        if self.name is None:
            self.name = "+".join(type(t).__name__ for t in self())

    def __call__(self) -> list:
        from sparc.techniques.base import Technique

        made = self.make()
        made = list(made) if isinstance(made, (list, tuple)) else [made]
        label = self.name or "make_technique"
        if not made:
            raise AssertionError(f"{label}: make_technique returned no technique")
        for t in made:
            if not isinstance(t, Technique):
                raise AssertionError(f"{label}: make_technique returned a {type(t).__name__}, not a sparc Technique")
            if any(t is old for old in self._seen):
                raise AssertionError(f"{label}: make_technique returned a technique it had returned before; it must "
                                     "build a new one on every call (wrap binds it, and its generator advances)")
        self._seen.extend(made)
        return made


def _num(value: torch.Tensor) -> float:
    return float(value.detach())


def _where(maker: _Maker, case: AdapterCase, mode: str) -> str:
    return f"{maker.name} on {case.name} [{mode}]"


def _task_loss(case: AdapterCase, techniques) -> str:
    """The case's task loss, except that a mixup's soft labels need CE where the case uses the hinge
    (as :func:`sparc_techniques` leaves the mixup out of a hinge case)."""
    from sparc.techniques.base import Augmentation

    if case.task_loss == "hinge" and any(isinstance(t, Augmentation) for t in techniques):
        return "ce"
    return case.task_loss


def _own_modes(case: AdapterCase, modes, seed: int) -> List[str]:
    if modes is not None:
        modes = list(modes)
        if not modes:
            raise ValueError("modes: name at least one subset mode")
        return modes
    own = case.adapter.mode_for(case.build_model(seed))
    return [own] + [m for m in case.modes if m != own]


def _inputs(case: AdapterCase, batch_size: int, num_frames: int, seed: int):
    """A batch (floating tensors in ``case.dtype``) and its :func:`causal_priors`."""
    batch = case.make_batch(batch_size, num_frames, seed)
    if case.dtype is not None:
        batch = cast_floating(batch, case.dtype)
    answer = torch.as_tensor(batch[case.adapter.answer_field])
    priors = causal_priors(answer.shape[0], case.adapter.num_frames(batch), case.num_candidates, answer, seed)
    return batch, priors


def _instrument(techniques) -> dict:
    """Record what each technique returns from ``loss_terms`` and whether its ``augment`` replaced the
    step's batch (instance attributes shadowing the methods of these freshly built techniques)."""
    from collections.abc import Mapping

    from sparc.techniques.base import Augmentation

    log = {"terms": [None] * len(techniques), "rewrote": [None] * len(techniques)}
    for i, t in enumerate(techniques):
        def loss_terms(step, _i=i, _inner=t.loss_terms, _t=t):
            terms = _inner(step)
            if not isinstance(terms, Mapping):
                raise AssertionError(f"{type(_t).__name__}.loss_terms returned a {type(terms).__name__}; it returns "
                                     "a dict of named loss terms")
            log["terms"][_i] = dict(terms)
            return terms
        t.loss_terms = loss_terms
        if isinstance(t, Augmentation):
            def augment(step, _i=i, _inner=t.augment):
                before = step.batch
                _inner(step)
                log["rewrote"][_i] = step.batch is not before
            t.augment = augment
    return log


@dataclass
class _Ran:
    wrapped: nn.Module
    techniques: list
    out: object          # StepOutput
    log: dict
    changed: List[str]   # the caller's batch fields (and "priors") the step changed in place


def _build(maker: _Maker, case: AdapterCase, mode: str, seed: int):
    import sparc

    techniques = maker()
    model = case.build_model(seed)
    if case.dtype is not None:
        model = model.to(case.dtype)
    try:
        wrapped = sparc.wrap(model, case.adapter.with_subset_mode(mode), techniques,
                             task_loss=_task_loss(case, techniques))
    except (ValueError, TypeError) as e:
        raise AssertionError(f"{_where(maker, case, mode)}: wrap refused it: {e}") from e
    wrapped.reseed(seed)
    return wrapped.train(), techniques


def _forward(maker: _Maker, case: AdapterCase, mode: str, wrapped, batch, priors):
    try:
        return wrapped(batch, priors=priors)
    except (ValueError, TypeError, RuntimeError) as e:  # sparc's input errors, a technique's own failures
        raise AssertionError(f"{_where(maker, case, mode)}: the wrapped training step failed: "
                             f"{type(e).__name__}: {e}") from e


def _run(maker: _Maker, case: AdapterCase, mode: str, seed: int, batch_size: int, num_frames: int,
         deterministic: bool = False) -> _Ran:
    """One wrapped training step. ``deterministic``: the model itself in eval mode (the wrap still
    trains, so every technique runs), as the adapter contract compares views: no dropout, and
    normalisation statistics that do not depend on which rows a subset mode groups together."""
    wrapped, techniques = _build(maker, case, mode, seed)
    log = _instrument(techniques)
    if deterministic:
        wrapped.model.eval()
    batch, priors = _inputs(case, batch_size, num_frames, seed)
    before = copy.deepcopy({"batch": batch, "priors": priors})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = _forward(maker, case, mode, wrapped, batch, priors)
    changed = [k for k, v in before["batch"].items() if torch.is_tensor(v) and not _same(v, batch.get(k))]
    if not _same(before["priors"], priors):
        changed.append("priors")
    return _Ran(wrapped, techniques, out, log, changed)


def _same(a: torch.Tensor, b) -> bool:
    return torch.is_tensor(b) and a.shape == b.shape and bool(((a == b) | (a != a) & (b != b)).all())


def _assert_terms(maker: _Maker, case: AdapterCase, mode: str, ran: _Ran) -> Dict[str, torch.Tensor]:
    from sparc.techniques.base import Augmentation

    where = _where(maker, case, mode)
    if ran.changed:
        raise AssertionError(f"{where}: the step changed the caller's inputs in place ({ran.changed}); a technique "
                             "reads the step's batch and priors, and an augmentation hands new tensors to "
                             "step.replace_batch (the clean batch is the selection's, and the caller's)")
    for t, terms, rewrote in zip(ran.techniques, ran.log["terms"], ran.log["rewrote"]):
        who = type(t).__name__
        terms = terms or {}
        for name, value in terms.items():
            if not isinstance(name, str) or not name:
                raise AssertionError(f"{where}: {who} returned a term named {name!r}; name every term with a "
                                     "non-empty string (it is logged as train/<name>)")
            if not torch.is_tensor(value) or value.dim() != 0 or not value.is_floating_point():
                what = (f"a {value.dtype} tensor of shape {tuple(value.shape)}" if torch.is_tensor(value)
                        else f"a {type(value).__name__}")
                raise AssertionError(f"{where}: {who}'s term {name!r} is {what}; a term is a 0-dim floating "
                                     "tensor (reduce it over the batch, and weight it, inside the technique)")
            if not bool(torch.isfinite(value)):
                raise AssertionError(f"{where}: {who}'s term {name!r} is not finite ({_num(value)})")
        if not terms and not rewrote:
            does = ("its augment() replaced no batch (step.replace_batch) and " if isinstance(t, Augmentation)
                    else "")
            raise AssertionError(f"{where}: {who} contributes nothing: {does}its loss_terms() returned no term")
        if t.answer_term is not None and t.answer_term not in terms:
            raise AssertionError(f"{where}: {who} declares answer_term {t.answer_term!r}, which replaces the "
                                 f"wrapper's answer loss, but returned no such term (its terms: {sorted(terms)}); "
                                 "the step would train without answer supervision")
    rewriters = [type(t).__name__ for t, rewrote in zip(ran.techniques, ran.log["rewrote"]) if rewrote]
    for name, value in ran.out.terms.items():
        if not bool(torch.isfinite(value)):
            on = f" on the batch {rewriters[0]} rewrote" if rewriters else ""
            raise AssertionError(f"{where}: the step's term {name!r} is not finite ({_num(value)}){on}")
    return dict(ran.out.terms)


def _assert_gradients(maker: _Maker, case: AdapterCase, mode: str, ran: _Ran) -> List[str]:
    where = _where(maker, case, mode)
    own = {name: value for terms in ran.log["terms"] if terms for name, value in terms.items()}
    for name, value in own.items():
        if not value.requires_grad:
            raise AssertionError(f"{where}: term {name!r} is detached from the model (no grad_fn): no gradient "
                                 "can flow through it; compute it from the step's views without .detach() or "
                                 "torch.no_grad() (for 'nothing this step', return view.logits.sum() * 0.0, "
                                 "which keeps the graph connected as DistributedDataParallel needs)")
    # A pure augmentation acts through the answer loss on the batch it rewrote.
    loss = sum(own.values()) if own else ran.out.loss
    model_params = [(n, p) for n, p in ran.wrapped.model.named_parameters() if p.requires_grad]
    own_params = [(f"techniques.{n}", p) for n, p in ran.wrapped.techniques.named_parameters() if p.requires_grad]
    params = model_params + own_params
    if not loss.requires_grad:
        raise AssertionError(f"{where}: the step's loss is detached from the model: no gradient reaches it")
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    bad = [n for (n, _), g in zip(params, grads) if g is not None and not bool(torch.isfinite(g).all())]
    if bad:
        raise AssertionError(f"{where}: non-finite gradient in {bad[:8]}{' ...' if len(bad) > 8 else ''}")
    reached = [n for (n, _), g in zip(model_params, grads) if g is not None and bool((g != 0).any())]
    if not reached:
        of = f"its terms {sorted(own)}" if own else "the answer loss on the batch it rewrote"
        raise AssertionError(f"{where}: no gradient reaches the model from {of}: every trainable parameter's "
                             "gradient is zero or None")
    return reached


def _differing(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> List[str]:
    """The term names that are in one of ``a`` and ``b`` only, or whose values are not bit-for-bit equal."""
    return sorted(k for k in set(a) | set(b)
                  if k not in a or k not in b or not torch.equal(a[k].detach(), b[k].detach()))


def _term_tolerance(case: AdapterCase, values: Sequence[torch.Tensor]) -> float:
    """Terms are smooth functions of the views' outputs: in float64 the rounding they carry is ~1e-15
    at the scale of the terms (or of 1, for a term near 0 whose inputs are O(1)); ``case.rtol`` (1e-10)
    leaves a margin of 10^5 and is far below what a mode-dependent term moves (1e-3 and more). In
    another precision (``case.dtype`` None) the case's ``atol`` at that scale."""
    scale = max([1.0] + [float(v.abs()) for v in values])
    if all(v.dtype == torch.float64 for v in values):
        return case.rtol * scale
    return case.atol * scale


# ---- the clauses ----------------------------------------------------------------------------------

def check_technique_terms(make_technique: TechniqueFactory, case: AdapterCase, mode: Optional[str] = None,
                          seed: int = 0, batch_size: int = 4, num_frames: int = 5,
                          name: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A training step of the wrapped technique(s) in ``mode`` (default: the adapter's own): every
    technique returns named, finite, 0-dim floating terms, or rewrites the batch (an Augmentation);
    a technique that declares ``answer_term`` returns that term; the caller's batch and priors are
    left as they were. Returns the step's terms."""
    maker = _Maker(make_technique, name)
    mode = mode or _own_modes(case, None, seed)[0]
    return _assert_terms(maker, case, mode, _run(maker, case, mode, seed, batch_size, num_frames))


def check_technique_gradients(make_technique: TechniqueFactory, case: AdapterCase, mode: Optional[str] = None,
                              seed: int = 0, batch_size: int = 4, num_frames: int = 5,
                              name: Optional[str] = None) -> List[str]:
    """The techniques' terms (for a pure augmentation: the answer loss on its batch) are attached to the
    model, and their gradient is nonzero on at least one trainable model parameter and finite on
    every parameter. Returns the names of the model parameters the gradient reached."""
    maker = _Maker(make_technique, name)
    mode = mode or _own_modes(case, None, seed)[0]
    ran = _run(maker, case, mode, seed, batch_size, num_frames)
    _assert_terms(maker, case, mode, ran)
    return _assert_gradients(maker, case, mode, ran)


def check_technique_modes_agree(make_technique: TechniqueFactory, case: AdapterCase, modes=None, seed: int = 0,
                                batch_size: int = 4, num_frames: int = 5,
                                name: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """The step's terms are the same in every subset mode (default: the adapter's own and
    ``case.modes``), to :func:`_term_tolerance` in ``case.dtype``. Runs with the model in eval mode
    inside the training wrap, as :func:`check_subset_equals_slicing` compares views. Returns
    ``{mode: {term: value}}``."""
    maker = _Maker(make_technique, name)
    modes = _own_modes(case, modes, seed)
    return _assert_modes_agree(maker, case, modes, seed, batch_size, num_frames)


def _assert_modes_agree(maker, case, modes, seed, batch_size, num_frames) -> Dict[str, Dict[str, float]]:
    got = {}
    for mode in modes:
        with torch.no_grad():
            ran = _run(maker, case, mode, seed, batch_size, num_frames, deterministic=True)
        got[mode] = _assert_terms(maker, case, mode, ran)
    first = modes[0]
    for mode in modes[1:]:
        where = _where(maker, case, f"{mode} vs {first}")
        if set(got[mode]) != set(got[first]):
            raise AssertionError(f"{where}: the step's terms differ: {sorted(got[mode])} vs {sorted(got[first])}")
        for term, value in got[mode].items():
            expected = got[first][term]
            tol = _term_tolerance(case, [value, expected])
            diff = float((value - expected).abs())
            if not diff <= tol:
                raise AssertionError(f"{where}: term {term!r} is {float(value):.10g} in {mode} mode and "
                                     f"{float(expected):.10g} in {first} mode (differs by {diff:.3g} > {tol:.3g} "
                                     f"in {value.dtype}); the views agree across modes, so the term depends on "
                                     "how the mode lays out its input")
    return {mode: {k: float(v) for k, v in terms.items()} for mode, terms in got.items()}


def check_technique_resumes(make_technique: TechniqueFactory, case: AdapterCase, mode: Optional[str] = None,
                            seed: int = 0, batch_size: int = 4, num_frames: int = 5, lr: float = 0.05,
                            name: Optional[str] = None) -> Dict[str, float]:
    """Checkpoint and resume, as the training loop does (``accelerator.save_state`` keeps the model,
    the techniques' ``state_dict`` and the global RNG):

    - run a wrapped model for one step (an SGD step of ``lr``), take its ``state_dict()``, and record
      the second step (global RNG seeded with ``seed + 1``); build a fresh wrapped model with fresh
      techniques, ``load_state_dict``, seed the global RNG alike, run the second step: the loss and
      every term are equal bit for bit;
    - from the same checkpoint, the second step under two other global seeds (the model in eval mode,
      so only the techniques could draw): the terms are equal bit for bit. A technique that draws from
      the global RNG instead of its own generator (``self.generator``, saved as the module's extra
      state) fails here: it would also shift the model's dropout masks, and a loop that seeds each
      process differently would draw differently per process.

    Returns the second step's terms."""
    maker = _Maker(make_technique, name)
    mode = mode or _own_modes(case, None, seed)[0]
    where = _where(maker, case, mode)
    first, first_priors = _inputs(case, batch_size, num_frames, seed)
    second, second_priors = _inputs(case, batch_size, num_frames, seed + 1)

    with torch.random.fork_rng(devices=[]):
        wrapped, _ = _build(maker, case, mode, seed)
        torch.manual_seed(seed)
        out = _forward(maker, case, mode, wrapped, first, first_priors)
        if not bool(torch.isfinite(out.loss)):
            raise AssertionError(f"{where}: the first step's loss is not finite ({_num(out.loss)})")
        params = [p for p in wrapped.parameters() if p.requires_grad]
        grads = torch.autograd.grad(out.loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p -= lr * g
        state = copy.deepcopy(wrapped.state_dict())
        torch.manual_seed(seed + 1)
        expected = _forward(maker, case, mode, wrapped, second, second_priors)

        def resumed(global_seed: int, deterministic: bool = False):
            fresh, _ = _build(maker, case, mode, seed)
            try:
                fresh.load_state_dict(copy.deepcopy(state))
            except RuntimeError as e:
                raise AssertionError(f"{where}: resume is not exact: the trained run's state_dict does not load "
                                     f"into a fresh wrapped model with fresh techniques: {e}") from e
            if deterministic:
                fresh.model.eval()
            torch.manual_seed(global_seed)
            with torch.set_grad_enabled(not deterministic):
                return _forward(maker, case, mode, fresh, second, second_priors)

        got = resumed(seed + 1)
        differ = _differing(expected.terms, got.terms)
        if differ or not torch.equal(expected.loss.detach(), got.loss.detach()):
            shown = {k: (_num(expected.terms[k]) if k in expected.terms else None,
                         _num(got.terms[k]) if k in got.terms else None) for k in differ}
            raise AssertionError(f"{where}: resume is not exact: after load_state_dict the second step gives loss "
                                 f"{_num(got.loss):.17g}, the uninterrupted run {_num(expected.loss):.17g} "
                                 f"(terms that differ, uninterrupted vs resumed: {shown}); keep all of a technique's "
                                 "state in its state_dict (parameters, buffers, get_extra_state: the generator)")
        a, b = resumed(seed + 101, deterministic=True), resumed(seed + 202, deterministic=True)
        differ = _differing(a.terms, b.terms)
        if differ:
            raise AssertionError(f"{where}: resume is not exact: from one checkpoint, the terms {differ} change "
                                 "with the global RNG (torch.manual_seed): the technique draws from the global RNG; "
                                 "draw from self.generator, whose state the checkpoint carries")
    return {k: _num(v) for k, v in got.terms.items()}


def check_technique(make_technique: TechniqueFactory, case: AdapterCase, modes=None, seed: int = 0,
                    batch_size: int = 4, num_frames: int = 5, name: Optional[str] = None) -> List[str]:
    """Run every clause of the technique contract for ``make_technique`` on ``case``.

    ``make_technique()`` builds a fresh technique, or a list of techniques wrapped together (such as
    ``lambda: [TemporalGuidance(), SpatialDistillation(), TemporalGuidedMixup()]``); it is called once
    per wrap. ``modes``: the subset modes to run (default: the adapter's own ``mode_for(model)`` and
    ``case.modes``). With the case's priors from :func:`causal_priors` and batches from
    ``case.make_batch(batch_size, num_frames, seed)`` in ``case.dtype``:

    1. in every mode, :func:`check_technique_terms` and :func:`check_technique_gradients` on one
       training step;
    2. :func:`check_technique_modes_agree` across the modes;
    3. :func:`check_technique_resumes` in the first mode.

    A case with the hinge task loss is run with CE when a technique is an augmentation (its soft
    labels need it). Failures raise ``AssertionError`` naming the technique, the case and the mode.
    Returns the modes checked."""
    maker = _Maker(make_technique, name)
    modes = _own_modes(case, modes, seed)
    for mode in modes:
        ran = _run(maker, case, mode, seed, batch_size, num_frames)
        _assert_terms(maker, case, mode, ran)
        _assert_gradients(maker, case, mode, ran)
    if len(modes) > 1:
        _assert_modes_agree(maker, case, modes, seed, batch_size, num_frames)
    check_technique_resumes(maker.make, case, modes[0], seed, batch_size, num_frames, name=maker.name)
    return modes


__all__ = [
    "AdapterCase", "check_adapter", "check_subset_equals_slicing", "check_single_frame", "check_gradients",
    "check_eval_deterministic", "check_overfits", "varied_keep", "causal_priors", "cast_floating",
    "check_technique", "check_technique_terms", "check_technique_gradients", "check_technique_modes_agree",
    "check_technique_resumes",
]
