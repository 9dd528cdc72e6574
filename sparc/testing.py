"""Check sparc's reference models against outputs recorded with the original implementations.

Each folder under ``fixtures/original/<model>/`` holds ``config.json`` (how the original model
was built and called), ``state_dict.safetensors`` (original key names), ``inputs.safetensors``
and ``outputs.safetensors``. :func:`original_fixture` builds the matching reference model from
``config.json`` alone, loads the state_dict strictly, :meth:`OriginalFixture.compare` reports how
far the reference model's outputs are from the recorded ones, and
:meth:`OriginalFixture.tolerance_ratios` how far relative to what float32 rounding allows
(:func:`float32_tolerance`)::

    fx = original_fixture("tests/fixtures/original/hga")
    assert max(fx.tolerance_ratios().values()) <= 1

The recorded outputs are float32 and were computed on one machine; another CPU's kernels add and
multiply in another order, so a reproduction is judged against float32 rounding at the output's
scale, not against a fixed number.

Builders are registered per config ``"model"`` name in :data:`FIXTURE_BUILDERS` (see
:func:`register_fixture_builder`): each backbone's file in :mod:`sparc.backbones` names the fixtures
it rebuilds, and the teacher's is ALBEF's. Adapters are imported inside each builder so that
importing this module stays light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple

import torch
from torch import nn

from sparc.recorded_calls import Name, check_callee, parse_call

__all__ = [
    "EPS32",
    "FIXTURE_BUILDERS",
    "FLOAT32_K",
    "Name",
    "OriginalFixture",
    "assert_float32_close",
    "check_callee",
    "float32_tolerance",
    "original_fixture",
    "parse_call",
    "register_fixture_builder",
]

#: float32's machine epsilon, 2**-23 (the relative spacing of float32 numbers).
EPS32 = 2.0 ** -23
#: How many ``EPS32`` at the output's scale a float32 reproduction may be off. Rounding in a sum of n
#: float32 terms grows like sqrt(n) * eps (n * eps at worst), and two CPUs' kernels sum in different
#: orders (blocking, FMA, vector width), so their results differ by about that much. The widest
#: reductions in the fixtures are 4096 features long (HGA's video projection; HME's 2048 + 2048), and
#: sqrt(4096) = 64. Measured reproductions (AVX-512, AVX2 and default kernels) use at most 1/8 of it;
#: a defect in a reference model moves outputs by percents of their scale, 10^3 times more.
FLOAT32_K = 64
#: Values this large are fill values for masked positions (STAGE's -1e10), not computed magnitudes.
_FILL = 1e9


def float32_tolerance(expected: torch.Tensor, k: float = FLOAT32_K) -> torch.Tensor:
    """Per-element tolerance for reproducing the float32 tensor ``expected`` on another CPU:
    ``k * EPS32 * max(|expected|, scale)``, ``scale`` being the largest magnitude among the tensor's
    computed values (fill values of 1e9 or more left out), and at least 1: the fixtures' inputs and
    weights are of unit scale, so an output smaller than 1 comes from cancelling terms of about 1,
    whose rounding it inherits. Fill values get the relative part only. Integer and bool outputs
    (indices, predictions) get 0: they must be equal."""
    if not expected.is_floating_point():
        return torch.zeros(expected.shape, dtype=torch.float64)
    magnitude = expected.detach().double().cpu().abs()
    computed = magnitude[magnitude < _FILL]
    scale = max(1.0, float(computed.max())) if computed.numel() else 1.0
    return k * EPS32 * magnitude.clamp_min(scale)


def _ratio(got: torch.Tensor, expected: torch.Tensor, k: float) -> float:
    diff = (got.detach().double().cpu() - expected.double()).abs()
    if not diff.numel():
        return 0.0
    tol = float32_tolerance(expected, k)
    over = torch.where(diff == 0, torch.zeros_like(diff), diff / tol)  # 0/0 is exact; x/0 is inf
    return float(over.max())


def assert_float32_close(got: torch.Tensor, expected: torch.Tensor, k: float = FLOAT32_K, name: str = "output") -> None:
    """``got`` reproduces the recorded float32 ``expected`` within :func:`float32_tolerance`."""
    if tuple(got.shape) != tuple(expected.shape):
        raise AssertionError(f"{name}: shape {tuple(got.shape)}, recorded {tuple(expected.shape)}")
    ratio = _ratio(got, expected, k)
    if ratio > 1:
        diff = float((got.detach().double().cpu() - expected.double()).abs().max())
        raise AssertionError(f"{name}: differs from the recorded value by {diff:.3g}, {ratio:.3g} times "
                             f"the float32 tolerance ({k} eps32 at the output's scale)")

#: run(model, inputs) -> {output name in outputs.safetensors: the reference model's tensor}
RunFn = Callable[[nn.Module, Mapping[str, torch.Tensor]], Dict[str, torch.Tensor]]
#: builder(config) -> (reference model with fresh weights, run function)
BuilderFn = Callable[[Dict[str, Any]], Tuple[nn.Module, RunFn]]

#: config.json "model" name -> builder.
FIXTURE_BUILDERS: Dict[str, BuilderFn] = {}


def register_fixture_builder(name: str) -> Callable[[BuilderFn], BuilderFn]:
    """Decorator registering ``builder(config) -> (model, run)`` for fixtures whose
    config.json has ``"model": name``."""

    def decorate(builder: BuilderFn) -> BuilderFn:
        FIXTURE_BUILDERS[name] = builder
        return builder

    return decorate


@dataclass
class OriginalFixture:
    """A reference model loaded with a fixture's weights, plus the fixture's tensors."""

    folder: Path
    config: Dict[str, Any]
    model: nn.Module
    inputs: Dict[str, torch.Tensor]
    outputs: Dict[str, torch.Tensor]
    run: RunFn = field(repr=False)

    def predict(self) -> Dict[str, torch.Tensor]:
        """The reference model's outputs on the stored inputs (eval mode, no grad)."""
        self.model.eval()
        with torch.no_grad():
            return self.run(self.model, self.inputs)

    def _pairs(self):
        """(name, computed, recorded) for every output the model reproduces; a shape mismatch is an error."""
        for name, got in self.predict().items():
            expected = self.outputs[name]
            if tuple(got.shape) != tuple(expected.shape):
                raise AssertionError(
                    f"{name}: reference model gives shape {tuple(got.shape)}, "
                    f"fixture has {tuple(expected.shape)}"
                )
            yield name, got, expected

    def compare(self) -> Dict[str, float]:
        """Max abs difference to the recorded value, for every output the model reproduces."""
        diffs: Dict[str, float] = {}
        for name, got, expected in self._pairs():
            diff = (got.detach().double().cpu() - expected.double()).abs()
            diffs[name] = float(diff.max()) if diff.numel() else 0.0
        return diffs

    def tolerance_ratios(self, k: float = FLOAT32_K) -> Dict[str, float]:
        """For every output the model reproduces, the worst ratio of its difference to the recorded
        value over :func:`float32_tolerance` (element by element): at most 1 means reproduced."""
        return {name: _ratio(got, expected, k) for name, got, expected in self._pairs()}


def original_fixture(folder) -> OriginalFixture:
    """Build the reference model described by ``folder/config.json``, load
    ``state_dict.safetensors`` strictly, and load the stored inputs and outputs."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    name = config.get("model")
    builder = FIXTURE_BUILDERS.get(name)
    if builder is None:
        known = ", ".join(sorted(FIXTURE_BUILDERS)) or "none"
        raise ValueError(
            f"{folder / 'config.json'}: no reference-model builder for model {name!r} "
            f"(known: {known})"
        )
    model, run = builder(config)
    model.load_state_dict(load_file(str(folder / "state_dict.safetensors")), strict=True)
    model.eval()
    return OriginalFixture(
        folder=folder,
        config=config,
        model=model,
        inputs=load_file(str(folder / "inputs.safetensors")),
        outputs=load_file(str(folder / "outputs.safetensors")),
        run=run,
    )


# --------------------------------------------------------------------------- the builders
# Each backbone's file in sparc.backbones names the fixtures it rebuilds (its ``fixtures`` role); the
# teacher's is ALBEF's. The model code is imported only when such a fixture is opened.


def _register_known_builders() -> None:
    from sparc.backbones import BACKBONES
    from sparc.backbones.base import lazy_call

    for name in BACKBONES.names("fixtures"):
        for model, builder in BACKBONES.get(name, "fixtures").items():
            register_fixture_builder(model)(builder)
    register_fixture_builder("ALBEF-VQA")(lazy_call("sparc.teachers.albef", "fixture_model"))


_register_known_builders()
