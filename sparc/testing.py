"""Check sparc's reference models against outputs recorded with the original implementations.

Each folder under ``fixtures/original/<model>/`` holds ``config.json`` (how the original model
was built and called), ``state_dict.safetensors`` (original key names), ``inputs.safetensors``
and ``outputs.safetensors``. :func:`original_fixture` builds the matching reference model from
``config.json`` alone, loads the state_dict strictly, and :meth:`OriginalFixture.compare`
reports how far the reference model's outputs are from the recorded ones::

    fx = original_fixture("tests/fixtures/original/hga")
    assert max(fx.compare().values()) < 1e-5

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
    "FIXTURE_BUILDERS",
    "OriginalFixture",
    "original_fixture",
    "register_fixture_builder",
]

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

    def compare(self) -> Dict[str, float]:
        """Max abs difference to the recorded value, for every output the model reproduces."""
        diffs: Dict[str, float] = {}
        for name, got in self.predict().items():
            expected = self.outputs[name]
            if tuple(got.shape) != tuple(expected.shape):
                raise AssertionError(
                    f"{name}: reference model gives shape {tuple(got.shape)}, "
                    f"fixture has {tuple(expected.shape)}"
                )
            diff = (got.detach().double().cpu() - expected.double()).abs()
            diffs[name] = float(diff.max()) if diff.numel() else 0.0
        return diffs


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
