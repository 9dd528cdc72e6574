"""HGAAdapter: lengths mode for the reference HGA, bucket mode with guards for the original class."""

import pytest
import torch

from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

from cases.case_hga import OriginalLikeHGA
from helpers import as64, close64  # tests/helpers.py

# The equivalences run in float64, to 1e-10 relative (helpers.REL64): in float32 they would also test
# the CPU's kernels; a padded or dropped frame leaking in moves the logits by 1e-2 or more.


def build(cls, **kwargs):
    """The stand-in masks by the intended rule here: which real rows the original's zero-sum rule
    hits depends on the CPU's summation order, and these equivalences must hold on any CPU."""
    torch.manual_seed(0)
    vid = EncoderVidHGA(dim_vid=6, dim_hidden=8, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=8, dim_hidden=8, vocab_size=1, glove_embed=None, use_bert=True, input_dropout_p=0.0)
    if cls is OriginalLikeHGA:
        kwargs.setdefault("zero_sum_masking", False)
    return cls(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2}, **kwargs).eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return {"vid_feats": torch.randn(4, 6, 6, generator=g), "qas": torch.randn(4, 5, 3, 768, generator=g),
            "qas_lengths": torch.tensor([[3, 2, 3, 3, 1]] * 4)}


KEEP = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)


def sliced_reference(model, batch, keep):
    rows = []
    for b in range(keep.shape[0]):
        frames = batch["vid_feats"][b:b + 1, keep[b]]
        rows.append(model(frames, batch["qas"][b:b + 1], batch["qas_lengths"][b:b + 1])[0])
    return torch.cat(rows)


@torch.no_grad()
def test_reference_runs_in_lengths_mode_and_equals_slicing(batch):
    model, adapter, batch = build(HGA).double(), HGAAdapter(), as64(batch)
    assert adapter.mode_for(model) == "lengths"
    out = adapter.forward_subset(model, batch, KEEP).logits
    assert close64(out, sliced_reference(model, batch, KEEP))


@torch.no_grad()
def test_original_runs_in_bucket_mode_with_guards(batch):
    original, reference, adapter = build(OriginalLikeHGA).double(), build(HGA).double(), HGAAdapter()
    original.load_state_dict(reference.state_dict())
    batch = as64(batch)
    assert adapter.mode_for(original) == "bucket"
    out = adapter.forward_subset(original, batch, KEEP).logits   # row 1 keeps one frame and is alone in its bucket
    expected = sliced_reference(reference, batch, KEEP)
    # the one-frame row is shown as that frame twice (the original's guard); the rest match slicing exactly
    twice = batch["vid_feats"][1:2, [4, 4]]
    expected[1] = reference(twice, batch["qas"][1:2], batch["qas_lengths"][1:2])[0][0]
    assert close64(out, expected)


@torch.no_grad()
def test_original_single_frame_view_and_batch_of_one(batch):
    original, adapter = build(OriginalLikeHGA), HGAAdapter()
    one = {k: v[:1] for k, v in batch.items()}
    whole = adapter.forward(original, one).logits
    assert whole.shape == (1, 5)
    single = adapter.forward_subset(original, batch, torch.eye(6, dtype=torch.bool)[[0, 2, 4, 5]]).logits
    assert single.shape == (4, 5) and torch.isfinite(single).all()


def test_original_refuses_padded_lengths(batch):
    original = build(OriginalLikeHGA)
    with pytest.raises(ValueError, match="cannot ignore padded frames"):
        HGAAdapter().forward(original, {**batch, "vid_lengths": torch.tensor([6, 3, 6, 6])})
