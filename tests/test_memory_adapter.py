"""MemoryAdapter: the task's fields, lengths mode for MemoryAttention, delegation to HME's functions,
and the paper's losses through sparc.wrap (hinge without mixup, MSE for counting)."""

import sys
import types

import pytest
import torch

import sparc
from sparc.adapters.memory import MemoryAdapter, MemoryAttention, count_mse, task_loss_for
from sparc.contract import causal_priors
from sparc.mixup import temporal_guided_mixup
from sparc.outputs import ModelOutput

from helpers import as64, close64  # tests/helpers.py

A_DIM, M_DIM, BERT, MAX_LEN = 6, 5, 12, 5


def tiny(task="multiple_choice", seed=0):
    torch.manual_seed(seed)
    return MemoryAttention(A_DIM, M_DIM, hidden_size=8, word_dim=6, video_memory_size=3, text_memory_size=2,
                           max_len_q=MAX_LEN, task=task, num_answers=7, bert_dim=BERT)


def make_batch(task="multiple_choice", B=4, T=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    batch = {"vid_feats": torch.randn(B, T, A_DIM + M_DIM, generator=g), "qid": [f"q{i}" for i in range(B)]}
    if task == "multiple_choice":
        batch["qas"] = torch.randn(B, 5, MAX_LEN, BERT, generator=g)
        batch["qas_lengths"] = torch.randint(1, MAX_LEN + 1, (B, 5), generator=g)
        batch["answer"] = torch.randint(0, 5, (B,), generator=g)
    else:
        batch["qns"] = torch.randn(B, MAX_LEN, BERT, generator=g)
        batch["qns_lengths"] = torch.randint(1, MAX_LEN + 1, (B,), generator=g)
        batch["answer"] = torch.randint(1, 8, (B,), generator=g) if task == "count" else torch.randint(0, 7, (B,), generator=g)
    return batch


KEEP = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)


def test_fields_follow_the_task():
    mc = MemoryAdapter()
    assert (mc.task, mc.open_ended, mc.candidate, mc.question) == (
        "multiple_choice", False, {"qas": 1, "qas_lengths": 1}, {})
    assert mc.temporal == {"vid_feats": 1} and mc.lengths_field == "vid_lengths"
    for oe in (MemoryAdapter(open_ended=True), MemoryAdapter(task="open_ended")):
        assert oe.task == "open_ended" and oe.open_ended and oe.candidate == {}
        assert oe.question == {"qns": 1, "qns_lengths": 0}
    count = MemoryAdapter(task="count")
    assert not count.open_ended and count.candidate == {} and "qns" in count.question
    assert MemoryAdapter.for_model(tiny("open_ended")).num_answers == 7
    assert MemoryAdapter.for_model(tiny("count")).task == "count"
    with pytest.raises(ValueError, match="contradicts"):
        MemoryAdapter(task="count", open_ended=True)


def test_model_and_adapter_tasks_must_agree():
    with pytest.raises(ValueError, match="built for task 'open_ended'"):
        MemoryAdapter().forward(tiny("open_ended"), make_batch("open_ended"))


@torch.no_grad()
@pytest.mark.parametrize("task", ["multiple_choice", "open_ended", "count"])
def test_lengths_mode_equals_physical_slicing(task):
    # in float64, to 1e-10 relative (tests/helpers.py, REL64): the equivalence, not the CPU's float32 kernels
    model, adapter = tiny(task).eval().double(), MemoryAdapter(task)
    assert adapter.mode_for(model) == "lengths"
    batch = as64(make_batch(task))
    got = adapter.forward_subset(model, batch, KEEP).logits
    rows = []
    for b in range(4):
        alone = adapter.slice_frames(adapter.select_batch(batch, torch.tensor([b])), KEEP[b:b + 1])
        rows.append(adapter.forward(model, alone).logits)
    expected = torch.cat(rows)
    assert got.shape == expected.shape == (4, {"multiple_choice": 5, "open_ended": 7, "count": 1}[task])
    assert close64(got, expected)


def test_anything_else_is_driven_through_the_hme_functions(monkeypatch):
    calls = []
    stub = types.ModuleType("sparc.adapters.hme")
    stub.hme_subset_mode = lambda model: calls.append("mode") or "bucket"
    stub.forward_hme = lambda model, inputs: calls.append("forward") or ModelOutput(logits=model(inputs["vid_feats"]))
    monkeypatch.setitem(sys.modules, "sparc.adapters.hme", stub)

    class NotMemoryAttention(torch.nn.Module):
        def forward(self, vid):
            return vid.sum(dim=(1, 2))[:, None].expand(-1, 5)

    other, adapter = NotMemoryAttention(), MemoryAdapter()
    batch = make_batch()
    assert adapter.mode_for(other) == "bucket"
    out = adapter.forward_subset(other, batch, KEEP).logits     # bucket mode: one group per kept count
    assert calls.count("forward") == len(set(KEEP.sum(1).tolist()))
    assert torch.allclose(out[:, 0], (batch["vid_feats"] * KEEP[..., None]).sum(dim=(1, 2)))
    assert adapter.mode_for(tiny()) == "lengths" and calls.count("mode") == 2
    assert MemoryAdapter.for_model(other).find_unused_parameters  # the original HME never reads linear_qns
    other.supports_vid_lengths = True                              # sparc's reference HME freezes it
    assert not MemoryAdapter.for_model(other).find_unused_parameters
    assert not MemoryAdapter.for_model(tiny()).find_unused_parameters


def test_open_ended_mixup_mixes_the_question_fields():
    adapter = MemoryAdapter(open_ended=True)
    batch = make_batch("open_ended")
    keep = torch.ones(4, 6, dtype=torch.bool)
    perm = torch.tensor([1, 0, 3, 2])
    mixed = temporal_guided_mixup(batch, temporal=adapter.temporal, keep=keep, answer=batch["answer"], lam=0.25,
                                  perm=perm, num_candidates=7, candidate=adapter.candidate,
                                  question=adapter.question, open_ended=adapter.open_ended)
    assert torch.allclose(mixed.batch["qns"], 0.25 * batch["qns"] + 0.75 * batch["qns"][perm])
    assert torch.equal(mixed.batch["qns_lengths"], torch.maximum(batch["qns_lengths"], batch["qns_lengths"][perm]))
    logits = adapter.forward(tiny("open_ended"), mixed.batch).logits
    assert logits.shape == (4, 7) and torch.isfinite(logits).all()


def hinge_by_hand(scores, answer):
    total = 0.0
    for s, a in zip(scores.tolist(), answer.tolist()):
        total += sum(max(0.0, 1.0 - s[a] + s[n]) for n in range(len(s)) if n != a)
    return total / len(answer)


def test_hinge_training_step_without_mixup():
    """The paper's multiple-choice loss (eq. 23) as wrap's task loss, next to SpatialDistillation (hard
    labels: no mixup), reaches every parameter."""
    model, adapter = tiny().train(), MemoryAdapter()
    batch = make_batch()
    priors = causal_priors(4, 6, 5, batch["answer"])
    wrapped = sparc.wrap(model, adapter, [sparc.SpatialDistillation()], task_loss=task_loss_for("multiple_choice"))
    out = wrapped(batch, priors=priors)
    assert set(out.terms) == {"answer", "spatial"}
    assert abs(float(out.terms["answer"].detach()) - hinge_by_hand(out.logits.detach(), batch["answer"])) < 1e-5
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="hard labels"):  # mixups make soft labels
        sparc.wrap(model, adapter, [sparc.TemporalGuidedMixup()], task_loss="hinge")(batch, priors=priors)


def test_count_trains_with_mse():
    model, adapter = tiny("count").train(), MemoryAdapter(task="count")
    batch = make_batch("count")
    wrapped = sparc.wrap(model, adapter, [], task_loss=count_mse)
    losses = []
    for _ in range(5):
        model.zero_grad()
        out = wrapped(batch)
        assert out.logits.shape == (4, 1)
        expected = ((out.logits.detach()[:, 0] - batch["answer"].float()) ** 2).mean()
        assert torch.allclose(out.loss, expected)
        out.loss.backward()
        with torch.no_grad():  # plain gradient descent (torch.optim would import torch._dynamo: seconds)
            for p in model.parameters():
                p -= 0.02 * p.grad
        losses.append(float(out.loss.detach()))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
