"""Tests for sparc.mixup: temporal-guided mixup and vanilla mixup on hand-checkable tensors."""

import pytest
import torch

from sparc.mixup import (
    MixedBatch,
    mixup,
    partner_frames,
    sample_lambda,
    sample_partners,
    temporal_guided_mixup,
)

B, T, D, C = 3, 4, 2, 3


def frames(b=B, t=T, d=D):
    """Distinct values everywhere so any wrong pairing shows: f[b, t, d] = 100 b + 10 t + d + 1."""
    bb = torch.arange(b, dtype=torch.float64)[:, None, None]
    tt = torch.arange(t, dtype=torch.float64)[None, :, None]
    dd = torch.arange(d, dtype=torch.float64)[None, None, :]
    return 100 * bb + 10 * tt + dd + 1


def random_priors(b=B, t=T, c=C, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(b, t, c, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum(-1, keepdim=True)


# keep: row 0 causal frames [1, 3]; row 1 [0, 2, 3]; row 2 [0].
KEEP = torch.tensor(
    [
        [False, True, False, True],
        [True, False, True, True],
        [True, False, False, False],
    ]
)
PERM = torch.tensor([1, 2, 0])
ANSWER = torch.tensor([2, 0, 1])


def causal_list(keep_row):
    return [t for t, k in enumerate(keep_row.tolist()) if k]


def expected_source(keep, perm, align):
    """t' for every (b, t), computed with python lists."""
    Bn, Tn = keep.shape
    src = [[t for t in range(Tn)] for _ in range(Bn)]
    if align == "position":
        return src
    for b in range(Bn):
        own = causal_list(keep[b])
        other = causal_list(keep[int(perm[b])])
        if not other:
            continue
        for i, t in enumerate(own):
            src[b][t] = other[i % len(other)]
    return src


def cand_feats(b=B):
    return torch.arange(b * C * 2, dtype=torch.float64).view(b, C, 2)


def run(lam, align="causal", candidates="concat", priors=None, **kw):
    batch = {"video": frames(), "qid": ["a", "b", "c"]}
    batch.update(kw.pop("extra", {}))
    if candidates == "concat" and "candidate" not in kw:  # concat needs a candidate field to double
        kw["candidate"], batch["cands"] = {"cands": 1}, cand_feats()
    return temporal_guided_mixup(
        batch,
        temporal={"video": 1},
        keep=KEEP,
        answer=ANSWER,
        lam=lam,
        perm=PERM,
        num_candidates=C,
        priors=priors,
        align=align,
        candidates=candidates,
        **kw,
    )


# ---- partner frames -------------------------------------------------------------------------------


def test_partner_frames_causal_by_hand():
    src = partner_frames(KEEP, PERM, "causal")
    # Row 0 (causal 1, 3) pairs with row 1's causal (0, 2, 3): 1->0, 3->2.
    # Row 1 (causal 0, 2, 3) pairs with row 2's single causal frame 0, cycling: 0->0, 2->0, 3->0.
    # Row 2 (causal 0) pairs with row 0's causal (1, 3): 0->1.
    assert src.tolist() == [[0, 0, 2, 2], [0, 1, 0, 0], [1, 1, 2, 3]]
    assert src.tolist() == expected_source(KEEP, PERM, "causal")


def test_partner_frames_position():
    assert partner_frames(KEEP, PERM, "position").tolist() == [list(range(T))] * B


def test_partner_frames_partner_without_causal_frames_falls_back_to_same_position():
    keep = torch.tensor([[False, True, True, False], [False, False, False, False]])
    src = partner_frames(keep, torch.tensor([1, 0]), "causal")
    assert src.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_partner_frames_bad_align_raises():
    with pytest.raises(ValueError, match="align"):
        partner_frames(KEEP, PERM, "diagonal")


# ---- λ = 1 is the identity -------------------------------------------------------------------------


@pytest.mark.parametrize("align", ["causal", "position"])
def test_lambda_one_is_identity_concat(align):
    priors = random_priors()
    out = run(1.0, align=align, priors=priors)
    assert isinstance(out, MixedBatch)
    assert torch.equal(out.batch["video"], frames())
    assert out.batch["qid"] == ["a", "b", "c"]
    assert torch.equal(out.priors, torch.cat([priors, torch.zeros_like(priors)], dim=2))
    onehot = torch.nn.functional.one_hot(ANSWER, C).float()
    assert torch.equal(out.target, torch.cat([onehot, torch.zeros_like(onehot)], dim=1))
    assert out.lam == 1.0
    assert torch.equal(out.perm, PERM)


def test_lambda_one_is_identity_pairwise():
    priors = random_priors()
    out = run(1.0, candidates="pairwise", priors=priors, candidate={"cands": 1},
              extra={"cands": torch.randn(B, C, 5, dtype=torch.float64)})
    assert torch.equal(out.batch["video"], frames())
    assert torch.allclose(out.priors, priors)
    assert torch.equal(out.target, torch.nn.functional.one_hot(ANSWER, C).float())


# ---- frames ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.77, 1.0])
@pytest.mark.parametrize("align", ["causal", "position"])
def test_non_causal_frames_untouched(lam, align):
    out = run(lam, align=align)
    f = frames()
    for b in range(B):
        for t in range(T):
            if not KEEP[b, t]:
                assert torch.equal(out.batch["video"][b, t], f[b, t])


@pytest.mark.parametrize("align", ["causal", "position"])
@pytest.mark.parametrize("lam", [0.25, 0.6])
def test_causal_frame_equation_elementwise(align, lam):
    out = run(lam, align=align)
    f = frames()
    src = expected_source(KEEP, PERM, align)
    assert out.source_frame.tolist() == src
    for b in range(B):
        p = int(PERM[b])
        for t in causal_list(KEEP[b]):
            tp = src[b][t]
            for d in range(D):
                expected = lam * f[b, t, d].item() + (1 - lam) * f[p, tp, d].item()
                assert out.batch["video"][b, t, d].item() == pytest.approx(expected, abs=1e-9)


def test_causal_align_literal_values():
    # lam = 0.5, row 0 frame 3 pairs with row 1 frame 2: (0.5*(31) + 0.5*(121)) = 76 for d = 0.
    out = run(0.5)
    assert out.batch["video"][0, 3, 0].item() == pytest.approx(0.5 * 31 + 0.5 * 121)
    # Row 1 frame 3 pairs with row 2 frame 0 (cycling): 0.5*131 + 0.5*201.
    assert out.batch["video"][1, 3, 0].item() == pytest.approx(0.5 * 131 + 0.5 * 201)
    # position align: row 1 frame 3 with row 2 frame 3 (not causal there, still used as partner).
    out = run(0.5, align="position")
    assert out.batch["video"][1, 3, 0].item() == pytest.approx(0.5 * 131 + 0.5 * 231)


def test_temporal_field_on_other_dim_and_several_fields():
    # "clip" carries time on dim 2: [B, D, T]. Both fields are mixed with the same pairing.
    f = frames()
    clip = f.permute(0, 2, 1).contiguous() * 3
    batch = {"video": f, "clip": clip}
    out = temporal_guided_mixup(batch, temporal={"video": 1, "clip": 2}, keep=KEEP, answer=ANSWER,
                                lam=0.4, perm=PERM, num_candidates=C)
    assert torch.allclose(out.batch["clip"], out.batch["video"].permute(0, 2, 1) * 3)


def test_integer_temporal_field_passes_through():
    mask = torch.ones(B, T, dtype=torch.long)
    batch = {"video": frames(), "frame_mask": mask}
    out = temporal_guided_mixup(batch, temporal={"video": 1, "frame_mask": 1}, keep=KEEP, answer=ANSWER,
                                lam=0.4, perm=PERM, num_candidates=C)
    assert out.batch["frame_mask"] is mask


def test_partner_without_causal_frames_mixes_same_position():
    keep = torch.tensor([[False, True, True, False], [False, False, False, False], [True, False, False, False]])
    perm = torch.tensor([1, 0, 2])
    f = frames()
    out = temporal_guided_mixup({"video": f}, temporal={"video": 1}, keep=keep, answer=ANSWER,
                                lam=0.3, perm=perm, num_candidates=C)
    for t in (1, 2):
        assert torch.allclose(out.batch["video"][0, t], 0.3 * f[0, t] + 0.7 * f[1, t])
    assert torch.equal(out.batch["video"][1], f[1])  # row 1 has no causal frame: unchanged
    assert torch.allclose(out.batch["video"][2], f[2])  # row 2 is its own partner: mixing with itself


# ---- labels and priors ----------------------------------------------------------------------------


def test_concat_target_and_candidates():
    lam = 0.7
    cands = torch.arange(B * C * 2).view(B, C, 2)  # token ids are fine in concat mode
    out = run(lam, candidate={"cands": 1}, extra={"cands": cands})
    assert out.target.shape == (B, 2 * C)
    for b in range(B):
        expected = [0.0] * (2 * C)
        expected[int(ANSWER[b])] += lam
        expected[C + int(ANSWER[PERM[b]])] += 1 - lam
        assert out.target[b].tolist() == pytest.approx(expected)
    assert torch.equal(out.batch["cands"], torch.cat([cands, cands[PERM]], dim=1))
    assert torch.allclose(out.target.sum(1), torch.ones(B))


def test_concat_priors_by_hand():
    lam = 0.7
    priors = random_priors()
    out = run(lam, priors=priors)
    src = expected_source(KEEP, PERM, "causal")
    assert out.priors.shape == (B, T, 2 * C)
    for b in range(B):
        p = int(PERM[b])
        for t in range(T):
            if KEEP[b, t]:
                own = lam * priors[b, t]
                other = (1 - lam) * priors[p, src[b][t]]
            else:
                own, other = priors[b, t], torch.zeros(C, dtype=priors.dtype)
            assert torch.allclose(out.priors[b, t], torch.cat([own, other]))


def test_pairwise_target_candidates_and_priors():
    lam = 0.35
    priors = random_priors(seed=1)
    cands = torch.randn(B, C, 5, dtype=torch.float64)
    cand_len = torch.tensor([[3, 5, 2], [4, 1, 6], [2, 2, 2]])
    out = run(lam, candidates="pairwise", priors=priors, candidate={"cands": 1, "cand_len": 1},
              extra={"cands": cands, "cand_len": cand_len})
    onehot = torch.nn.functional.one_hot(ANSWER, C).float()
    assert torch.allclose(out.target, lam * onehot + (1 - lam) * onehot[PERM])
    assert out.target.shape == (B, C)
    assert torch.allclose(out.batch["cands"], lam * cands + (1 - lam) * cands[PERM])
    assert torch.equal(out.batch["cand_len"], torch.maximum(cand_len, cand_len[PERM]))
    src = expected_source(KEEP, PERM, "causal")
    for b in range(B):
        for t in range(T):
            expected = lam * priors[b, t] + (1 - lam) * priors[int(PERM[b]), src[b][t]] if KEEP[b, t] else priors[b, t]
            assert torch.allclose(out.priors[b, t], expected)


def test_pairwise_integer_token_ids_raise():
    tokens = torch.randint(0, 100, (B, C, 7))
    with pytest.raises(ValueError, match="cand_tokens"):
        run(0.5, candidates="pairwise", candidate={"cand_tokens": 1}, extra={"cand_tokens": tokens})


def test_open_ended_mixes_question_fields():
    lam = 0.6
    q = torch.randn(B, 6, 4, dtype=torch.float64)
    q_len = torch.tensor([6, 2, 4])
    cands = torch.arange(B * C).view(B, C)  # left alone in open-ended mode
    out = run(lam, open_ended=True, question={"q": 1, "q_len": 0}, candidate={"cands": 1},
              extra={"q": q, "q_len": q_len, "cands": cands})
    assert torch.allclose(out.batch["q"], lam * q + (1 - lam) * q[PERM])
    assert out.batch["q_len"].tolist() == [6, 4, 6]
    assert out.batch["cands"] is cands
    onehot = torch.nn.functional.one_hot(ANSWER, C).float()
    assert torch.allclose(out.target, lam * onehot + (1 - lam) * onehot[PERM])


def test_open_ended_integer_question_raises():
    with pytest.raises(ValueError):
        run(0.5, open_ended=True, question={"q_ids": 1}, extra={"q_ids": torch.randint(0, 9, (B, 5))})


@pytest.mark.parametrize("candidates", ["concat", "pairwise"])
@pytest.mark.parametrize("align", ["causal", "position"])
@pytest.mark.parametrize("lam", [0.0, 0.13, 0.5, 0.92])
def test_mixed_prior_rows_sum_to_one(candidates, align, lam):
    priors = random_priors(seed=3)
    out = run(lam, align=align, candidates=candidates, priors=priors)
    assert torch.allclose(out.priors.sum(-1), torch.ones(B, T, dtype=priors.dtype))
    assert torch.allclose(out.target.sum(-1), torch.ones(B))


def test_bad_candidates_mode_raises():
    with pytest.raises(ValueError, match="candidates"):
        run(0.5, candidates="stacked")


# ---- odd batch sizes ------------------------------------------------------------------------------


def test_batch_of_three_with_generator_perm():
    g = torch.Generator().manual_seed(5)
    perm = sample_partners(3, g)
    assert sorted(perm.tolist()) == [0, 1, 2]
    out = temporal_guided_mixup({"video": frames(), "cands": cand_feats()}, temporal={"video": 1}, keep=KEEP,
                                answer=ANSWER, lam=0.4, perm=perm, num_candidates=C, priors=random_priors(),
                                candidate={"cands": 1})
    assert out.batch["video"].shape == (3, T, D)
    assert out.target.shape == (3, 2 * C)
    assert torch.allclose(out.priors.sum(-1), torch.ones(3, T, dtype=torch.float64))


def test_batch_of_one_is_its_own_partner():
    g = torch.Generator().manual_seed(0)
    perm = sample_partners(1, g)
    assert perm.tolist() == [0]
    f = frames(b=1)
    keep = torch.tensor([[True, False, True, True]])
    priors = random_priors(b=1)
    ans = torch.tensor([1])
    for candidates in ("concat", "pairwise"):
        out = temporal_guided_mixup({"video": f, "cands": cand_feats(1)}, temporal={"video": 1}, keep=keep,
                                    answer=ans, lam=0.3, perm=perm, num_candidates=C, priors=priors,
                                    candidates=candidates, candidate={"cands": 1})
        assert torch.allclose(out.batch["video"], f)  # mixing a frame with itself
        if candidates == "pairwise":
            assert torch.allclose(out.target, torch.tensor([[0.0, 1.0, 0.0]]))
            assert torch.allclose(out.priors, priors)
        else:
            assert torch.allclose(out.target, torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.7, 0.0]]))
            assert torch.allclose(out.priors.sum(-1), torch.ones(1, T, dtype=torch.float64))


# ---- vanilla mixup --------------------------------------------------------------------------------


def test_vanilla_mixup_mixes_every_frame_position_aligned():
    lam = 0.45
    f = frames()
    priors = random_priors()
    out = mixup({"video": f, "cands": cand_feats()}, temporal={"video": 1}, answer=ANSWER, lam=lam, perm=PERM,
                num_candidates=C, priors=priors, candidate={"cands": 1})
    assert torch.allclose(out.batch["video"], lam * f + (1 - lam) * f[PERM])
    assert out.source_frame.tolist() == [list(range(T))] * B
    own, other = out.priors[..., :C], out.priors[..., C:]
    assert torch.allclose(own, lam * priors)
    assert torch.allclose(other, (1 - lam) * priors[PERM])
    onehot = torch.nn.functional.one_hot(ANSWER, C).float()
    assert torch.allclose(out.target, torch.cat([lam * onehot, (1 - lam) * onehot[PERM]], 1))


def test_vanilla_mixup_with_valid_mask_and_pairwise():
    lam = 0.45
    f = frames()
    valid = torch.tensor([[True, True, True, False]] * B)
    out = mixup({"video": f}, temporal={"video": 1}, answer=ANSWER, lam=lam, perm=PERM, num_candidates=C,
                valid=valid, candidates="pairwise")
    assert torch.allclose(out.batch["video"][:, :3], lam * f[:, :3] + (1 - lam) * f[PERM, :3])
    assert torch.equal(out.batch["video"][:, 3], f[:, 3])
    onehot = torch.nn.functional.one_hot(ANSWER, C).float()
    assert torch.allclose(out.target, lam * onehot + (1 - lam) * onehot[PERM])


# ---- λ sampling -----------------------------------------------------------------------------------


def test_sample_lambda_deterministic_and_in_range():
    a = [sample_lambda(0.1, 0.1, g) for g in [torch.Generator().manual_seed(11)] for _ in range(50)]
    b = [sample_lambda(0.1, 0.1, g) for g in [torch.Generator().manual_seed(11)] for _ in range(50)]
    assert a == b
    assert all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in a)
    assert len(set(a)) > 1
    c = [sample_lambda(0.1, 0.1, g) for g in [torch.Generator().manual_seed(12)] for _ in range(50)]
    assert a != c


def test_sample_lambda_beta_shape():
    g = torch.Generator().manual_seed(0)
    # α = β = 0.1 is U-shaped: most draws near 0 or 1. α = β = 50 concentrates near 0.5.
    u = [sample_lambda(0.1, 0.1, g) for _ in range(400)]
    assert sum(x < 0.1 or x > 0.9 for x in u) > 0.6 * len(u)
    m = [sample_lambda(50.0, 50.0, g) for _ in range(400)]
    assert abs(sum(m) / len(m) - 0.5) < 0.02


def test_sample_lambda_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    sample_lambda(0.1, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(torch.rand(1), before)


# ---- candidate modes: what the adapter can express ---------------------------------------------------

# Two questions, two frames of one feature, three candidates; row 0 keeps frame 0, row 1 both frames.
SMALL_VIDEO = torch.tensor([[[1.0], [2.0]], [[10.0], [20.0]]])
SMALL_KEEP = torch.tensor([[True, False], [True, True]])
SMALL_PRIORS = torch.tensor([[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]],
                             [[0.2, 0.2, 0.6], [0.0, 0.4, 0.6]]])


def test_auto_without_candidate_fields_mixes_frames_and_labels_by_hand():
    question = torch.tensor([[5.0], [7.0]])
    out = temporal_guided_mixup({"video": SMALL_VIDEO, "question": question}, temporal={"video": 1},
                                keep=SMALL_KEEP, answer=torch.tensor([0, 2]), lam=0.75, perm=torch.tensor([1, 0]),
                                num_candidates=3, priors=SMALL_PRIORS)
    # row 0, frame 0 with row 1's first causal frame: .75*1 + .25*10; frame 1 is not causal.
    # row 1, frames 0 and 1 with row 0's only causal frame 0 (cycled): .75*10 + .25*1, .75*20 + .25*1.
    assert out.batch["video"].flatten().tolist() == [3.25, 2.0, 7.75, 15.25]
    # labels over the model's own 3 candidates: .75*onehot(0) + .25*onehot(2), and the reverse
    assert out.target.tolist() == [[0.75, 0.0, 0.25], [0.25, 0.0, 0.75]]
    assert out.batch["question"] is question             # no candidate field declared: nothing else is mixed
    expected_priors = [[[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]],
                       [[0.3, 0.2, 0.5], [0.15, 0.35, 0.5]]]
    assert torch.allclose(out.priors, torch.tensor(expected_priors))


def test_auto_with_a_candidate_field_is_concat():
    out = run(0.7, candidates="auto", candidate={"cands": 1}, extra={"cands": cand_feats()})
    assert out.target.shape == (B, 2 * C)
    assert out.batch["cands"].shape == (B, 2 * C, 2)


def test_concat_without_a_candidate_field_is_refused():
    with pytest.raises(ValueError, match=r"candidates='concat' .* declares its candidate field"):
        run(0.5, candidates="concat", candidate={})
    with pytest.raises(ValueError, match=r"candidates='concat'"):
        mixup({"video": frames()}, temporal={"video": 1}, answer=ANSWER, lam=0.5, perm=PERM, num_candidates=C,
              candidates="concat")
