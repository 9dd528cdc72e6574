"""sparc.wrap: eval is the bare model, each view runs once per step, the terms follow the equations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparc
from sparc.adapters import FunctionAdapter, HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
from sparc.frames import sample_single_frame


class MeanScorer(nn.Module):
    """Deterministic toy backbone: masked-by-lengths mean of frames dotted with candidate vectors.
    Records the time axis of every call so tests can count views."""

    def __init__(self, dim=4):
        super().__init__()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.calls = []

    def forward(self, video, cands, lengths=None):
        self.calls.append(video.shape[1])
        h = self.proj(video)
        if lengths is not None:
            m = (torch.arange(video.shape[1])[None] < lengths[:, None]).to(h)[..., None]
            h = (h * m).sum(1) / m.sum(1)
        else:
            h = h.mean(1)
        return torch.einsum("bd,bcd->bc", h, cands)


def toy_adapter():
    return FunctionAdapter(lambda m, x: m(x["video"], x["cands"], x.get("lengths")), temporal={"video": 1},
                           candidate={"cands": 1}, subset="lengths", lengths_field="lengths")


def toy_batch(B=4, T=5, C=3, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "qid": [f"q{i}" for i in range(B)],
        "video": torch.randn(B, T, D, generator=g),
        "cands": torch.randn(B, C, D, generator=g),
        "answer": torch.tensor([0, 1, 2, 1])[:B] % C,
    }


def priors_with(keep_prob, answer, C=3):
    """Priors whose correct-answer column is ``keep_prob`` [B, T]; the rest spread evenly."""
    B, T = keep_prob.shape
    rest = (1 - keep_prob)[..., None].expand(B, T, C) / (C - 1)
    p = rest.clone()
    p.scatter_(2, answer[:, None, None].expand(B, T, 1), keep_prob[..., None])
    return p


def small_hga(dim=8, hidden=8):
    vid = EncoderVidHGA(dim_vid=dim, dim_hidden=hidden, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True, input_dropout_p=0.0)
    return HGA(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2})


def test_eval_forward_is_the_bare_model():
    torch.manual_seed(0)
    model = small_hga()
    batch = {"vid_feats": torch.randn(3, 6, 8), "qas": torch.randn(3, 5, 4, 768),
             "qas_lengths": torch.tensor([[4, 3, 4, 2, 4]] * 3), "answer": torch.tensor([0, 1, 2])}
    wrapped = sparc.wrap(model, HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()]).eval()
    model.eval()
    with torch.no_grad():
        bare, _ = model(batch["vid_feats"], batch["qas"], batch["qas_lengths"])
        assert torch.equal(wrapped(batch).logits, bare)


def test_terms_follow_the_equations_and_each_view_runs_once():
    torch.manual_seed(0)
    model, adapter, batch = MeanScorer(), toy_adapter(), toy_batch()
    keep_prob = torch.tensor([[0.9, 0.1, 0.8, 0.1, 0.1],    # keeps frames 0, 2
                              [0.1, 0.1, 0.1, 0.1, 0.1],    # nothing: empty="all" keeps all
                              [0.6, 0.7, 0.9, 0.6, 0.55],   # keeps all five frames
                              [0.1, 0.1, 0.1, 0.1, 0.7]])   # keeps frame 4
    priors = priors_with(keep_prob, batch["answer"])
    tg, sd = sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation(weight=0.5)
    wrapped = sparc.wrap(model, adapter, [tg, sd])
    wrapped.reseed(7)
    expected_frame = sample_single_frame(torch.ones(4, 5, dtype=torch.bool), torch.Generator().manual_seed(7 * 1009 + 1))

    out = wrapped(batch, priors=priors)
    # whole (T=5), causal rows 0 and 3 (lengths mode: padded to 2), single frame (T=1): one call each
    assert model.calls == [5, 2, 1]
    assert set(out.terms) == {"guided", "consistency", "spatial"}

    with torch.no_grad():
        whole = model(batch["video"], batch["cands"])
        guided = whole.clone()
        for row, frames in [(0, [0, 2]), (3, [4])]:
            guided[row] = model(batch["video"][row:row + 1, frames], batch["cands"][row:row + 1])[0]
        single = model(batch["video"][torch.arange(4), expected_frame][:, None], batch["cands"])
    a = batch["answer"]
    lg, lw, ls = guided.log_softmax(-1), whole.log_softmax(-1), single.log_softmax(-1)
    g = guided.softmax(-1)
    exp_guided = -sum(float(lg[b, a[b]]) for b in range(4)) / 4
    exp_kl = sum(float((g[b] * (lg[b] - lw[b])).sum()) for b in range(4)) / 4
    teacher = priors[torch.arange(4), expected_frame]
    exp_spatial = 0.5 * -sum(float((teacher[b] * ls[b]).sum()) for b in range(4)) / 4
    assert out.terms["guided"].item() == pytest.approx(exp_guided, abs=1e-5)
    assert out.terms["consistency"].item() == pytest.approx(exp_kl, abs=1e-5)
    assert out.terms["spatial"].item() == pytest.approx(exp_spatial, abs=1e-5)
    assert out.loss.item() == pytest.approx(exp_guided + exp_kl + exp_spatial, abs=1e-5)
    # rows 1 and 2 see the whole video: their guided logits are the whole-video logits, so KL is 0 there
    assert torch.equal(out.keep[1], torch.ones(5, dtype=torch.bool))


def test_skip_policy_drops_rows_without_causal_frames():
    model, batch = MeanScorer(), toy_batch()
    keep_prob = torch.full((4, 5), 0.1)
    keep_prob[0, 1] = 0.9
    wrapped = sparc.wrap(model, toy_adapter(), [sparc.TemporalGuidance(empty="skip")])
    out = wrapped(batch, priors=priors_with(keep_prob, batch["answer"]))
    with torch.no_grad():
        guided0 = model(batch["video"][:1, [1]], batch["cands"][:1])
    expected = -float(guided0.log_softmax(-1)[0, batch["answer"][0]])
    assert out.terms["guided"].item() == pytest.approx(expected, abs=1e-5)


def test_plain_wrap_is_cross_entropy_on_the_whole_video():
    model, batch = MeanScorer(), toy_batch()
    out = sparc.wrap(model, toy_adapter(), [])(batch)
    with torch.no_grad():
        expected = F.cross_entropy(model(batch["video"], batch["cands"]), batch["answer"])
    assert set(out.terms) == {"answer"}
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_whole_ce_weight_adds_a_plain_term():
    batch = toy_batch()
    priors = priors_with(torch.full((4, 5), 0.9), batch["answer"])
    out = sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance(whole_ce_weight=0.5)])(batch, priors=priors)
    assert set(out.terms) == {"whole_ce", "guided", "consistency"}
    assert out.terms["whole_ce"].item() == pytest.approx(0.5 * out.terms["guided"].item(), abs=1e-6)


def test_tgm_mixes_before_every_view_and_scores_2c_candidates():
    torch.manual_seed(0)
    model, batch = MeanScorer(), toy_batch()
    keep_prob = torch.full((4, 5), 0.1)
    keep_prob[:, 2] = 0.9
    wrapped = sparc.wrap(model, toy_adapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation(),
                                                 sparc.TemporalGuidedMixup()])
    out = wrapped(batch, priors=priors_with(keep_prob, batch["answer"]))
    assert out.logits.shape == (4, 6)                 # concat: own 3 + partner's 3 candidates
    assert model.calls == [5, 1, 1]                   # every row keeps one frame: sliced, one call
    out.loss.backward()
    assert model.proj.weight.grad is not None


def test_views_share_one_step_with_hga_and_count_calls():
    torch.manual_seed(0)
    model = small_hga()
    calls = []
    model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(args[0].shape[1]), with_kwargs=True)
    B, T = 4, 6
    batch = {"vid_feats": torch.randn(B, T, 8), "qas": torch.randn(B, 5, 4, 768),
             "qas_lengths": torch.full((B, 5), 4), "answer": torch.tensor([0, 1, 2, 3]), "qid": list("abcd")}
    keep_prob = torch.full((B, T), 0.1)
    keep_prob[0, :2] = keep_prob[1, 3] = keep_prob[2, :4] = keep_prob[3, 5] = 0.9
    wrapped = sparc.wrap(model, HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    out = wrapped(batch, priors=priors_with(keep_prob, batch["answer"], C=5))
    assert calls == [6, 4, 1]   # whole; causal in lengths mode (padded to 4); single frame
    out.loss.backward()


@pytest.mark.parametrize("field,make,match", [
    ("frames", lambda p: p[:, :3], r"qid q0: priors have 3 frames but field 'video' has 5 \(field: priors\)"),
    ("candidates", lambda p: p[..., :2], r"qid q0: priors have 2 candidates"),
    ("nan", lambda p: p.index_put((torch.tensor([2]),), torch.tensor(float("nan"))), r"qid q2: priors contain NaN"),
])
def test_bad_priors_name_the_qid_and_field(field, make, match):
    batch = toy_batch()
    priors = make(priors_with(torch.full((4, 5), 0.9), batch["answer"]))
    with pytest.raises(ValueError, match=match):
        sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance()])(batch, priors=priors)


def test_answer_out_of_range_names_the_qid():
    batch = toy_batch()
    batch["answer"] = torch.tensor([0, 1, 7, 0])
    with pytest.raises(ValueError, match=r"qid q2: answer index 7 .* \(field: answer\)"):
        sparc.wrap(MeanScorer(), toy_adapter(), [])(batch)


def test_missing_priors_is_a_clear_error():
    with pytest.raises(ValueError, match="needs teacher priors"):
        sparc.wrap(MeanScorer(), toy_adapter(), [sparc.SpatialDistillation()])(toy_batch())


def test_conflicting_selections_are_refused():
    with pytest.raises(ValueError, match="disagree"):
        sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance(threshold=0.3),
                                                 sparc.TemporalGuidedMixup(threshold=0.6)])


def test_technique_generator_state_roundtrips_through_state_dict():
    wrapped = sparc.wrap(MeanScorer(), toy_adapter(), [sparc.SpatialDistillation()])
    wrapped.reseed(3)
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in wrapped.state_dict().items()}
    first = torch.rand(3, generator=wrapped.techniques[0].generator)
    wrapped.load_state_dict(state)
    assert torch.equal(torch.rand(3, generator=wrapped.techniques[0].generator), first)


def test_ddp_kwargs():
    assert sparc.wrap(MeanScorer(), toy_adapter(), []).ddp_kwargs() == {"find_unused_parameters": False}


class VideoQuestionModel(nn.Module):
    """The README quickstart's kind of model: video [B, T, D] and question [B, D] features -> [B, C]
    logits; it takes no candidate inputs."""

    def __init__(self, dim=1, num_candidates=3):
        super().__init__()
        self.frame, self.head = nn.Linear(dim, dim), nn.Linear(2 * dim, num_candidates)

    def forward(self, video, question):
        return self.head(torch.cat([self.frame(video).mean(1), question], dim=-1))


def video_question_adapter(**kw):
    return FunctionAdapter(lambda m, b: m(b["video"], b["question"]), temporal={"video": 1}, **kw)


class Spy(sparc.Technique):
    """Records what the techniques after the mixups see."""

    def loss_terms(self, step):
        self.seen = {"video": step.batch["video"].clone(), "question": step.batch["question"],
                     "target": step.target.clone(), "priors": step.priors.clone()}
        return {}


def small_batch():
    return {"video": torch.tensor([[[1.0], [2.0]], [[10.0], [20.0]]]), "question": torch.tensor([[5.0], [7.0]]),
            "qid": ["q0", "q1"], "answer": torch.tensor([0, 2])}


# keeps frame 0 of q0 (P[., ., a=0] = .6, .1) and both frames of q1 (P[., ., a=2] = .6, .6)
SMALL_PRIORS = torch.tensor([[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]],
                             [[0.2, 0.2, 0.6], [0.0, 0.4, 0.6]]])


def test_tgm_without_a_candidate_field_mixes_labels_over_the_models_own_candidates():
    """The README quickstart's case: the default candidates='auto' picks label mixing, the model keeps
    its 3 logits, and the step's frames, target and priors are the hand-computed ones for λ=.75, π=[1, 0]."""
    tgm, spy = sparc.TemporalGuidedMixup(), Spy()
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.TemporalGuidance(), tgm, spy])
    assert tgm.candidate_mode == "pairwise"
    tgm._draw = lambda batch_size: (0.75, torch.tensor([1, 0]))
    batch = small_batch()
    out = wrapped(batch, priors=SMALL_PRIORS)
    assert out.logits.shape == (2, 3)
    assert spy.seen["video"].flatten().tolist() == [3.25, 2.0, 7.75, 15.25]
    assert spy.seen["target"].tolist() == [[0.75, 0.0, 0.25], [0.25, 0.0, 0.75]]
    assert spy.seen["question"] is batch["question"]
    assert torch.allclose(spy.seen["priors"], torch.tensor([[[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]],
                                                            [[0.3, 0.2, 0.5], [0.15, 0.35, 0.5]]]))
    out.loss.backward()


def test_vanilla_mixup_without_a_candidate_field_mixes_labels():
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.Mixup(alpha=1.0, beta=1.0)])
    out = wrapped(small_batch(), priors=SMALL_PRIORS)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)


def test_vanilla_mixup_keeps_each_samples_own_causal_frames():
    """Mixup + TemporalGuidance: the causal frames come from the samples' own priors, before mixing.
    At λ = 0 the mixed priors are the partner's; selected after the mix, q0 would keep both frames
    (its partner q1's selection) and q1 only frame 0 (q0's)."""
    mix = sparc.Mixup()
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.TemporalGuidance(), mix])
    mix._draw = lambda batch_size: (0.0, torch.tensor([1, 0]))
    out = wrapped(small_batch(), priors=SMALL_PRIORS)
    assert out.keep.tolist() == [[True, False], [True, True]]
    out.loss.backward()


def test_vanilla_mixup_without_any_source_of_the_candidate_count_is_a_clear_error():
    """No candidate field, no priors, no num_answers: the soft labels' width would be guessed from the
    largest answer in the batch; refuse instead."""
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.Mixup()])
    with pytest.raises(ValueError, match="Mixup needs the number of candidates C"):
        wrapped(small_batch())


def test_tgm_with_a_candidate_field_defaults_to_concat():
    tgm = sparc.TemporalGuidedMixup()
    sparc.wrap(MeanScorer(), toy_adapter(), [tgm])
    assert tgm.candidate_mode == "concat"


@pytest.mark.parametrize("technique", [sparc.TemporalGuidedMixup, sparc.Mixup])
def test_explicit_concat_without_a_candidate_field_fails_at_wrap(technique):
    with pytest.raises(ValueError, match=r"candidates='concat'.*adapter\.candidate.*FunctionAdapter declares none"):
        sparc.wrap(VideoQuestionModel(), video_question_adapter(), [technique(candidates="concat")])


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": 0.0}, "alpha must be a positive number"),
    ({"beta": -0.1}, "beta must be a positive number"),
    ({"alpha": float("nan")}, "alpha must be a positive number"),
    ({"align": "diagonal"}, r"align must be one of \('causal', 'position'\), got 'diagonal'"),
    ({"candidates": "stacked"}, r"candidates must be one of \('auto', 'concat', 'pairwise'\)"),
    ({"empty": "none"}, r"CausalFrames: empty must be one of \('all', 'top1', 'skip'\)"),
    ({"threshold": 1.5}, r"threshold must be a probability in \[0, 1\]"),
    ({"threshold": 0.4, "frames": sparc.TopKFrames(2)}, r"give frames= or the shorthand \['threshold'\], not both"),
])
def test_mixup_hyperparameters_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sparc.TemporalGuidedMixup(**kwargs)


def test_mixup_hyperparameters_are_validated_for_vanilla_mixup():
    with pytest.raises(ValueError, match="Mixup: beta must be a positive number"):
        sparc.Mixup(beta=0)


def test_logits_narrower_than_the_step_candidates_is_a_clear_error():
    """An adapter that declares a candidate field its forward never passes on: concat doubles the field,
    the model still returns C logits; the error says so instead of a shape mismatch inside a loss."""
    adapter = FunctionAdapter(lambda m, b: m(b["video"], b["question"]), temporal={"video": 1},
                              candidate={"cands": 1})
    batch = dict(small_batch(), cands=torch.randn(2, 3, 4))
    wrapped = sparc.wrap(VideoQuestionModel(), adapter, [sparc.TemporalGuidance(), sparc.TemporalGuidedMixup()])
    with pytest.raises(ValueError, match=r"returned logits of shape \(2, 3\), but this step scores 6 candidates "
                                         r"\(candidates='concat' appended .*\['cands'\]"):
        wrapped(batch, priors=SMALL_PRIORS)


def test_missing_answer_field_names_it_and_lists_the_batch_keys():
    batch = small_batch()
    del batch["answer"]
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(answer_field="label"), [])
    with pytest.raises(ValueError, match=r"no 'label' field.*adapter\.answer_field.*\['qid', 'question', 'video'\]"):
        wrapped(batch)
    wrapped.eval()
    assert wrapped(batch).logits.shape == (2, 3)        # eval needs no answer


def test_numpy_priors_are_accepted():
    batch = small_batch()
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(),
                         [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    wrapped.reseed(0)
    from_numpy = wrapped(batch, priors=SMALL_PRIORS.numpy().astype("float64")).loss
    wrapped.reseed(0)
    assert torch.equal(from_numpy, wrapped(batch, priors=SMALL_PRIORS).loss)


@pytest.mark.parametrize("make,match", [
    (lambda p: torch.log(p + 0.1) * 3, r"qid q0: priors must be probabilities \(softmax over candidates\); "
                                        r"got values outside \[0, 1\] \(min -?[0-9.]+, max -?[0-9.]+\) \(field: priors\)"),
    (lambda p: p.index_put((torch.tensor([1]), torch.tensor([1])), torch.tensor([0.5, 0.5, 0.5])),
     r"qid q1: priors must be probabilities \(softmax over candidates\); got rows summing to 1\.5 \(frame 1"),
    (lambda p: p.index_put((torch.tensor([1]), torch.tensor([0]), torch.tensor([2])), torch.tensor(float("inf"))),
     r"qid q1: priors contain NaN or inf"),
])
def test_priors_must_be_probabilities(make, match):
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.TemporalGuidance()])
    with pytest.raises(ValueError, match=match):
        wrapped(small_batch(), priors=make(SMALL_PRIORS.clone()))


def test_priors_within_the_stated_tolerance_and_zero_padding_pass():
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [sparc.TemporalGuidance()])
    stored = SMALL_PRIORS.half().float()                 # a float16 store's rounding
    stored[0, 0] += torch.tensor([2e-3, 0.0, 0.0])       # a row off by 2e-3 < 5e-3
    wrapped(small_batch(), priors=stored)
    # frames past a video's length may be the store's zero padding
    padded_wrap = sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance()])
    batch = dict(toy_batch(), lengths=torch.tensor([5, 3, 5, 4]))
    priors = priors_with(torch.full((4, 5), 0.9), batch["answer"])
    priors[1, 3:] = 0.0
    priors[3, 4:] = 0.0
    padded_wrap(batch, priors=priors)
    priors[2, 4] = 0.0                                   # but a real frame of zeros is not a distribution
    with pytest.raises(ValueError, match=r"qid q2: .* got rows summing to 0 \(frame 4"):
        padded_wrap(batch, priors=priors)


def test_nan_in_a_temporal_field_names_the_qid_and_field_in_training_only():
    batch = small_batch()
    batch["video"][1, 0, 0] = float("nan")
    wrapped = sparc.wrap(VideoQuestionModel(), video_question_adapter(), [])
    with pytest.raises(ValueError, match=r"qid q1: field 'video' contains NaN or inf \(field: video\)"):
        wrapped(batch)
    batch["video"][1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"qid q1: field 'video'"):
        wrapped(batch)
    wrapped.eval()
    assert not torch.isfinite(wrapped(batch).logits[1]).any()   # eval stays the bare model's forward


def test_integer_temporal_fields_are_not_checked():
    adapter = FunctionAdapter(lambda m, b: m(b["video"], b["question"]), temporal={"video": 1, "frame_ids": 1})
    batch = dict(small_batch(), frame_ids=torch.tensor([[0, 1], [0, 1]]))
    assert torch.isfinite(sparc.wrap(VideoQuestionModel(), adapter, [])(batch).loss)


def test_import_sparc_stays_light():
    import subprocess
    import sys

    # What makes an import slow is the heavy packages it drags in, so that is what is checked: a
    # wall-clock limit would depend on the machine and its load, not on sparc.
    code = ("import sys; import sparc, sparc.adapters; "
            "print([m for m in ('transformers', 'timm', 'datasets', 'accelerate') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


@pytest.mark.parametrize("kwargs, match", [
    ({"direction": "bogus"}, "direction must be one of"),
    ({"threshold": 2.0}, "threshold must be a probability"),
    ({"threshold": True}, "threshold must be a probability"),
    ({"whole_ce_weight": -1.0}, "whole_ce_weight must be a finite number"),
    ({"consistency_weight": float("nan")}, "consistency_weight must be a finite number"),
    ({"source": "top_k"}, "source='top_k' needs k"),
    ({"source": "top_k", "k": 0}, "k must be a positive int"),
    ({"source": "top_k", "k": 1.5}, "k must be a positive int"),
    ({"source": "top_k", "k": 2, "threshold": 0.4}, r"\['threshold'\] are not read by source='top_k'"),
    ({"k": 2}, "k is read only by source='top_k'"),
    ({"source": "span", "empty": "skip"}, "not read by source='span'"),
    ({"source": "frames"}, "source must be one of"),
])
def test_temporal_guidance_refuses_bad_hyperparameters_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sparc.TemporalGuidance(**kwargs)


def test_temporal_guidance_accepts_numpy_numbers():
    import numpy as np

    tg = sparc.TemporalGuidance(threshold=np.float32(0.4), whole_ce_weight=np.float64(1.0))
    assert tg.frames.threshold == pytest.approx(0.4) and tg.whole_ce_weight == 1.0
    assert sparc.TemporalGuidance(source="top_k", k=np.int64(2)).frames == sparc.TopKFrames(2)


@pytest.mark.parametrize("value, match", [
    (torch.zeros(4, 3, dtype=torch.long), r"shape \[4\]; got torch.int64 of shape \(4, 3\)"),
    (torch.tensor([0.0, 1.0, 2.0, 1.0]), "got torch.float32"),
    (torch.tensor([0, 1]), r"shape \[4\]; got torch.int64 of shape \(2,\)"),
    ([[0, 1], [2]], "cannot be read as a tensor"),
])
def test_an_answer_field_of_another_shape_is_named(value, match):
    """VGT's token-id 'answer' field read as the labels used to crash inside the range check with
    'only one element tensors can be converted'; now the field is named with what it should hold."""
    batch = {**toy_batch(), "answer": value}
    with pytest.raises(ValueError, match=match + r".*\(field: answer\)"):
        sparc.wrap(MeanScorer(), toy_adapter(), [])(batch)


def test_a_candidate_field_of_another_shape_is_named():
    batch = {**toy_batch(), "cands": [[0.0] * 4] * 4}
    with pytest.raises(ValueError, match=r"candidates on axis 1 of field 'cands'.*which is list.*\(field: cands\)"):
        sparc.wrap(MeanScorer(), toy_adapter(), [])(batch)
    batch = {**toy_batch(), "cands": torch.zeros(4)}
    with pytest.raises(ValueError, match=r"which is \(4,\)"):
        sparc.wrap(MeanScorer(), toy_adapter(), [])(batch)
    with pytest.raises(ValueError, match=r"priors must be \[B, T, C\], got \(2, 2\)"):
        sparc.wrap(MeanScorer(), video_question_adapter(), [sparc.TemporalGuidance()])(
            {**small_batch(), "answer": torch.tensor([0, 1])}, priors=torch.full((2, 2), 0.5))
