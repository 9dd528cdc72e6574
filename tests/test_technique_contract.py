"""The technique contract (sparc.contract.check_technique): every built-in technique, alone and
combined, on every adapter case in tests/cases/ and in every subset mode the case runs; each clause
shown failing on a technique with the defect it is about; docs/techniques.md runs as written."""

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import sparc
from sparc import contract
from sparc.contract import check_technique

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "techniques.md"


from test_adapter_contract import CASES  # noqa: E402  (tests/ is on sys.path): the same cases

BY_NAME = {c.name: c for c in CASES}

# alpha = beta = 1: a λ away from 0 and 1, so the mixed batch really differs from both partners.
TECHNIQUES = {
    "TemporalGuidance": lambda: sparc.TemporalGuidance(),
    "TemporalGuidance-top2": lambda: sparc.TemporalGuidance(source="top_k", k=2),
    "TemporalGuidance-wholeCE": lambda: sparc.TemporalGuidance(whole_ce_weight=1.0),
    "SpatialDistillation": lambda: sparc.SpatialDistillation(),
    "TemporalGuidedMixup": lambda: sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0),
    "Mixup": lambda: sparc.Mixup(alpha=1.0, beta=1.0),
    "TG+SD+TGM": lambda: [sparc.TemporalGuidance(), sparc.SpatialDistillation(),
                          sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0)],
    "Mixup+TG-top2+SD": lambda: [sparc.Mixup(alpha=1.0, beta=1.0), sparc.TemporalGuidance(source="top_k", k=2),
                                 sparc.SpatialDistillation()],
}


def test_every_backbone_family_is_covered():
    names = " ".join(BY_NAME)
    for family in ("hga", "hme", "vgt", "stage", "memory", "function"):
        assert family in names
    assert any(c.modes for c in CASES)  # some case runs a second subset mode, so agreement is checked


# Every case, every technique (about 20 s on one core: the cases' models are tiny).
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("technique", list(TECHNIQUES), ids=list(TECHNIQUES))
def test_builtin_technique_meets_the_contract(technique, case):
    modes = check_technique(TECHNIQUES[technique], case, name=technique)
    own = case.adapter.mode_for(case.build_model(0))
    assert modes[0] == own and set(case.modes) <= set(modes)


def test_the_clauses_report_what_they_saw():
    case = BY_NAME["stage-reference"]
    terms = contract.check_technique_terms(TECHNIQUES["TG+SD+TGM"], case)
    assert set(terms) == {"guided", "consistency", "spatial"}      # TG owns the answer loss: no "answer"
    reached = contract.check_technique_gradients(lambda: sparc.SpatialDistillation(), case)
    assert reached and all(isinstance(n, str) for n in reached)
    agree = contract.check_technique_modes_agree(TECHNIQUES["TemporalGuidance-wholeCE"], case)
    assert list(agree) == ["mask", "bucket"] and set(agree["mask"]) == {"guided", "consistency", "whole_ce"}
    resumed = contract.check_technique_resumes(lambda: sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0), case)
    assert set(resumed) == {"answer"}                                # a pure augmentation: the answer loss


def test_a_hinge_case_runs_augmentations_with_ce():
    """The mixups' soft labels need CE (as sparc_techniques leaves them out of a hinge case); the
    others run with the case's hinge."""
    hinge = dataclasses.replace(BY_NAME["memory-reference-mc"], name="memory-hinge", task_loss="hinge")
    check_technique(lambda: sparc.Mixup(alpha=1.0, beta=1.0), hinge)
    check_technique(lambda: sparc.SpatialDistillation(), hinge)
    assert contract._task_loss(hinge, [sparc.SpatialDistillation()]) == "hinge"


# ---- the contract can fail: each clause catches the defect it is about ---------------------------

CHEAP = "function-mask"


class NaNTerm(sparc.Technique):
    def loss_terms(self, step):
        return {"nan": step.whole().logits.sum() * float("nan")}


class DetachedTerm(sparc.Technique):
    def loss_terms(self, step):
        return {"detached": step.whole().logits.detach().logsumexp(dim=1).mean()}


class ZeroGradient(sparc.Technique):
    def loss_terms(self, step):
        return {"zero": step.whole().logits.sum() * 0.0}


class GlobalDraws(sparc.Technique):
    """SpatialDistillation's draw, but from the global RNG instead of self.generator."""

    def loss_terms(self, step):
        lengths = step.valid.sum(dim=1)
        index = (torch.rand(lengths.shape) * lengths).long()
        return {"one_frame": step.single(index).logits.logsumexp(dim=1).mean()}


class CountsOutsideStateDict(sparc.Technique):
    """A warm-up whose step counter is a plain attribute: the checkpoint does not carry it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def loss_terms(self, step):
        self.calls += 1
        return {"warm": min(1.0, self.calls / 10) * step.whole().logits.logsumexp(dim=1).mean()}


class Silent(sparc.Technique):
    pass


class LazyAugmentation(sparc.Augmentation):
    def augment(self, step):
        pass


class PerSample(sparc.Technique):
    def loss_terms(self, step):
        return {"per_sample": step.whole().logits.logsumexp(dim=1)}


class Unnamed(sparc.Technique):
    def loss_terms(self, step):
        return {"": step.whole().logits.sum()}


class ClaimsTheAnswer(sparc.Technique):
    answer_term = "guided"

    def loss_terms(self, step):
        return {"other": step.whole().logits.logsumexp(dim=1).mean()}


class ScalesInPlace(sparc.Augmentation):
    """Halves the video in place instead of handing a new batch to step.replace_batch."""

    def augment(self, step):
        step.batch["video"].mul_(0.5)
        step.replace_batch(dict(step.batch), step.target, step.priors, step.num_candidates)


class ReadsTheMode(sparc.Technique):
    """A term that depends on how the subset mode lays out its input, not on the views."""

    def loss_terms(self, step):
        scale = 2.0 if step.adapter.mode_for(step.model) == "bucket" else 1.0
        return {"mode": scale * step.whole().logits.logsumexp(dim=1).mean()}


@pytest.mark.parametrize("make, message", [
    (NaNTerm, r"NaNTerm on function-mask \[mask\]: NaNTerm's term 'nan' is not finite"),
    (PerSample, r"PerSample on function-mask \[mask\]: PerSample's term 'per_sample' is a torch.float64 tensor of "
                r"shape \(4,\); a term is a 0-dim floating tensor"),
    (Unnamed, r"Unnamed on function-mask \[mask\]: Unnamed returned a term named ''"),
    (Silent, r"Silent on function-mask \[mask\]: Silent contributes nothing: its loss_terms\(\) returned no term"),
    (LazyAugmentation, r"LazyAugmentation on function-mask \[mask\]: LazyAugmentation contributes nothing: its "
                       r"augment\(\) replaced no batch"),
    (ScalesInPlace, r"ScalesInPlace on function-mask \[mask\]: the step changed the caller's inputs in place "
                    r"\(\['video'\]\)"),
    (ClaimsTheAnswer, r"ClaimsTheAnswer on function-mask \[mask\]: ClaimsTheAnswer declares answer_term 'guided'.* "
                      r"returned no such term"),
])
def test_terms_clause_fails(make, message):
    with pytest.raises(AssertionError, match=message):
        check_technique(make, BY_NAME[CHEAP])


def test_gradient_clause_catches_a_detached_term():
    with pytest.raises(AssertionError, match=r"DetachedTerm on function-mask \[mask\]: term 'detached' is detached "
                                             r"from the model \(no grad_fn\)"):
        check_technique(DetachedTerm, BY_NAME[CHEAP])
    # next to a sound technique too: each term must be attached, not just their sum
    with pytest.raises(AssertionError, match=r"SpatialDistillation\+DetachedTerm on .*term 'detached' is detached"):
        check_technique(lambda: [sparc.SpatialDistillation(), DetachedTerm()], BY_NAME[CHEAP])


def test_gradient_clause_catches_a_term_whose_gradient_is_zero():
    with pytest.raises(AssertionError, match=r"ZeroGradient on function-mask \[mask\]: no gradient reaches the model "
                                             r"from its terms \['zero'\]"):
        check_technique(ZeroGradient, BY_NAME[CHEAP])


def test_gradient_clause_catches_a_non_finite_gradient():
    class SqrtAtZero(sparc.Technique):     # finite value, infinite derivative
        def loss_terms(self, step):
            return {"sqrt": (step.whole().logits * 0.0).abs().sqrt().mean()}

    with pytest.raises(AssertionError, match=r"SqrtAtZero on function-mask \[mask\]: non-finite gradient in "
                                             r"\['frame.0.weight'"):
        check_technique(SqrtAtZero, BY_NAME[CHEAP])


def test_resume_clause_catches_draws_from_the_global_rng():
    """Seeded alike, a global draw repeats itself on resume; from one checkpoint under another global
    seed it does not, while a draw from self.generator does (SpatialDistillation passes)."""
    with pytest.raises(AssertionError, match=r"GlobalDraws on function-mask \[mask\]: resume is not exact: from one "
                                             r"checkpoint, the terms \['one_frame'\] change with the global RNG"):
        check_technique(GlobalDraws, BY_NAME[CHEAP])
    contract.check_technique_resumes(lambda: sparc.SpatialDistillation(), BY_NAME[CHEAP])


def test_resume_clause_catches_state_outside_the_state_dict():
    with pytest.raises(AssertionError, match=r"CountsOutsideStateDict on function-mask \[mask\]: resume is not exact: "
                                             r"after load_state_dict the second step gives loss .*'warm'"):
        check_technique(CountsOutsideStateDict, BY_NAME[CHEAP])


def test_resume_clause_catches_a_generator_left_out_of_the_checkpoint():
    class Forgetful(sparc.SpatialDistillation):
        def get_extra_state(self):
            return torch.zeros(0, dtype=torch.uint8)

        def set_extra_state(self, state):
            pass

    with pytest.raises(AssertionError, match=r"Forgetful on function-mask \[mask\]: resume is not exact: after "
                                             r"load_state_dict .*'spatial'"):
        check_technique(Forgetful, BY_NAME[CHEAP])


def test_agreement_clause_catches_a_term_that_depends_on_the_mode():
    with pytest.raises(AssertionError, match=r"ReadsTheMode on function-mask \[bucket vs mask\]: term 'mode' is "
                                             r".* in bucket mode and .* in mask mode"):
        check_technique(ReadsTheMode, BY_NAME[CHEAP], modes=("mask", "bucket"))
    check_technique(lambda: sparc.TemporalGuidance(), BY_NAME[CHEAP], modes=("mask", "bucket"))


def test_a_factory_must_build_a_new_technique_each_call():
    shared = sparc.SpatialDistillation()
    with pytest.raises(AssertionError, match="returned a technique it had returned before"):
        check_technique(lambda: shared, BY_NAME[CHEAP])
    with pytest.raises(AssertionError, match="not a sparc Technique"):
        check_technique(lambda: torch.nn.Linear(2, 2), BY_NAME[CHEAP])


def test_a_step_that_fails_is_reported_with_the_technique_case_and_mode():
    """SpanFrames reads ground-truth spans the function cases' batches do not carry."""
    with pytest.raises(AssertionError, match=r"TemporalGuidance on function-mask \[mask\]: the wrapped training step "
                                             r"failed: ValueError: SpanFrames reads ground-truth spans"):
        check_technique(lambda: sparc.TemporalGuidance(source="span"), BY_NAME[CHEAP])


# ---- docs/techniques.md runs as written ----------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(text):
    """[(first body line number, body)] of the ```python blocks."""
    blocks, lang, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if lang is None:
            m = FENCE.match(line)
            if m:
                lang, body, start = m.group(1), [], number + 1
        elif line.strip() == "```":
            if lang == "python":
                blocks.append((start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"{DOC.name}: the block opened at line {start - 1} is never closed"
    return blocks


DOC_BLOCKS = python_blocks(DOC.read_text())


def test_the_guide_has_a_worked_example():
    assert any("check_technique(" in body and "class " in body for _, body in DOC_BLOCKS)


@pytest.mark.parametrize("block", DOC_BLOCKS, ids=[f"line{b[0]}" for b in DOC_BLOCKS])
def test_docs_techniques_python_block(block, tmp_path, monkeypatch):
    line, body = block
    monkeypatch.chdir(tmp_path)
    code = compile("\n" * (line - 1) + body, str(DOC), "exec")  # tracebacks give the doc's line numbers
    exec(code, {"__name__": "__docs__"})
