"""ContrastiveMasking (paper 002, 3.2): the loss by hand, the masking draw (ids vs features, only the
ground-truth hypothesis' real tokens, reproducible from the technique's generator), the learned mask
vector as a trained, checkpointed parameter, the adapters' hooks (the unmasked anchor is the
hypothesis' own representation), the technique contract alone and with TemporalGuidance +
SpatialDistillation on every contract case whose adapter has the hooks, and the errors elsewhere."""

import dataclasses
import math

import pytest
import torch

import sparc
from sparc.adapters import FunctionAdapter, MemoryAdapter, STAGEAdapter, VGTAdapter
from sparc.contract import causal_priors, cast_floating, check_technique
from sparc.losses import contrastive_loss
from sparc.technique_names import TECHNIQUES
from sparc.techniques.contrastive_masking import draw_mask, mask_tokens

from test_adapter_contract import CASES  # noqa: E402  (tests/ is on sys.path): the same cases

# The VGT cases' tiny BERT vocabulary (tests/cases/case_vgt.py): [PAD] 0, [CLS] 1, [SEP] 2; 3 serves as [MASK].
TINY_MASK, TINY_SPECIAL = 3, (0, 1, 2)


def with_hooks(case):
    """The case as contrastive masking runs it (VGT with the tiny vocabulary's ids), or None without hooks."""
    if "hypothesis" not in getattr(case.adapter, "outputs", ()):
        return None
    if isinstance(case.adapter, VGTAdapter):
        return dataclasses.replace(case, adapter=VGTAdapter(mask_token_id=TINY_MASK, special_token_ids=TINY_SPECIAL))
    return case


def feature_dim(case):
    """The width of the case's text features (None for token ids): what the mask vector must match."""
    text = {k: v for k, v in case.make_batch(2, 3, 0).items() if k in ("qas", "qas_bert")}
    return next(iter(text.values())).shape[-1] if text else None


HOOKED = [with_hooks(c) for c in CASES if with_hooks(c) is not None]
WITHOUT = [c for c in CASES if with_hooks(c) is None]


# ---- the loss -----------------------------------------------------------------------------------

def test_contrastive_loss_by_hand():
    """scores = H · h_anchor (eq. 8), L = CE(scores, a) (eq. 9), mean over the batch."""
    H = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]],
                      [[0.5, 0.5], [2.0, 0.0], [-1.0, 1.0]]])
    anchor = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    answer = torch.tensor([1, 2])
    # row 0: scores (1, 2, 2), answer 1 -> -log(e^2 / (e + 2 e^2)); row 1: scores (0, 2, -2), answer 2
    l0 = -(2 - math.log(math.exp(1) + 2 * math.exp(2)))
    l1 = -(-2 - math.log(1 + math.exp(2) + math.exp(-2)))
    assert float(contrastive_loss(H, anchor, answer)) == pytest.approx((l0 + l1) / 2, rel=1e-6)


# ---- the draw -----------------------------------------------------------------------------------

def test_draw_is_the_generators_uniforms_below_prob_on_maskable_tokens_only():
    maskable = torch.rand(40, 30, generator=torch.Generator().manual_seed(1)) < 0.7
    drawn = draw_mask(maskable, 0.2, torch.Generator().manual_seed(5))
    u = torch.rand(40, 30, generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn, maskable & (u < 0.2))
    assert torch.equal(drawn, draw_mask(maskable, 0.2, torch.Generator().manual_seed(5)))    # reproducible
    assert not torch.equal(drawn, draw_mask(maskable, 0.2, torch.Generator().manual_seed(6)))
    # the rate: 200,000 maskable tokens, binomial sd 0.0009; 0.005 is > 5 sd
    many = draw_mask(torch.ones(400, 500, dtype=torch.bool), 0.2, torch.Generator().manual_seed(0))
    assert abs(float(many.float().mean()) - 0.2) < 0.005
    assert not draw_mask(maskable, 0.0).any() and torch.equal(draw_mask(maskable, 1.0), maskable)


def test_mask_tokens_ids_and_features():
    chosen = torch.tensor([[True, False, True], [False, False, True]])
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    assert mask_tokens(ids, chosen, mask_id=103).tolist() == [[103, 6, 103], [8, 9, 103]]
    feats = torch.randn(2, 3, 4)
    vector = torch.nn.Parameter(torch.arange(4.0))
    out = mask_tokens(feats, chosen, mask_vector=vector)
    assert torch.equal(out[chosen], vector.detach().expand(3, 4)) and torch.equal(out[~chosen], feats[~chosen])
    out.sum().backward()
    assert vector.grad.tolist() == [3.0] * 4                            # one gradient per masked row
    with pytest.raises(ValueError, match="feature_dim=4"):
        mask_tokens(feats, chosen, mask_vector=torch.zeros(768), who="X")
    with pytest.raises(ValueError, match="no mask id"):
        mask_tokens(ids, chosen)
    with pytest.raises(ValueError, match="no mask vector"):
        mask_tokens(feats, chosen, mask_id=3)


def stage_case():
    return next(c for c in HOOKED if c.name == "stage-reference")


def test_features_only_the_ground_truths_real_rows_become_the_mask_vector():
    case, B = stage_case(), 4
    batch = case.make_batch(B, 5, 0)
    technique = sparc.ContrastiveMasking(prob=0.5, feature_dim=feature_dim(case), seed=3)
    technique.bind(case.adapter)
    answer = batch["answer"]
    masked = case.adapter.mask_text(batch, answer, technique.mask)
    gt = batch["qas_bert"][torch.arange(B), answer]                      # (B, L, E)
    real = batch["qas_mask"][torch.arange(B), answer] > 0
    assert masked["qas_bert"].shape == (B, 1) + gt.shape[1:] and masked["qas_mask"].shape[1] == 1
    assert torch.equal(masked["answer"], torch.zeros_like(answer))
    expected = real & (torch.rand(real.shape, generator=torch.Generator().manual_seed(3)) < 0.5)
    new = masked["qas_bert"][:, 0]
    changed = (new != gt).any(dim=-1)
    assert torch.equal(changed, expected) and expected.any() and (real & ~expected).any()
    assert torch.equal(new[expected], technique.mask_vector.detach().expand(int(expected.sum()), -1))
    assert torch.equal(batch["qas_bert"], case.make_batch(B, 5, 0)["qas_bert"])   # the step's batch untouched


def test_ids_only_the_ground_truths_words_become_the_mask_id():
    case, B = next(c for c in HOOKED if c.name == "vgt-reference"), 4
    batch = case.make_batch(B, 3, 0)
    technique = sparc.ContrastiveMasking(prob=0.5, seed=2)
    technique.bind(case.adapter)
    assert technique.mask_vector is None                                # token ids: no vector to train
    answer = batch["answer_id"]
    masked = case.adapter.mask_text(batch, answer, technique.mask)
    gt = batch["answer"][torch.arange(B), answer]                       # (B, L) ids
    words = ~torch.isin(gt, torch.tensor(TINY_SPECIAL))
    expected = words & (torch.rand(gt.shape, generator=torch.Generator().manual_seed(2)) < 0.5)
    assert torch.equal(masked["answer"][:, 0], gt.masked_fill(expected, TINY_MASK)) and expected.any()
    # seq_len stays the sample's padded width over all C candidates, as answer_g was computed with
    assert torch.equal(masked["seq_len"][:, 0], batch["seq_len"][:, 0])


def test_hga_layout_masks_within_the_lengths_and_word_ids_need_a_mask_id():
    case = next(c for c in HOOKED if c.name == "hga-reference")
    batch = case.make_batch(3, 4, 0)
    technique = sparc.ContrastiveMasking(prob=1.0, feature_dim=768)
    technique.bind(case.adapter)
    masked = case.adapter.mask_text(batch, batch["answer"], technique.mask)
    lengths = batch["qas_lengths"][torch.arange(3), batch["answer"]]
    rows = masked["qas"][:, 0]
    inside = torch.arange(rows.shape[1])[None] < lengths[:, None]
    assert torch.equal(rows[inside], technique.mask_vector.detach().expand(int(inside.sum()), -1))
    assert torch.equal(rows[~inside], batch["qas"][torch.arange(3), batch["answer"]][~inside])
    ids = dict(batch, qas=torch.randint(2, 9, (3, 5, 3)))
    with pytest.raises(ValueError, match=r"mask_token_id=\.\.\."):
        case.adapter.mask_text(ids, batch["answer"], technique.mask)
    adapter = MemoryAdapter(mask_token_id=1)                            # word ids (<unk> = 1) of sparc's vocabularies
    words = sparc.ContrastiveMasking(prob=1.0)
    words.bind(adapter)
    out = adapter.mask_text({"qas": ids["qas"], "qas_lengths": batch["qas_lengths"], "answer": batch["answer"]},
                            batch["answer"], words.mask)
    assert torch.equal(out["qas"][:, 0][inside], torch.ones(int(inside.sum()), dtype=torch.long))


# ---- the hooks: the unmasked anchor is the hypothesis' own representation --------------------------

@pytest.mark.parametrize("case", HOOKED, ids=[c.name for c in HOOKED])
@torch.no_grad()
def test_unmasked_anchor_equals_the_ground_truths_hypothesis(case):
    """mask_text's one-hypothesis batch through forward gives exactly row a of the whole batch's
    hypothesis (float64, eval): the hooks pick the right candidate and the right representation."""
    model = case.build_model(0).double().eval()
    batch = cast_floating(case.make_batch(4, 5, 0), torch.float64)
    answer = torch.as_tensor(batch[case.adapter.answer_field])
    out = case.adapter.forward(model, batch)
    assert out.hypothesis.shape[:2] == (4, case.num_candidates)
    anchor = case.adapter.forward(model, case.adapter.mask_text(batch, answer, lambda t, m, mask_id=None: t)).hypothesis
    expected = out.hypothesis[torch.arange(4), answer]
    assert anchor.shape == (4, 1, expected.shape[-1])
    assert float((anchor[:, 0] - expected).abs().max()) <= 1e-10 * float(expected.abs().max())


@torch.no_grad()
def test_stage_training_rows_hypothesis_is_the_ground_truth_span_row():
    """In training STAGE adds span-proposal rows; the hypothesis is the ground-truth span's row, as the
    logits are (the tiny STAGE has no dropout, so train mode is deterministic)."""
    case = stage_case()
    model = case.build_model(0).double().train()
    batch = cast_floating(case.make_batch(4, 5, 0), torch.float64)
    answer = batch["answer"]
    out = case.adapter.forward(model, batch)
    anchor = case.adapter.forward(model, case.adapter.mask_text(batch, answer, lambda t, m, mask_id=None: t))
    assert torch.allclose(anchor.hypothesis[:, 0], out.hypothesis[torch.arange(4), answer], rtol=0, atol=1e-12)
    # and the classifier on it is the logit the adapter reports
    assert torch.allclose(model.classifier(out.hypothesis).squeeze(-1), out.logits, rtol=0, atol=1e-12)


# ---- the technique in a wrap ------------------------------------------------------------------------

def test_term_is_weight_times_the_hand_computed_loss():
    """prob 0 (nothing masked): the term is 0.1 · CE(H · H[b, a_b], a) from the bare model's outputs."""
    case = stage_case()
    model = case.build_model(0).double()
    wrapped = sparc.wrap(model, case.adapter, [sparc.ContrastiveMasking(prob=0.0, feature_dim=feature_dim(case))])
    wrapped.train()
    model.eval()                                                        # deterministic views
    batch = cast_floating(case.make_batch(4, 5, 0), torch.float64)
    out = wrapped(batch)
    H = case.adapter.forward(model, batch).hypothesis.detach()
    scores = torch.einsum("bcd,bd->bc", H, H[torch.arange(4), batch["answer"]])
    by_hand = -torch.log_softmax(scores, dim=1)[torch.arange(4), batch["answer"]].mean()
    assert sorted(out.terms) == ["answer", "contrastive"]
    assert float(out.terms["contrastive"].detach()) == pytest.approx(0.1 * float(by_hand), rel=1e-12)


def test_mask_vector_is_a_trained_checkpointed_parameter():
    case = stage_case()
    technique = sparc.ContrastiveMasking(prob=0.5, feature_dim=feature_dim(case))
    wrapped = sparc.wrap(case.build_model(0), case.adapter, [sparc.TemporalGuidance(), technique])
    assert "techniques.1.mask_vector" in wrapped.state_dict()
    assert any(p is technique.mask_vector for p in wrapped.parameters())   # the optimizer and DDP see it
    batch = case.make_batch(4, 5, 0)
    out = wrapped.train()(batch, priors=causal_priors(4, 5, 5, batch["answer"]))
    out.loss.backward()
    assert technique.mask_vector.grad is not None and bool((technique.mask_vector.grad != 0).any())
    # the generator's state rides in the state dict too (resume: check_technique below)
    assert "techniques.1._extra_state" in wrapped.state_dict()


CONFIGS = {
    "alone": lambda dim: sparc.ContrastiveMasking(feature_dim=dim),
    "TG+SD+contrastive": lambda dim: [sparc.TemporalGuidance(), sparc.SpatialDistillation(),
                                      sparc.ContrastiveMasking(feature_dim=dim)],
}


@pytest.mark.parametrize("case", HOOKED, ids=[c.name for c in HOOKED])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_technique_contract(config, case):
    dim = feature_dim(case)
    check_technique(lambda: CONFIGS[config](dim), case, name=config)


# ---- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", WITHOUT, ids=[c.name for c in WITHOUT])
def test_adapters_without_the_hooks_are_refused_at_wrap_time(case):
    with pytest.raises(ValueError) as refused:
        sparc.wrap(case.build_model(0), case.adapter, [sparc.ContrastiveMasking()])
    assert type(case.adapter).__name__ in str(refused.value) and "hypothesis" in str(refused.value)


def test_bind_names_each_missing_hook_and_the_adapter():
    plain = FunctionAdapter(lambda m, b: m(b), temporal={"video": 1})
    with pytest.raises(ValueError, match=r"FunctionAdapter lacks the per-candidate hypothesis.* and mask_text"):
        sparc.ContrastiveMasking().bind(plain)
    declared = FunctionAdapter(lambda m, b: m(b), temporal={"video": 1}, outputs=("logits", "hypothesis"))
    with pytest.raises(ValueError, match=r"FunctionAdapter lacks mask_text\(inputs, which, masker\)"):
        sparc.wrap(torch.nn.Linear(2, 2), declared, [sparc.ContrastiveMasking()])
    for open_ended in (VGTAdapter(open_ended=True), MemoryAdapter(open_ended=True)):
        with pytest.raises(ValueError, match=type(open_ended).__name__):
            sparc.ContrastiveMasking().bind(open_ended)
    with pytest.raises(ValueError, match="give feature_dim"):
        sparc.ContrastiveMasking(feature_dim=None).bind(STAGEAdapter())


def test_refused_under_a_mixup_and_a_wrong_width_is_named():
    case = stage_case()
    with pytest.raises(ValueError, match="ContrastiveMasking reads the batch's answer"):
        sparc.wrap(case.build_model(0), case.adapter, [sparc.TemporalGuidedMixup(), sparc.ContrastiveMasking(feature_dim=12)])
    wrapped = sparc.wrap(case.build_model(0), case.adapter, [sparc.ContrastiveMasking(prob=1.0)]).train()
    with pytest.raises(ValueError, match="STAGEAdapter's hypothesis text features .* build it with feature_dim=12"):
        wrapped(case.make_batch(2, 3, 0))


def test_hyperparameters_are_validated_and_registered():
    for bad in ({"weight": -1}, {"weight": float("nan")}, {"prob": 1.5}, {"prob": -0.1}, {"feature_dim": 0},
                {"feature_dim": 7.5}):
        with pytest.raises(ValueError, match="ContrastiveMasking"):
            sparc.ContrastiveMasking(**bad)
    made = TECHNIQUES.get("contrastive", "build")(0.5)
    assert isinstance(made, sparc.ContrastiveMasking) and (made.weight, made.prob) == (0.1, 0.2)
    assert TECHNIQUES.get("contrastive", "build")(0.5, feature_dim=None).mask_vector is None
