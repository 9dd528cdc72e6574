"""SpanSupervision and AttentionSupervision (TVQA+ / STAGE 4.3): their terms on hand-made numbers,
the pair sampling (random and hard negatives, the short-pool case), the contract on every adapter case
that returns span logits / attention, and the clear errors elsewhere and with a mixup."""

import dataclasses
import math

import pytest
import torch

import sparc
from sparc.adapters import FunctionAdapter
from sparc import contract
from sparc.contract import check_technique
from sparc.outputs import ModelOutput
from sparc.techniques.attention_supervision import attention_pairs

from test_adapter_contract import CASES  # noqa: E402  (tests/ is on sys.path): the same cases

TOL = dict(rel=1e-12, abs=1e-12)   # float64 throughout: the sums are exact to rounding


def log_softmax_py(row):
    m = max(row)
    z = math.log(sum(math.exp(v - m) for v in row)) + m
    return [v - z for v in row]


class FixedOutputs(torch.nn.Module):
    """Returns its parameters as span logits and attention, whatever the input: the terms are then
    functions of numbers written in the test."""

    def __init__(self, start, end, attention=None):
        super().__init__()
        self.start = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
        self.end = torch.nn.Parameter(torch.tensor(end, dtype=torch.float64))
        self.att = None if attention is None else torch.nn.Parameter(torch.tensor(attention, dtype=torch.float64))

    def forward(self, video):
        logits = video.sum(dim=(1, 2))[:, None].expand(-1, self.start.shape[1]) * 0 + self.start.sum(-1)
        return ModelOutput(logits=logits, span_logits=(self.start, self.end), attention=self.att)


def fixed_wrap(model, techniques):
    adapter = FunctionAdapter(lambda m, b: m(b["video"]), temporal={"video": 1}, subset="mask", mask_field="video_mask",
                              outputs=("logits", "span_logits", "attention"))
    return sparc.wrap(model, adapter, techniques)


# ---- SpanSupervision ---------------------------------------------------------------------------------

START = [[[0.1, 2.0, -1.0], [1.0, 0.0, 0.5]], [[0.3, 0.3, 0.3], [-2.0, 1.0, 0.0]]]   # [B=2, C=2, T=3]
END = [[[0.0, 1.0, 3.0], [0.5, 2.5, -1.0]], [[1.0, 0.0, 0.0], [0.0, 0.0, 4.0]]]


def span_batch(**extra):
    return {"video": torch.zeros(2, 3, 1, dtype=torch.float64), "video_mask": torch.ones(2, 3, dtype=torch.bool),
            "qid": ["a", "b"], "answer": torch.tensor([1, 0]),
            "ts_label_st": torch.tensor([0, 2]), "ts_label_ed": torch.tensor([1, 2]), **extra}


def test_span_term_is_the_ground_truth_hypothesis_cross_entropy():
    model = fixed_wrap(FixedOutputs(START, END), [sparc.SpanSupervision(weight=0.5)])
    out = model(span_batch())
    # row 0: hypothesis 1, start 0, end 1; row 1: hypothesis 0, start 2, end 2; L = -1/(2N) Σ (...)
    expected = -(log_softmax_py(START[0][1])[0] + log_softmax_py(END[0][1])[1]
                 + log_softmax_py(START[1][0])[2] + log_softmax_py(END[1][0])[2]) / 4
    assert out.terms["span"].item() == pytest.approx(0.5 * expected, **TOL)


def test_rows_without_an_annotated_span_add_nothing():
    model = fixed_wrap(FixedOutputs(START, END), [sparc.SpanSupervision(weight=1.0)])
    out = model(span_batch(ts_missing=[False, True]))
    expected = -(log_softmax_py(START[0][1])[0] + log_softmax_py(END[0][1])[1]) / 2
    assert out.terms["span"].item() == pytest.approx(expected, **TOL)
    none = model(span_batch(ts_missing=[True, True]))
    assert none.terms["span"].item() == 0.0 and none.terms["span"].requires_grad


def test_a_span_label_outside_the_video_names_the_question():
    model = fixed_wrap(FixedOutputs(START, END), [sparc.SpanSupervision()])
    with pytest.raises(ValueError, match=r"question b: span label \(2, 3\) is not 0 <= start <= end < 3 frames"):
        model(span_batch(ts_label_ed=torch.tensor([1, 3])))
    with pytest.raises(ValueError, match="no 'ts_label_st'"):
        model({k: v for k, v in span_batch().items() if k != "ts_label_st"})


def test_hyperparameters_are_validated():
    for bad in (dict(weight=-1.0), dict(weight=float("nan")), dict(view="single")):
        with pytest.raises(ValueError):
            sparc.SpanSupervision(**bad)
    for bad in (dict(alpha=0.0), dict(num_negatives=0), dict(num_negatives=1.5), dict(weight=-0.1), dict(view="x")):
        with pytest.raises(ValueError):
            sparc.AttentionSupervision(**bad)


# ---- AttentionSupervision ----------------------------------------------------------------------------

def test_hard_negatives_by_hand_including_a_frame_with_too_few_negatives():
    # B=1, T=2, L=2, R=3. Frame 0, word 0: region 1 positive, negatives 0 and 2.
    # Frame 1, word 1: regions 0 and 2 positive, region 1 the only negative: 2 positives x 2 negatives
    # need 4, so the one negative is reused (STAGE's hard mode would misalign its pairs here).
    positive = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    positive[0, 0, 0, 1] = True
    positive[0, 1, 1, 0] = positive[0, 1, 1, 2] = True
    regions = torch.ones(1, 2, 3, dtype=torch.bool)
    frames = torch.ones(1, 2, dtype=torch.bool)
    scores = torch.tensor([[[[0.2, 0.9, 0.4], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.7, -0.5, 0.1]]]])
    b, t, w, pos, neg = attention_pairs(positive, regions, frames, 2, torch.Generator(), scores)
    assert list(zip(t.tolist(), w.tolist(), pos.tolist(), neg.tolist())) == [
        (0, 0, 1, 2), (0, 0, 1, 0),                        # the harder negative (0.4) first, then 0.2
        (1, 1, 0, 1), (1, 1, 2, 1), (1, 1, 0, 1), (1, 1, 2, 1)]
    wrapped = fixed_wrap(FixedOutputs([[[0.0, 0.0]] * 2], [[[0.0, 0.0]] * 2],
                                      attention=[[scores[0].tolist()] * 2]),
                         [sparc.AttentionSupervision(weight=1.0, alpha=20.0, hard_negatives=True)])
    batch = {"video": torch.zeros(1, 2, 1, dtype=torch.float64), "video_mask": torch.ones(1, 2, dtype=torch.bool),
             "qid": ["q"], "answer": torch.tensor([1]), "att_labels": positive.double(), "vid_mask": regions}
    s = scores[0]
    pairs = [(s[0, 0, 1], s[0, 0, 2]), (s[0, 0, 1], s[0, 0, 0])] + [(s[1, 1, 0], s[1, 1, 1]), (s[1, 1, 2], s[1, 1, 1])] * 2
    expected = sum(math.log(1 + math.exp(20.0 * (float(n) - float(p)))) for p, n in pairs) / 1
    assert wrapped(batch).terms["attention"].item() == pytest.approx(expected, rel=1e-6)   # float32 scores


def test_random_negatives_come_from_the_real_non_positive_regions_of_shown_frames():
    g = torch.Generator().manual_seed(0)
    B, T, L, R = 3, 4, 5, 6
    positive = torch.rand(B, T, L, R, generator=g) < 0.15
    regions = torch.rand(B, T, R, generator=g) < 0.8
    frames = torch.ones(B, T, dtype=torch.bool)
    frames[1, 2] = False                                   # a frame this view did not show
    b, t, w, pos, neg = attention_pairs(positive, regions, frames, 2, torch.Generator().manual_seed(5))
    assert b.numel() > 0
    assert bool(positive[b, t, w, pos].all()) and bool(regions[b, t, pos].all())
    assert not bool(positive[b, t, w, neg].any()) and bool(regions[b, t, neg].all())
    assert not bool(((b == 1) & (t == 2)).any())
    again = attention_pairs(positive, regions, frames, 2, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip((b, t, w, pos, neg), again))      # the generator decides
    # every usable positive appears exactly num_negatives times
    usable = positive & regions[:, :, None, :] & frames[:, :, None, None]
    has_negative = (regions[:, :, None, :] & ~positive).any(-1)
    assert b.numel() == 2 * int((usable & has_negative[..., None]).sum())


# ---- on the adapters: the contract where the outputs exist, a clear error elsewhere --------------------

def with_boxes(make_batch):
    """The case's batch plus attention labels: a positive region for a few (frame, word) cells."""
    def make(batch_size, num_frames, seed):
        batch = make_batch(batch_size, num_frames, seed)
        g = torch.Generator().manual_seed(900 + seed)
        B, T, R = batch["vid_mask"].shape
        L = batch["qas_bert"].shape[2]
        labels = (torch.rand(B, T, L, R, generator=g) < 0.3) & batch["vid_mask"][:, :, None, :].bool()
        batch["att_labels"] = labels & batch["ts_label_mask"][:, :, None, None].bool()
        return batch
    return make


SUPERVISED = [dataclasses.replace(c, make_batch=with_boxes(c.make_batch)) for c in CASES
              if "span_logits" in c.adapter.outputs]
OTHERS = [c for c in CASES if "span_logits" not in c.adapter.outputs]

COMBINATIONS = {
    "span": lambda: sparc.SpanSupervision(),
    "attention": lambda: sparc.AttentionSupervision(),
    "attention-hard": lambda: sparc.AttentionSupervision(hard_negatives=True),
    "sparc+span+attention": lambda: [sparc.TemporalGuidance(), sparc.SpatialDistillation(), sparc.SpanSupervision(),
                                     sparc.AttentionSupervision()],
    "span-causal": lambda: [sparc.TemporalGuidance(), sparc.SpanSupervision(view="causal")],
}


def test_the_stage_cases_are_the_ones_with_span_outputs():
    assert {c.name for c in SUPERVISED} == {"stage-reference", "stage-original-like"} and OTHERS


@pytest.mark.parametrize("case", SUPERVISED, ids=[c.name for c in SUPERVISED])
@pytest.mark.parametrize("techniques", list(COMBINATIONS), ids=list(COMBINATIONS))
def test_supervision_meets_the_technique_contract(techniques, case):
    check_technique(COMBINATIONS[techniques], case, name=techniques)


@pytest.mark.parametrize("case", SUPERVISED, ids=[c.name for c in SUPERVISED])
def test_the_tvqaplus_recipes_five_techniques_meet_the_contract_in_one_wrap(case):
    width = case.make_batch(2, 3, 0)["qas_bert"].shape[-1]          # the mask vector's width
    five = lambda: [sparc.TemporalGuidance(), sparc.SpatialDistillation(), sparc.SpanSupervision(),
                    sparc.AttentionSupervision(), sparc.ContrastiveMasking(feature_dim=width)]
    check_technique(five, case, name="sparc+span+attention+contrastive")
    assert set(contract.check_technique_terms(five, case)) == {"guided", "consistency", "spatial", "span", "attention",
                                                               "contrastive"}


@pytest.mark.parametrize("case", OTHERS, ids=[c.name for c in OTHERS])
def test_other_adapters_refuse_at_wrap_naming_the_technique_and_the_adapter(case):
    adapter = type(case.adapter).__name__
    with pytest.raises(ValueError, match=rf"SpanSupervision supervises the model's span_logits, which {adapter} does not"):
        sparc.wrap(case.build_model(0), case.adapter, [sparc.SpanSupervision()])
    with pytest.raises(ValueError, match=rf"AttentionSupervision supervises the model's attention, which {adapter}"):
        sparc.wrap(case.build_model(0), case.adapter, [sparc.AttentionSupervision()])


def test_a_mixup_under_span_labels_is_refused_naming_both():
    case = SUPERVISED[0]
    with pytest.raises(ValueError, match=r"SpanSupervision reads the batch's ts_label_st, ts_label_ed as labels, but "
                                         r"TemporalGuidedMixup rewrites the batch"):
        sparc.wrap(case.build_model(0), case.adapter, [sparc.TemporalGuidedMixup(), sparc.SpanSupervision()])
    with pytest.raises(ValueError, match=r"AttentionSupervision reads the batch's att_labels .* Mixup rewrites"):
        sparc.wrap(case.build_model(0), case.adapter, [sparc.Mixup(), sparc.AttentionSupervision()])


def test_function_adapter_outputs_are_checked():
    with pytest.raises(ValueError, match="outputs names the ModelOutput fields"):
        FunctionAdapter(lambda m, b: m(b), temporal={"video": 1}, outputs=("span_logits",))
    with pytest.raises(ValueError, match="outputs names"):
        FunctionAdapter(lambda m, b: m(b), temporal={"video": 1}, outputs=("logits", "spans"))
