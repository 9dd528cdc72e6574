"""One contract for every adapter (sparc.contract): each case file in tests/cases/ contributes
AdapterCase objects, and every clause runs on every case."""

import importlib.util
from pathlib import Path

import pytest
import torch

from sparc import contract

CASE_DIR = Path(__file__).parent / "cases"


def load_cases():
    cases = []
    for path in sorted(CASE_DIR.glob("case_*.py")):
        spec = importlib.util.spec_from_file_location(f"sparc_contract_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(module.CASES)
    return cases


CASES = load_cases()
IDS = [c.name for c in CASES]


def test_every_backbone_family_has_a_case():
    from sparc.backbones import BACKBONES

    names = " ".join(IDS)
    for family in (*BACKBONES.names(), "function"):
        assert family in names, f"no case in tests/cases/ for the registered backbone {family!r}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_subset_equals_physical_removal(case):
    modes = contract.check_subset_equals_slicing(case)
    assert modes  # at least the adapter's own mode ran


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_single_frame(case):
    contract.check_single_frame(case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_reach_every_parameter(case):
    contract.check_gradients(case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eval_is_deterministic(case):
    contract.check_eval_deterministic(case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sparc_steps_overfit_a_fixed_batch(case):
    contract.check_overfits(case)


# ---- the contract can fail: each clause catches the defect it is about ---------------------------

def _function_case(name, model_fn, **adapter_kwargs):
    from sparc.adapters import FunctionAdapter

    function = next(c for c in CASES if c.name == "function-bucket")
    adapter = FunctionAdapter(lambda m, x: m(x["video"], x["cands"], lengths=x.get("lengths")),
                              temporal={"video": 1}, candidate={"cands": 1}, **adapter_kwargs)
    return contract.AdapterCase(name, model_fn, adapter, function.make_batch, 5)


def test_contract_catches_a_model_that_ignores_lengths():
    function = next(c for c in CASES if c.name == "function-bucket")

    def deaf(seed):
        model = function.build_model(seed)
        forward = model.forward
        model.forward = lambda video, cands, lengths=None: forward(video, cands)  # pads leak into the mean
        return model

    case = _function_case("deaf", deaf, subset="lengths", lengths_field="lengths")
    with pytest.raises(AssertionError, match="physically removing"):
        contract.check_subset_equals_slicing(case)


def test_contract_finds_parameters_without_gradient_and_catches_bad_gradients():
    function = next(c for c in CASES if c.name == "function-bucket")

    def with_spare(seed):
        model = function.build_model(seed)
        model.spare = torch.nn.Linear(2, 2)
        return model

    # the probe step finds the spare parameters, so DDP is told without any declaration
    assert contract.check_gradients(_function_case("spare", with_spare)) == ["spare.weight", "spare.bias"]

    def poisoned(seed):
        model = function.build_model(seed)
        model.cand.weight.register_hook(lambda g: g * float("nan"))
        return model

    with pytest.raises(AssertionError, match=r"non-finite gradients in \['cand.weight'\]"):
        contract.check_gradients(_function_case("poisoned", poisoned))

    def detached(seed):
        model = function.build_model(seed)
        forward = model.forward
        model.forward = lambda *a, **k: forward(*a, **k).detach().requires_grad_()
        return model

    with pytest.raises(AssertionError, match="no gradient reaches the model"):
        contract.check_gradients(_function_case("detached", detached))


def test_contract_catches_randomness_in_eval():
    function = next(c for c in CASES if c.name == "function-bucket")

    def noisy(seed):
        model = function.build_model(seed)
        forward = model.forward
        model.forward = lambda *a, **k: forward(*a, **k) + torch.randn(())  # noise even in eval
        return model

    with pytest.raises(AssertionError, match="two eval forwards differ"):
        contract.check_eval_deterministic(_function_case("noisy", noisy))


def test_contract_catches_a_model_that_cannot_learn():
    function = next(c for c in CASES if c.name == "function-bucket")

    def frozen(seed):
        model = function.build_model(seed)
        model.cand.weight.register_hook(lambda g: g * 0)
        model.cand.bias.register_hook(lambda g: g * 0)
        model.frame[0].weight.register_hook(lambda g: g * 0)
        model.frame[0].bias.register_hook(lambda g: g * 0)
        return model

    with pytest.raises(AssertionError, match="did not fall"):
        contract.check_overfits(_function_case("frozen", frozen))


def test_sparc_adapters_exports_the_public_names():
    import sparc.adapters as adapters

    for name in ("HGA", "HME", "VGT", "STAGE", "MemoryAttention",
                 "HGAAdapter", "VGTAdapter", "STAGEAdapter", "MemoryAdapter", "FunctionAdapter"):
        assert name in adapters.__all__ and hasattr(adapters, name)


def test_quickstart_case_passes_the_whole_contract():
    """The README quickstart's model (no candidate inputs) and FunctionAdapter pass check_adapter (before
    temporal-guided mixup followed the adapter, its default concat made the step fail on a shape mismatch)."""
    case = next(c for c in CASES if c.name == "function-quickstart")
    contract.check_adapter(case)


def test_an_adapter_that_drops_its_declared_candidate_field_fails_clearly():
    """Declaring a candidate field the forward never passes on: concat doubles it, the model still
    scores C; the contract names the cause instead of a tensor-size mismatch."""
    import dataclasses

    from sparc.adapters import FunctionAdapter

    case = next(c for c in CASES if c.name == "function-quickstart")
    adapter = FunctionAdapter(lambda m, b: m(b["video"], b["question"]), temporal={"video": 1},
                              candidate={"cands": 1})

    def make_batch(batch_size, num_frames, seed):
        return dict(case.make_batch(batch_size, num_frames, seed), cands=torch.randn(batch_size, 5, 3))

    broken = dataclasses.replace(case, name="drops-candidates", adapter=adapter, make_batch=make_batch)
    with pytest.raises(AssertionError, match=r"drops-candidates: .*returned logits of shape \(4, 5\), but this step "
                                             r"scores 10 candidates \(candidates='concat' appended"):
        contract.check_gradients(broken)
