"""The reference HGA (sparc.adapters.hga) against the original doc-doc/NExT-QA code's fixture,
and the original's defects it fixes (batch of one, single frame, padding, candidate count)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparc.testing import FIXTURE_BUILDERS, original_fixture
from helpers import (as64, assert_batch_rows_equal_batches_of_one, assert_padded_frames_ignored, close64,  # tests/helpers.py
                     model64, run_eval as _run)

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "hga"


def test_batch_of_one_equals_row_of_batch(fx):
    assert_batch_rows_equal_batches_of_one(fx.model, fx.inputs["vid_feats"], fx.inputs["qas"], fx.inputs["qas_lengths"])


def test_single_frame_is_finite(fx):
    vid, qas, lens = fx.inputs["vid_feats"], fx.inputs["qas"], fx.inputs["qas_lengths"]
    out, idx = _run(fx.model, vid[:, :1], qas, lens)
    assert out.shape == (vid.shape[0], qas.shape[1])
    assert torch.isfinite(out).all()
    out1, _ = _run(fx.model, vid[:1, :1], qas[:1], lens[:1])  # B = 1 and T = 1 together
    assert torch.isfinite(out1).all()
    # the batch of one is the batch's first row: an equivalence, checked in float64
    m, vid, qas = model64(fx.model), as64(vid), as64(qas)
    assert close64(_run(m, vid[:1, :1], qas[:1], lens[:1])[0][0], _run(m, vid[:, :1], qas, lens)[0][0])


def test_padded_frames_have_no_influence(fx):
    assert_padded_frames_ignored(fx.model, fx.inputs["qas"], fx.inputs["qas_lengths"], fx.model.vid_encoder.dim_vid)


# The equivalences below run a float64 copy of the fixture's model (tests/helpers.py, REL64).

def test_question_padding_has_no_influence(fx):
    model, vid, qas, lens = model64(fx.model), as64(fx.inputs["vid_feats"]), as64(fx.inputs["qas"]), fx.inputs["qas_lengths"]
    out, _ = _run(model, vid, qas, lens)
    gen = torch.Generator().manual_seed(1)
    longer = torch.cat([qas, torch.randn(*qas.shape[:2], 4, qas.shape[-1], generator=gen, dtype=torch.float64)], dim=2)
    out_longer, _ = _run(model, vid, longer, lens)
    assert close64(out_longer, out)


def test_any_number_of_candidates(fx):
    model, vid, qas, lens = model64(fx.model), as64(fx.inputs["vid_feats"]), as64(fx.inputs["qas"]), fx.inputs["qas_lengths"]
    out, _ = _run(model, vid, qas, lens)
    out3, idx3 = _run(model, vid, qas[:, :3], lens[:, :3])
    assert out3.shape == (2, 3) and close64(out3, out[:, :3])
    assert torch.equal(idx3, out[:, :3].argmax(1))
    out7, _ = _run(model, vid, torch.cat([qas, qas[:, :2]], 1), torch.cat([lens, lens[:, :2]], 1))
    assert out7.shape == (2, 7) and close64(out7[:, :5], out) and close64(out7[:, 5:], out[:, :2])


def test_released_checkpoint_loads_strictly_and_forward_adds_no_parameters():
    config = json.loads((FIXTURE / "config.json").read_text())
    model, _ = FIXTURE_BUILDERS["HGA"](config)
    sd = load_file(str(FIXTURE / "state_dict.safetensors"))
    stale = [k for k in sd if k.startswith("co_attn.") and k.endswith(".weight")]
    assert len(stale) == 6  # what the original's weight-drop leaves in every checkpoint
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    own = model.state_dict()
    assert not set(stale) & set(own)
    for k in stale:
        assert torch.equal(own[k + "_raw"], sd[k + "_raw"])

    # Strictness still bites for anything else.
    broken = dict(sd)
    del broken["fusion.linear_out.bias"]
    with pytest.raises(RuntimeError):
        model.load_state_dict(broken)
    broken = dict(sd, **{"co_attn.encoder_layers.0.linear_question.bogus": torch.zeros(1)})
    with pytest.raises(RuntimeError):
        model.load_state_dict(broken)

    # Training forward: weight-drop is applied without registering parameters; grads reach weight_raw.
    n_keys = len(own)
    model.train()
    vid = torch.randn(2, 3, model.vid_encoder.dim_vid)
    qas = torch.randn(2, 5, 6, 768)
    out, _ = model(vid, qas, torch.tensor([[6, 5, 4, 3, 2], [1, 2, 3, 4, 6]]), vid_lengths=torch.tensor([2, 3]))
    out.sum().backward()
    assert len(model.state_dict()) == n_keys
    assert model.co_attn.encoder_layers[0].linear_question.weight_raw.grad is not None


def test_block_chunk_sizes_match_block_bootstrap():
    from sparc.adapters.hga import get_sizes_list

    assert get_sizes_list(1600, 20) == [80] * 20
    assert get_sizes_list(40, 4) == [10] * 4
    assert get_sizes_list(10, 4) == [3, 3, 3, 1]
    assert get_sizes_list(9, 6) == [2, 2, 2, 1, 1, 1]


def test_unknown_fixture_model_raises(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "NoSuchModel"}))
    with pytest.raises(ValueError, match="NoSuchModel"):
        original_fixture(tmp_path)
