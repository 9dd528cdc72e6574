"""Tests for sparc.frames: causal-frame selection, top-k, spans, single-frame draws, gathering."""

import pytest
import torch

from sparc.frames import (
    bucket_by_count,
    gather_kept,
    one_frame_keep,
    sample_single_frame,
    select_causal_frames,
    slice_kept,
    span_frames,
    top_k_frames,
    valid_frames,
)


def priors_from_answer_probs(p_answer, answer, num_candidates=3):
    """Build ``[B, T, C]`` priors whose answer column is ``p_answer`` and the rest share 1 - p."""
    p_answer = torch.tensor(p_answer, dtype=torch.float32)
    B, T = p_answer.shape
    rest = (1 - p_answer) / (num_candidates - 1)
    priors = rest[..., None].expand(B, T, num_candidates).clone()
    for b, a in enumerate(answer):
        priors[b, :, a] = p_answer[b]
    return priors, torch.tensor(answer)


def rows(keep):
    return keep.tolist()


# ---- select_causal_frames -------------------------------------------------------------------------


def test_causal_basic_threshold_is_strict():
    priors, answer = priors_from_answer_probs([[0.9, 0.5, 0.51, 0.1], [0.2, 0.6, 0.5, 0.7]], [0, 2])
    keep = select_causal_frames(priors, answer, threshold=0.5)
    assert keep.dtype == torch.bool
    # 0.5 exactly equal to the threshold is NOT kept.
    assert rows(keep) == [[True, False, True, False], [False, True, False, True]]


def test_causal_reads_the_answer_column():
    # Same priors, other answer: different frames.
    priors = torch.tensor([[[0.8, 0.2], [0.3, 0.7]]])
    assert rows(select_causal_frames(priors, torch.tensor([0]))) == [[True, False]]
    assert rows(select_causal_frames(priors, torch.tensor([1]))) == [[False, True]]


def test_causal_other_threshold():
    priors, answer = priors_from_answer_probs([[0.9, 0.5, 0.3, 0.1]], [1])
    assert rows(select_causal_frames(priors, answer, threshold=0.2)) == [[True, True, True, False]]
    assert rows(select_causal_frames(priors, answer, threshold=0.3)) == [[True, True, False, False]]


def test_causal_default_empty_is_all():
    priors, answer = priors_from_answer_probs([[0.1, 0.2, 0.3]], [0])
    assert rows(select_causal_frames(priors, answer)) == [[True, True, True]]


@pytest.mark.parametrize(
    "empty, expected",
    [
        ("all", [[True, True, True, False], [False, True, False, False]]),
        ("top1", [[False, False, True, False], [False, True, False, False]]),
        ("skip", [[False, False, False, False], [False, True, False, False]]),
    ],
)
def test_causal_empty_policies(empty, expected):
    # Row 0: nothing above 0.5 (length 3, padding frame at t=3); row 1: one causal frame.
    priors, answer = priors_from_answer_probs([[0.1, 0.2, 0.4, 0.3], [0.1, 0.8, 0.2, 0.1]], [1, 0])
    lengths = torch.tensor([3, 4])
    keep = select_causal_frames(priors, answer, threshold=0.5, empty=empty, lengths=lengths)
    assert rows(keep) == expected


def test_causal_padding_never_kept_even_above_threshold():
    priors, answer = priors_from_answer_probs([[0.9, 0.2, 0.95, 0.99], [0.7, 0.8, 0.6, 0.9]], [0, 1])
    keep = select_causal_frames(priors, answer, threshold=0.5, lengths=torch.tensor([2, 1]))
    assert rows(keep) == [[True, False, False, False], [True, False, False, False]]


def test_causal_all_policy_ignores_padding():
    # The only frames above threshold are padding: "all" keeps the valid frames, not the padding.
    priors, answer = priors_from_answer_probs([[0.1, 0.2, 0.9, 0.99]], [0])
    keep = select_causal_frames(priors, answer, empty="all", lengths=torch.tensor([2]))
    assert rows(keep) == [[True, True, False, False]]


def test_causal_top1_policy_ignores_padding_argmax():
    # The highest answer prob (0.45) sits in padding; top1 must pick the best *valid* frame (0.3 at t=1).
    priors, answer = priors_from_answer_probs([[0.1, 0.3, 0.2, 0.45]], [2])
    keep = select_causal_frames(priors, answer, empty="top1", lengths=torch.tensor([3]))
    assert rows(keep) == [[False, True, False, False]]


def test_causal_skip_policy_ignores_padding():
    priors, answer = priors_from_answer_probs([[0.1, 0.3, 0.9]], [0])
    keep = select_causal_frames(priors, answer, empty="skip", lengths=torch.tensor([2]))
    assert rows(keep) == [[False, False, False]]


@pytest.mark.parametrize("empty", ["all", "top1", "skip"])
def test_causal_single_frame_video(empty):
    priors, answer = priors_from_answer_probs([[0.9], [0.1]], [0, 1])
    keep = select_causal_frames(priors, answer, empty=empty)
    assert keep.shape == (2, 1)
    assert rows(keep)[0] == [True]
    assert rows(keep)[1] == ([False] if empty == "skip" else [True])


@pytest.mark.parametrize("bad", [3, -1, 10])
def test_causal_answer_out_of_range_raises(bad):
    priors, _ = priors_from_answer_probs([[0.9, 0.1], [0.2, 0.8]], [0, 0])
    with pytest.raises(ValueError, match="answer"):
        select_causal_frames(priors, torch.tensor([0, bad]))


def test_causal_answer_of_the_wrong_shape_raises():
    # e.g. a backbone's token-id field passed where the labels belong (VGT names its labels answer_id)
    priors, _ = priors_from_answer_probs([[0.9, 0.1], [0.2, 0.8]], [0, 0])
    with pytest.raises(ValueError, match=r"answer must be \[B\] = \[2\]"):
        select_causal_frames(priors, torch.zeros(2, 5, 3, dtype=torch.long))


def test_causal_invalid_empty_raises():
    priors, answer = priors_from_answer_probs([[0.9, 0.1]], [0])
    with pytest.raises(ValueError, match="empty"):
        select_causal_frames(priors, answer, empty="none")


def test_causal_priors_must_be_3d():
    with pytest.raises(ValueError):
        select_causal_frames(torch.rand(2, 3), torch.tensor([0, 1]))


# ---- top_k_frames ---------------------------------------------------------------------------------


def test_top_k_basic():
    priors, answer = priors_from_answer_probs([[0.1, 0.7, 0.3, 0.5], [0.9, 0.2, 0.8, 0.1]], [0, 1])
    keep = top_k_frames(priors, answer, k=2)
    assert rows(keep) == [[False, True, False, True], [True, False, True, False]]


def test_top_k_larger_than_short_video():
    # Row 0 has 2 valid frames: k=3 keeps both (and no padding); row 1 keeps its top 3.
    priors, answer = priors_from_answer_probs([[0.1, 0.7, 0.99, 0.95], [0.4, 0.2, 0.8, 0.6]], [0, 1])
    keep = top_k_frames(priors, answer, k=3, lengths=torch.tensor([2, 4]))
    assert rows(keep) == [[True, True, False, False], [True, False, True, True]]


def test_top_k_larger_than_T():
    priors, answer = priors_from_answer_probs([[0.1, 0.7]], [0])
    assert rows(top_k_frames(priors, answer, k=5)) == [[True, True]]


def test_top_k_rejects_k_below_one():
    priors, answer = priors_from_answer_probs([[0.1, 0.7]], [0])
    with pytest.raises(ValueError):
        top_k_frames(priors, answer, k=0)


# ---- span_frames ----------------------------------------------------------------------------------


def test_span_frames_inside_span_shared_times():
    times = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    keep = span_frames(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.5]), times)
    # Inclusive bounds.
    assert rows(keep) == [[False, True, True, True, False], [True, False, False, False, False]]


def test_span_frames_per_sample_times():
    times = torch.tensor([[0.0, 2.0, 4.0], [1.0, 1.5, 2.0]])
    keep = span_frames(torch.tensor([1.0, 1.4]), torch.tensor([4.0, 1.6]), times)
    assert rows(keep) == [[False, True, True], [False, True, False]]


def test_span_frames_nearest_fallback():
    times = torch.tensor([0.0, 1.0, 2.0, 3.0])
    # Span [1.2, 1.4] covers no frame: centre 1.3, nearest frame is t=1.
    # Span [2.6, 2.9] covers no frame: centre 2.75, nearest frame is t=3.
    keep = span_frames(torch.tensor([1.2, 2.6]), torch.tensor([1.4, 2.9]), times)
    assert rows(keep) == [[False, True, False, False], [False, False, False, True]]


def test_span_frames_respects_lengths():
    times = torch.tensor([0.0, 1.0, 2.0, 3.0])
    # Row 0: span covers t=2,3 but only 2 valid frames -> no covered valid frame; centre 2.5 ->
    # nearest *valid* frame t=1.  Row 1: span covers t=1 and t=3 (padding) -> only t=1.
    keep = span_frames(torch.tensor([2.0, 1.0]), torch.tensor([3.0, 3.0]), times, lengths=torch.tensor([2, 2]))
    assert rows(keep) == [[False, True, False, False], [False, True, False, False]]


# ---- sample_single_frame ---------------------------------------------------------------------------


def test_sample_single_frame_always_valid():
    valid = valid_frames(6, torch.tensor([1, 3, 6, 2]), 4)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = sample_single_frame(valid, g)
        assert idx.shape == (4,)
        assert bool(valid.gather(1, idx[:, None]).all())
    assert idx[0].item() == 0  # a one-frame video always gets frame 0


def test_sample_single_frame_non_prefix_valid_mask():
    valid = torch.tensor([[False, True, False, True, False]])
    g = torch.Generator().manual_seed(1)
    seen = {int(sample_single_frame(valid, g)) for _ in range(100)}
    assert seen == {1, 3}


def test_sample_single_frame_roughly_uniform():
    # 5 valid frames out of 8; chi-square against uniform over the valid ones.
    n_valid, draws = 5, 20000
    valid = valid_frames(8, torch.tensor([n_valid] * draws), draws)
    g = torch.Generator().manual_seed(1234)
    idx = sample_single_frame(valid, g)
    counts = torch.bincount(idx, minlength=8).double()
    assert counts[n_valid:].sum() == 0
    expected = draws / n_valid
    chi2 = float(((counts[:n_valid] - expected) ** 2 / expected).sum())
    # 4 degrees of freedom: P(chi2 > 30) < 1e-5.
    assert chi2 < 30.0, (counts.tolist(), chi2)


def test_sample_single_frame_deterministic_given_seed():
    valid = valid_frames(7, torch.tensor([7, 3, 5, 1, 6]), 5)
    a = [sample_single_frame(valid, torch.Generator().manual_seed(42)) for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    seq1 = torch.stack([sample_single_frame(valid, g1) for _ in range(10)])
    seq2 = torch.stack([sample_single_frame(valid, g2) for _ in range(10)])
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
    assert torch.equal(seq1, seq2)
    # The draws vary from step to step (not a constant).
    assert len({tuple(r.tolist()) for r in seq1}) > 1


def test_sample_single_frame_does_not_touch_global_rng():
    valid = valid_frames(4, None, 3)
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    sample_single_frame(valid, torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(1), before)


def test_sample_single_frame_row_without_valid_frame_raises():
    valid = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="row 1"):
        sample_single_frame(valid, torch.Generator().manual_seed(0))


def test_one_frame_keep():
    keep = one_frame_keep(torch.tensor([2, 0]), 3)
    assert rows(keep) == [[False, False, True], [True, False, False]]


# ---- gather_kept / bucket_by_count / slice_kept ---------------------------------------------------


def test_gather_kept_order_padding_and_counts():
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2) + 1  # no zeros in x
    keep = torch.tensor([[False, True, False, True, True], [True, False, False, False, False]])
    g, counts = gather_kept(x, keep)
    assert counts.tolist() == [3, 1]
    assert g.shape == (2, 3, 2)
    assert torch.equal(g[0], x[0, [1, 3, 4]])  # temporal order preserved
    assert torch.equal(g[1, 0], x[1, 0])
    assert torch.equal(g[1, 1:], torch.zeros(2, 2))  # zero padding


def test_gather_kept_other_dim():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4) + 1  # time on dim 2
    keep = torch.tensor([[True, False, True, False], [False, False, False, True]])
    g, counts = gather_kept(x, keep, dim=2)
    assert counts.tolist() == [2, 1]
    assert g.shape == (2, 3, 2)
    assert torch.equal(g[0], x[0][:, [0, 2]])
    assert torch.equal(g[1][:, 0], x[1][:, 3])
    assert torch.equal(g[1][:, 1], torch.zeros(3))


def test_gather_kept_2d_field():
    x = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    keep = torch.tensor([[False, True, True, True], [False, False, True, False]])
    g, counts = gather_kept(x, keep)
    assert g.tolist() == [[2, 3, 4], [7, 0, 0]]
    assert counts.tolist() == [3, 1]


def test_bucket_by_count():
    keep = torch.tensor(
        [[True, True, False], [True, False, False], [False, True, True], [True, True, True], [False, False, True]]
    )
    buckets = bucket_by_count(keep)
    as_lists = [(c, r.tolist()) for c, r in buckets]
    assert as_lists == [(1, [1, 4]), (2, [0, 2]), (3, [3])]
    # Every row appears exactly once.
    assert sorted(i for _, r in buckets for i in r.tolist()) == list(range(5))


def test_slice_kept_equal_counts():
    x = torch.arange(2 * 4, dtype=torch.float32).view(2, 4)
    keep = torch.tensor([[False, True, False, True], [True, True, False, False]])
    s = slice_kept(x, keep)
    assert s.tolist() == [[1.0, 3.0], [4.0, 5.0]]


def test_slice_kept_unequal_counts_raises():
    x = torch.zeros(2, 3)
    keep = torch.tensor([[True, True, False], [True, False, False]])
    with pytest.raises(ValueError):
        slice_kept(x, keep)
