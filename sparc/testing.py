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
:func:`register_fixture_builder`); adapters are imported inside each builder so that importing
this module stays light.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple

import torch
from torch import nn

__all__ = [
    "EPS32",
    "FIXTURE_BUILDERS",
    "FLOAT32_K",
    "OriginalFixture",
    "assert_float32_close",
    "float32_tolerance",
    "original_fixture",
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


# --------------------------------------------------------------------------- config parsing


class _Name(str):
    """A bare identifier in a recorded constructor call (``vid_encoder``, ``cpu``)."""


def _parse_call(source: str) -> Tuple[str, list, Dict[str, Any]]:
    """Parse a recorded call such as ``"EncoderRNN.EncoderVidHGA(dim_vid=4096, rnn_cell='gru')"``
    into (callee, args, kwargs). Arguments must be literals or bare names (returned as
    :class:`_Name`); nothing is evaluated."""
    node = ast.parse(source.strip(), mode="eval").body
    if not isinstance(node, ast.Call):
        raise ValueError(f"not a constructor call: {source!r}")

    def value(arg: ast.expr):
        if isinstance(arg, ast.Name):
            return _Name(arg.id)
        return ast.literal_eval(arg)

    args = [value(a) for a in node.args]
    kwargs = {kw.arg: value(kw.value) for kw in node.keywords if kw.arg is not None}
    return ast.unparse(node.func), args, kwargs


def _check_callee(callee: str, expected: str) -> None:
    if callee.split(".")[-1] != expected:
        raise ValueError(f"config.json builds {callee!r}; expected {expected}")


# --------------------------------------------------------------------------- HGA


@register_fixture_builder("HGA")
def _build_hga(config: Dict[str, Any]):
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    dims = config.get("dims", {})
    ctor = config.get("constructor", {})
    if "vid_encoder" in ctor:
        callee, args, kwargs = _parse_call(ctor["vid_encoder"])
        _check_callee(callee, "EncoderVidHGA")
        vid_encoder = EncoderVidHGA(*args, **kwargs)
    else:
        vid_encoder = EncoderVidHGA(dims["vid_dim"], dims["hidden_dim"])
    if "qns_encoder" in ctor:
        callee, args, kwargs = _parse_call(ctor["qns_encoder"])
        _check_callee(callee, "EncoderQns")
        qns_encoder = EncoderQns(*args, **kwargs)
    else:
        qns_encoder = EncoderQns(
            dims["word_dim"], dims["hidden_dim"], dims.get("vocab_size", 4000), None, True
        )
    if "model" in ctor:
        _check_callee(_parse_call(ctor["model"])[0], "HGA")
    block_kwargs = ctor.get("block_fusion_overrides", dims.get("block"))
    model = HGA(vid_encoder, qns_encoder, torch.device("cpu"), block_kwargs=block_kwargs)

    def run(model, inputs):
        out, predict_idx = model(inputs["vid_feats"], inputs["qas"], inputs["qas_lengths"])
        # The reference model fixes the original's co-attention masks, so it reproduces the
        # fixture's run with length masks ("*_intended_masks"), not the original's `out`.
        return {"out_intended_masks": out, "predict_idx_intended_masks": predict_idx}

    return model, run


# --------------------------------------------------------------------------- VGT, STAGE, HME, ALBEF
# Each reference module builds its own model from the fixture's config (``fixture_model``); the
# import happens only when such a fixture is opened.


def _lazy_builder(module: str) -> BuilderFn:
    def build(config: Dict[str, Any]):
        import importlib

        return importlib.import_module(module).fixture_model(config)

    return build


for _model, _module in (("VGT", "sparc.adapters.vgt"), ("STAGE", "sparc.adapters.stage"), ("HME", "sparc.adapters.hme"),
                        ("ALBEF-VQA", "sparc.teachers.albef")):
    register_fixture_builder(_model)(_lazy_builder(_module))
