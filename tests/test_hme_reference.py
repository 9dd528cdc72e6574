"""The reference HME (sparc.adapters.hme) against the original doc-doc/NExT-QA code's fixture, the
original's defects it fixes (batch of one), exact padding (lengths mode), and the adapter functions
driving both the reference and an original-like class (bucket mode with guards)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparc.adapters.hme import (
    HME,
    EncoderQns,
    EncoderVidCoMem,
    MemoryRamModule,
    MemoryRamTwoStreamModule,
    fixture_model,
    forward_hme,
    hme_subset_mode,
)
from sparc.testing import FIXTURE_BUILDERS
from helpers import (as64, assert_batch_rows_equal_batches_of_one, assert_padded_frames_ignored, close64,  # tests/helpers.py
                     model64, run_eval as _run)

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "hme"


import cases.case_hme as cases  # pytest puts tests/ on sys.path


# --------------------------------------------------------------------------- the fixture


def test_checkpoint_loads_strictly_and_never_used_parameters_are_frozen():
    config = json.loads((FIXTURE / "config.json").read_text())
    model, _ = fixture_model(config)
    sd = load_file(str(FIXTURE / "state_dict.safetensors"))
    assert len(sd) == config["state_dict_num_keys"] == 110
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list(model.state_dict())[: len(config["state_dict_first_keys"])] == config["state_dict_first_keys"]
    assert sum(v.numel() for v in model.state_dict().values()) == config["state_dict_num_elements"]
    broken = dict(sd)
    del broken["mrm_txt.Wxh"]
    with pytest.raises(RuntimeError):
        model.load_state_dict(broken)

    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"linear_qns.weight", "linear_qns.bias", "mm_module_v1.mm_att.Wvh", "mm_module_v1.mm_att.Wth"}
    # Every other parameter is reached by one training forward with more than one frame and word.
    model.train()
    out, _ = model(torch.randn(2, 3, 4096), torch.randn(2, 5, 4, 768), torch.tensor([[4, 2, 3, 4, 1]] * 2))
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


# --------------------------------------------------------------------------- defects fixed, shapes


def test_batch_of_one_equals_row_of_batch(fx):
    assert_batch_rows_equal_batches_of_one(fx.model, fx.inputs["vid_feats"], fx.inputs["qas"], fx.inputs["qas_lengths"])


# Equivalences run a float64 copy of the model (tests/helpers.py, REL64): float32 would also test
# which kernels the CPU picks.

def test_single_frame_is_finite(fx):
    vid, qas, lens = fx.inputs["vid_feats"], fx.inputs["qas"], fx.inputs["qas_lengths"]
    out, _ = _run(fx.model, vid[:, :1], qas, lens)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    m, vid, qas = model64(fx.model), as64(vid), as64(qas)
    out1, _ = _run(m, vid[:1, :1], qas[:1], lens[:1])
    assert close64(out1[0], _run(m, vid[:, :1], qas, lens)[0][0])


def test_candidates_are_scored_independently(fx):
    model, vid, qas, lens = model64(fx.model), as64(fx.inputs["vid_feats"]), as64(fx.inputs["qas"]), fx.inputs["qas_lengths"]
    out, _ = _run(model, vid, qas, lens)
    out3, idx3 = _run(model, vid, qas[:, [4, 0, 2]], lens[:, [4, 0, 2]])
    assert out3.shape == (2, 3) and close64(out3, out[:, [4, 0, 2]])
    assert torch.equal(idx3, out[:, [4, 0, 2]].argmax(1))
    out10, _ = _run(model, vid, torch.cat([qas, qas], 1), torch.cat([lens, lens], 1))  # mixup's "concat"
    assert out10.shape == (2, 10) and close64(out10, torch.cat([out, out], 1))


def test_question_padding_has_no_influence(fx):
    model, vid, qas, lens = model64(fx.model), as64(fx.inputs["vid_feats"]), as64(fx.inputs["qas"]), fx.inputs["qas_lengths"]
    out, _ = _run(model, vid, qas, lens)
    garbage = 30 * torch.randn(*qas.shape[:2], 3, qas.shape[-1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out_longer, _ = _run(model, vid, torch.cat([qas, garbage], dim=2), lens)
    assert close64(out_longer, out)


def test_padded_frames_have_no_influence(fx):
    assert_padded_frames_ignored(fx.model, fx.inputs["qas"], fx.inputs["qas_lengths"], 4096)


def test_bad_lengths_and_encoders_are_refused(fx):
    vid, qas, lens = fx.inputs["vid_feats"], fx.inputs["qas"], fx.inputs["qas_lengths"]
    for bad in ([0, 4], [4, 5], [4]):
        with pytest.raises(ValueError, match="vid_lengths"):
            _run(fx.model, vid, qas, lens, vid_lengths=torch.tensor(bad))
    vid_enc = EncoderVidCoMem(3, 3, 8, rnn_cell="lstm")
    for kwargs in ({"n_layers": 1, "rnn_cell": "lstm"}, {"n_layers": 2, "rnn_cell": "gru"},
                   {"n_layers": 2, "rnn_cell": "lstm", "bidirectional": True}):
        qns = EncoderQns(8, 8, 1, None, True, **kwargs)
        with pytest.raises(ValueError, match="2-layer unidirectional LSTM"):
            HME(vid_enc, qns, 4, 5, None)
    with pytest.raises(ValueError, match="hidden size"):
        HME(EncoderVidCoMem(3, 3, 6), EncoderQns(8, 8, 1, None, True, n_layers=2, rnn_cell="lstm"), 4, 5, None)


# --------------------------------------------------------------------------- the memories


def test_memory_first_step_by_hand():
    torch.manual_seed(0)
    text = MemoryRamModule(input_size=3, hidden_size=4, memory_bank_size=5)
    x = torch.randn(2, 3)
    with torch.no_grad():
        h = text(x, 2)
        # t = 0: memory and hidden state are zero, so the read is zero and h_0 = relu(x_0 Wxh + bh).
        assert torch.allclose(h[0], torch.relu(x[0] @ text.Wxh + text.bh), atol=1e-6)
        # t = 1 reads slot mixture ar·M_0, where M_0 = gw·aw·c (the write into empty memory).
        xh = torch.cat([x[0], torch.zeros(4)])
        m0 = torch.sigmoid(text.write_gate(xh)) * torch.softmax(text.write_prob(xh), 0)[:, None] * torch.relu(text.hidden_to_content(xh))[None]
        xh1 = torch.cat([x[1], h[0]])
        r = torch.sigmoid(text.read_gate(xh1)) * (torch.softmax(text.read_prob(xh1), 0) @ m0)
        assert torch.allclose(h[1], torch.relu(x[1] @ text.Wxh + r @ text.Wrh + h[0] @ text.Whh + text.bh), atol=1e-6)

    video = MemoryRamTwoStreamModule(input_size=3, hidden_size=4, memory_bank_size=5)
    with torch.no_grad():
        # t = 0: the shared controller reads zero memory with a zero state: relu(read_to_hidden's bias).
        hv = video(torch.randn(1, 3), torch.randn(1, 3), 1)
        assert torch.allclose(hv[0], torch.relu(video.read_to_hidden.bias), atol=1e-7)


def test_memories_are_causal_and_batched_equals_original_call():
    torch.manual_seed(1)
    text = MemoryRamModule(input_size=4, hidden_size=4, memory_bank_size=3).double()
    video = MemoryRamTwoStreamModule(input_size=4, hidden_size=4, memory_bank_size=3).double()
    a, m = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(3, 6, 4, dtype=torch.float64)
    with torch.no_grad():
        batched_t, batched_v = text(a), video(a, m)
        for b, n in enumerate((6, 2, 4)):  # the original's call: one sample, its first n rows
            assert close64(text(a[b, :n], n), batched_t[b, :n])
            assert close64(video(a[b, :n], m[b, :n], n), batched_v[b, :n])
        later = a.clone()
        later[:, 3:] = 100.0
        assert close64(text(later)[:, :3], batched_t[:, :3]) and not close64(text(later)[:, 3:], batched_t[:, 3:])


def test_per_candidate_vq_encoder_equals_batched_forward(fx):
    vid, qas, lens = as64(fx.inputs["vid_feats"]), as64(fx.inputs["qas"]), fx.inputs["qas_lengths"]
    model = model64(fx.model).eval()
    with torch.no_grad():
        out, _ = model(vid, qas, lens)
        streams = model.vid_encoder(vid)
        for k in range(qas.shape[1]):  # the original's per-candidate call
            assert close64(model.vq_encoder(streams, qas[:, k], lens[:, k]), out[:, k])


# --------------------------------------------------------------------------- adapter functions

KEEP = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool)


def _sliced(model, batch, keep):
    rows = []
    for b in range(keep.shape[0]):
        rows.append(model(batch["vid_feats"][b : b + 1, keep[b]], batch["qas"][b : b + 1], batch["qas_lengths"][b : b + 1])[0])
    return torch.cat(rows)


@torch.no_grad()
def test_reference_lengths_mode_equals_physical_removal():
    model, adapter = cases.tiny_hme(HME).eval().double(), cases.MemoryAdapter()
    batch = as64(cases.hme_batch(4, 5, 0))
    assert hme_subset_mode(model) == adapter.mode_for(model) == "lengths"
    out = adapter.forward_subset(model, batch, KEEP).logits
    assert close64(out, _sliced(model, batch, KEEP))


@torch.no_grad()
def test_original_like_runs_in_bucket_mode_with_guards():
    reference = cases.tiny_hme(HME).eval().double()
    original = cases.tiny_hme(cases.OriginalLikeHME).eval().double()
    original.load_state_dict(reference.state_dict())
    adapter = cases.original_adapter()
    batch = as64(cases.hme_batch(4, 5, 0))
    assert hme_subset_mode(original) == adapter.mode_for(original) == "bucket"
    # rows 1 (one frame) and 3 (two frames) each sit alone in a bucket: batches of one, padded by the guard
    assert close64(adapter.forward_subset(original, batch, KEEP).logits, _sliced(reference, batch, KEEP))

    one = {k: v[:1] for k, v in batch.items()}
    with pytest.raises(AssertionError, match="squeezes"):
        original(one["vid_feats"], one["qas"], one["qas_lengths"])
    whole = forward_hme(original, one).logits
    assert whole.shape == (1, 5) and close64(whole, reference(one["vid_feats"], one["qas"], one["qas_lengths"])[0])

    # non-contiguous features and lengths given as a list of lists also pass through
    odd = dict(batch, vid_feats=batch["vid_feats"].transpose(0, 1).contiguous().transpose(0, 1),
               qas_lengths=batch["qas_lengths"].tolist())
    assert close64(forward_hme(original, odd).logits, reference(batch["vid_feats"], batch["qas"], batch["qas_lengths"])[0])


def test_original_like_refuses_padded_lengths():
    original = cases.tiny_hme(cases.OriginalLikeHME)
    batch = dict(cases.hme_batch(4, 5, 0), vid_lengths=torch.tensor([5, 3, 5, 5]))
    with pytest.raises(ValueError, match="cannot ignore padded frames"):
        forward_hme(original, batch)
    full = dict(batch, vid_lengths=torch.tensor([5, 5, 5, 5]))  # lengths that pad nothing are fine
    assert forward_hme(original.eval(), full).logits.shape == (4, 5)


def test_fixture_builder_is_registered():
    assert "HME" in FIXTURE_BUILDERS
    model, _ = FIXTURE_BUILDERS["HME"](json.loads((FIXTURE / "config.json").read_text()))
    assert isinstance(model, HME) and model.mrm_vid.memory_bank_size == 16 and model.mrm_txt.memory_bank_size == 37
