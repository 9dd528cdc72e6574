"""VGTAdapter: mask mode for the reference VGT, bucket mode (with guards) for the original class,
fields derived as the original pipeline derives them, and the open-ended head."""

from pathlib import Path

import pytest
import torch

import sparc
from sparc.adapters.vgt import VGTAdapter
from sparc.testing import assert_float32_close, original_fixture
from helpers import as64, close64  # tests/helpers.py

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "vgt"


import cases.case_vgt as case  # pytest puts tests/ on sys.path
KEEP = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 1]], dtype=torch.bool)

# Equivalences (mask mode = removal, original class = reference, batch of one = its row) run in float64,
# to 1e-10 relative (helpers.REL64): float32 would also test the CPU's kernels, while a hidden clip that
# leaked would move the logits by 1e-2 or more.


def tiny64(*args, **kwargs):
    return case.tiny_vgt(*args, **kwargs).double()


def sliced_rows(model, adapter, batch, keep):
    """Each row alone, its dropped clips physically removed."""
    rows = []
    for b in range(keep.shape[0]):
        alone = adapter.slice_frames(adapter.select_batch(batch, torch.tensor([b])), keep[b : b + 1])
        rows.append(adapter.forward(model, alone).logits)
    return torch.cat(rows)


@torch.no_grad()
def test_reference_runs_in_mask_mode_and_equals_slicing():
    model, adapter = tiny64(seed=0).eval(), VGTAdapter()
    batch = as64(case.vgt_batch(4, 6, seed=0))
    assert adapter.mode_for(model) == "mask"
    expected = sliced_rows(model, adapter, batch, KEEP)
    got = adapter.forward_subset(model, batch, KEEP)
    assert got.logits.shape == (4, 5) and close64(got.logits, expected)
    assert close64(adapter.with_subset_mode("bucket").forward_subset(model, batch, KEEP).logits, expected)
    # the mask view keeps T clips and only narrows video_mask
    view = adapter.subset(batch, KEEP)
    assert view["video_f"].shape[1] == 6 and torch.equal(view["video_mask"].bool(), KEEP)


@torch.no_grad()
def test_original_runs_in_bucket_mode():
    reference = tiny64(seed=0).eval()
    original = tiny64(case.OriginalLikeVGT, seed=9).eval()
    original.load_state_dict(reference.state_dict())
    adapter = VGTAdapter()
    assert adapter.mode_for(original) == "bucket"
    batch = as64(case.vgt_batch(4, 6, seed=0))
    with pytest.raises(AssertionError, match="cannot hide clips"):  # what mask mode would do to it
        adapter.with_subset_mode("mask").forward_subset(original, batch, KEEP)
    got = adapter.forward_subset(original, batch, KEEP).logits
    assert close64(got, sliced_rows(reference, adapter, batch, KEEP))
    assert close64(adapter.forward(original, batch).logits, adapter.forward(reference, batch).logits)


@torch.no_grad()
def test_wrapped_models_keep_their_mode():
    model = case.tiny_vgt(seed=0).eval()
    assert VGTAdapter().mode_for(torch.nn.DataParallel(model)) == "mask"
    assert VGTAdapter().mode_for(torch.nn.DataParallel(case.tiny_vgt(case.OriginalLikeVGT))) == "bucket"


@torch.no_grad()
def test_derived_fields_follow_the_original_pipeline():
    fx = original_fixture(FIXTURE)
    x, adapter = fx.inputs, VGTAdapter()
    bare = {k: x[k] for k in ("video_o", "video_f", "answer", "question", "video_len")}
    filled = adapter.fill_derived(bare)
    assert torch.equal(filled["seq_len"], x["seq_len"])  # the per-sample padded width (10), not 8-10
    assert torch.equal(filled["text_mask"], (x["answer"] > 0).float())
    assert torch.equal(filled["video_mask"], x["video_mask"])  # util.get_mask(video_len, numc)
    out = adapter.forward(fx.model, bare)  # the recorded float32 outputs, to float32 rounding at their scale
    assert_float32_close(out.logits, fx.outputs["logits"], name="logits")
    assert_float32_close(out.hypothesis, fx.outputs["answer_g"], name="answer_g")
    # candidates concatenated by mixup: a stale text_mask is rebuilt, seq_len travels with them
    doubled = dict(bare, answer=torch.cat([x["answer"], x["answer"].flip(0)], 1),
                   seq_len=torch.cat([x["seq_len"], x["seq_len"].flip(0)], 1), text_mask=(x["answer"] > 0).float())
    refilled = adapter.fill_derived(doubled)
    assert refilled["text_mask"].shape == (2, 10, 12) and refilled["seq_len"].shape == (2, 10)
    assert adapter.forward(fx.model, doubled).logits.shape == (2, 10)


@torch.no_grad()
def test_padded_videos_from_video_len():
    model, adapter = tiny64(seed=1).eval(), VGTAdapter()
    batch = as64(case.vgt_batch(3, 5, seed=1))
    batch["video_len"] = torch.tensor([5, 2, 4])
    valid = adapter.valid_frames(batch)
    assert torch.equal(valid, torch.arange(5)[None] < batch["video_len"][:, None])
    noisy = dict(batch, video_f=batch["video_f"].masked_fill(~valid[:, :, None, None], 1e3))
    out = adapter.forward(model, noisy).logits
    assert close64(out, sliced_rows(model, adapter, batch, valid))


@torch.no_grad()
def test_open_ended_adapter_and_the_batch_of_one_guard():
    reference = tiny64(seed=3, Q=case.QMAX).eval()
    original = tiny64(case.OriginalLikeVGT, seed=3, Q=case.QMAX).eval()
    original.load_state_dict(reference.state_dict())
    adapter = VGTAdapter(open_ended=True, a2v=case.A2V)
    assert adapter.open_ended and adapter.candidate == {} and adapter.num_answers == len(case.A2V)
    batch = as64(case.vgt_open_batch(3, 4, seed=3))
    whole = adapter.forward(reference, batch).logits
    assert whole.shape == (3, len(case.A2V))
    assert close64(adapter.forward(original, batch).logits, whole)
    one = {k: (v[:1] if torch.is_tensor(v) else v[:1]) for k, v in batch.items()}
    with pytest.raises(AssertionError, match="pooler_output"):  # the original alone
        original((one["video_o"], one["video_f"]), one["question"], video_mask=torch.ones(1, 4, dtype=torch.float64),
                 seq_len=(one["question"] > 0).sum(-1, keepdim=True))
    assert close64(adapter.forward(original, one).logits, whole[:1])
    assert close64(adapter.forward(reference, one).logits, whole[:1])
    # answer embeddings computed by the user, as the original loop does each step
    user = VGTAdapter(open_ended=True)
    with pytest.raises(ValueError, match="a2v"):
        user.forward(tiny64(seed=3, Q=case.QMAX).eval(), batch)
    reference._compute_answer_embedding(case.A2V)
    assert close64(user.forward(reference, batch).logits, whole)
    with pytest.raises(ValueError, match="open_ended"):
        VGTAdapter(a2v=case.A2V)


def test_sparc_step_with_concatenated_candidates():
    model = case.tiny_vgt(seed=5).train()
    batch = case.vgt_batch(4, 4, seed=5)
    adapter = VGTAdapter()
    trainer = sparc.wrap(model, adapter, [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation(),
                                          sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0)])
    trainer.reseed(0)
    priors = torch.softmax(torch.randn(4, 4, 5, generator=torch.Generator().manual_seed(0)), -1)
    priors[:, ::2, :] = 0.0
    priors[torch.arange(4), ::2, batch["answer_id"]] = 1.0  # clips 0 and 2 are causal
    out = trainer(batch, priors=priors)
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 10)  # own 5 + the partner's 5
    assert torch.equal(out.keep, torch.tensor([[True, False, True, False]] * 4))
    assert trainer.ddp_kwargs() == {"find_unused_parameters": True}


def test_training_views_share_batchnorm_without_breaking_backward():
    # A whole video with every clip valid, then a masked causal view, then backward: BatchNorm's running
    # statistics are updated by each view's forward. torch's own batch_norm saves them for its backward,
    # so the reference computes training statistics itself (found by `sparc demo --backbone vgt`).
    model = case.tiny_vgt(seed=3).train()
    batch = case.vgt_batch(4, 6, seed=3)
    del batch["video_len"]                                   # all clips valid: the plain path
    adapter = VGTAdapter()
    whole = adapter.forward(model, batch).logits
    causal = adapter.forward_subset(model, batch, KEEP).logits  # mask mode, varied kept counts
    (whole.sum() + causal.sum()).backward()
    bn = model.encode_vid.bbox_conv[1]
    assert bn.num_batches_tracked.item() == 2 and model.encode_vid.bbox_conv[0].weight.grad is not None
