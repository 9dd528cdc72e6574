"""The original classes train, not only step once: the faithful HGA stand-in (the original's
exact-zero co-attention masks and its WeightDrop) runs 200 SpARC steps without a non-finite loss under
HGAAdapter's guard, and DistributedDataParallel runs through with the probe's ddp_kwargs."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import sparc
from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, ZERO_SUM_SHIFT, unmask_real_rows
from sparc.contract import causal_priors

from cases.case_hga import OriginalLikeHGA, hga_batch, tiny_hga  # pytest puts tests/ on sys.path


def test_the_guard_moves_real_rows_off_a_zero_sum_and_leaves_padding_alone():
    # +-1 rows add up to exactly 0.0 in any order (every partial sum is a small integer)
    x = torch.tensor([[[1.0, -1.0, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [2.0, 1.0, -0.5, 0.25]]], dtype=torch.float64)
    y = unmask_real_rows(x)
    assert torch.equal(y[0, 1], x[0, 1])                              # padding stays exactly zero
    assert torch.allclose(y[0, 0] - x[0, 0], torch.full((4,), ZERO_SUM_SHIFT, dtype=torch.float64))   # rms 1: +1e-4 each
    assert float(y[0, 0].sum()) == pytest.approx(4 * ZERO_SUM_SHIFT)
    rms = float(x[0, 2].pow(2).mean().sqrt())
    assert torch.allclose(y[0, 2] - x[0, 2], torch.full((4,), ZERO_SUM_SHIFT * rms, dtype=torch.float64))  # away from 0: sum > 0


class Pattern(nn.Module):
    """Stands in for an input LayerNorm with fixed rows: +-1 rows sum to exactly 0.0 on every CPU (the
    original masks them all), rows of ones never do."""

    def __init__(self, row):
        super().__init__()
        self.row = row

    def forward(self, x):
        return torch.tensor(self.row, dtype=x.dtype).repeat(x.shape[-1] // len(self.row)).expand_as(x).clone()


def test_without_the_guard_the_original_goes_nan_and_with_it_a_training_view_is_finite():
    model = tiny_hga(OriginalLikeHGA, 0)
    model.v_input_ln, model.q_input_ln = Pattern([1.0, -1.0]), Pattern([1.0])  # every frame masked, no word
    batch = hga_batch(3, 4, 0)
    with torch.no_grad():
        bare, _ = model.eval()(batch["vid_feats"], batch["qas"], batch["qas_lengths"])
    assert torch.isnan(bare).all()                                   # every query's keys are masked
    out = HGAAdapter().forward_subset(model.train(), batch, torch.eye(4, dtype=torch.bool)[[0, 1, 3]])
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("mixup", [False, True])
def test_200_sparc_steps_on_the_original_like_hga_stay_finite(mixup):
    torch.manual_seed(0)
    model = tiny_hga(OriginalLikeHGA, 0)
    techniques = [sparc.TemporalGuidance(), sparc.SpatialDistillation()]
    if mixup:
        techniques.append(sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0))
    wrapped = sparc.wrap(model, HGAAdapter(), techniques)
    wrapped.reseed(0)
    bad = []
    for step in range(200):
        batch = hga_batch(6, 5, step)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        optimizer.zero_grad()
        out = wrapped(batch, priors=causal_priors(6, 5, 5, batch["answer"], step))
        if not torch.isfinite(out.loss):
            bad.append(step)
            continue
        out.loss.backward()
        optimizer.step()
    assert not bad, f"non-finite loss at steps {bad[:10]}"


def test_the_probe_finds_the_originals_untrained_weights_and_leaves_no_trace():
    batch = hga_batch(4, 5, 1)
    priors = causal_priors(4, 5, 5, batch["answer"], 1)
    original = sparc.wrap(tiny_hga(OriginalLikeHGA, 0), HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    unused = original.unused_parameters(batch, priors)
    assert {n for n in unused if n.endswith("weight_raw")} == {
        f"co_attn.encoder_layers.0.linear_{k}.weight_raw" for k in
        ("question", "video", "v_question", "v_video", "final_qv", "final_vq")}
    assert original.ddp_kwargs(batch, priors) == {"find_unused_parameters": True}
    assert original.ddp_kwargs() == {"find_unused_parameters": False}   # the adapter declares nothing
    reference = sparc.wrap(tiny_hga(HGA, 0), HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    assert reference.ddp_kwargs(batch, priors) == {"find_unused_parameters": False}

    # no trace: dropout draws, the techniques' generators, BatchNorm statistics and gradients
    def build():
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
        adapter = sparc.adapters.FunctionAdapter(lambda m, x: m(x["video"].mean(1)), temporal={"video": 1})
        return sparc.wrap(model, adapter, [sparc.SpatialDistillation()])

    toy = {"video": torch.randn(5, 3, 4), "answer": torch.tensor([0, 1, 2, 0, 1])}
    toy_priors = torch.full((5, 3, 3), 1 / 3)
    losses = []
    for probe in (False, True):
        wrapped = build()
        wrapped.model[0].weight.grad = torch.ones_like(wrapped.model[0].weight)
        if probe:
            assert wrapped.unused_parameters(toy, toy_priors) == []
        assert torch.equal(wrapped.model[0].weight.grad, torch.ones_like(wrapped.model[0].weight))
        losses.append(wrapped(toy, priors=toy_priors).loss)
        stats = wrapped.model[1].running_mean.clone()
    assert torch.equal(losses[0], losses[1]) and torch.equal(stats, wrapped.model[1].running_mean)


def ddp_worker(out_path):
    """Two gloo processes train the original-like HGA under DDP: with find_unused_parameters=False
    the second step fails (its WeightDrop leaves weight_raw without gradient); with the probe's
    ddp_kwargs five steps run through."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    for label in ("declared", "probe"):
        torch.manual_seed(0)
        wrapped = sparc.wrap(tiny_hga(OriginalLikeHGA, 0), HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
        wrapped.reseed(rank)
        batch = hga_batch(4, 5, rank)
        priors = causal_priors(4, 5, 5, batch["answer"], rank)
        kwargs = wrapped.ddp_kwargs() if label == "declared" else wrapped.ddp_kwargs(batch, priors)
        ddp = nn.parallel.DistributedDataParallel(wrapped, **kwargs)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
        losses = []
        try:
            for step in range(5):
                optimizer.zero_grad()
                loss = ddp(hga_batch(4, 5, 10 * step + rank), priors=priors).loss
                loss.backward()
                optimizer.step()
                losses.append(float(loss))
            results[label] = ("ok", kwargs, losses)
        except RuntimeError as e:
            results[label] = ("failed", kwargs, f"step {len(losses) + 1}: {str(e)[:120]}")
        dist.barrier()
    if rank == 0:
        torch.save(results, out_path)
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_on_two_cpu_processes_runs_through_with_the_probes_kwargs(tmp_path):
    from helpers import free_port  # tests/helpers.py

    here = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    script = tmp_path / "worker.py"
    script.write_text("import sys; from test_original_training import ddp_worker; ddp_worker(sys.argv[1])")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    subprocess.run(launch + [str(script), str(tmp_path / "ddp.pt")], env=env, check=True, timeout=300)
    results = torch.load(tmp_path / "ddp.pt")
    status, kwargs, detail = results["declared"]
    assert kwargs == {"find_unused_parameters": False} and status == "failed" and detail.startswith("step 2"), detail
    status, kwargs, losses = results["probe"]
    assert kwargs == {"find_unused_parameters": True} and status == "ok", losses
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))


def test_train_asks_the_probe_when_launched_on_several_processes(monkeypatch):
    """sparc.train hands DDP the probe's answer in a multi-process launch (WORLD_SIZE > 1), the
    adapter's declaration otherwise (no probe step: one process has no DDP)."""
    from sparc.train import TrainConfig, probe_ddp_kwargs

    rows = [hga_batch(1, 5, i) for i in range(4)]

    def collate(items):
        return {k: (torch.cat([r[k] for r in items]) if torch.is_tensor(items[0][k]) else sum((r[k] for r in items), []))
                for k in items[0]}

    wrapped = sparc.wrap(tiny_hga(OriginalLikeHGA, 0), HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    priors = lambda batch: causal_priors(len(batch["qid"]), 5, 5, batch["answer"])
    config = TrainConfig(batch_size=4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert probe_ddp_kwargs(wrapped, rows, collate, config, priors, "qid") == {"find_unused_parameters": False}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert probe_ddp_kwargs(wrapped, rows, collate, config, priors, "qid") == {"find_unused_parameters": True}


def _original_hga():
    return tiny_hga(OriginalLikeHGA, 0, zero_sum_masking=False), HGAAdapter(), hga_batch(6, 5, 3)


def _original_hme():
    from cases.case_hme import OriginalLikeHME, hme_batch, original_adapter, tiny_hme

    return tiny_hme(OriginalLikeHME, 0), original_adapter(), hme_batch(6, 5, 3)


def _original_vgt():
    from cases.case_vgt import OriginalLikeVGT, tiny_vgt, vgt_batch

    return tiny_vgt(OriginalLikeVGT, 0), sparc.adapters.VGTAdapter(), vgt_batch(6, 5, 3)


# (build, the text encoder that actually runs, how many times one forward runs it)
ORIGINALS = [(_original_hga, lambda m: m.qns_encoder.rnn, 5), (_original_hme, lambda m: m.qns_encoder.rnn, 5),
             (_original_vgt, lambda m: m.amodel.bert, 1)]


@pytest.mark.parametrize("build, encoder, per_forward", ORIGINALS, ids=["hga", "hme", "vgt"])
def test_the_originals_question_encodings_are_computed_once_and_served_to_every_view(build, encoder, per_forward):
    """An original class cannot be split, so the adapter runs its text encoder (HGA's and HME's
    question RNN per candidate, VGT's BERT over the candidates) once over the step's batch and serves
    each view's rows from it: every view and gradient equals re-encoding per view (float64, eval mode;
    HGA with the intended masks so the comparison holds on any CPU), and the encoder runs once per step
    instead of once per view and bucket group."""
    from helpers import as64, close64

    batch = as64(build()[2])
    keep = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 0, 1, 0], [0, 1, 0, 0, 0],
                         [1, 0, 1, 1, 0]], dtype=torch.bool)
    index = torch.tensor([0, 4, 2, 1, 3, 0])
    results = {}
    for share in (True, False):
        model, adapter, _ = build()
        model = model.double().eval()
        calls = []
        encoder(model).register_forward_hook(lambda *a: calls.append(1))
        answer = batch[adapter.answer_field]
        step = sparc.Step(model, adapter, batch, None, answer, 5, keep, share_text=share)
        views = [step.whole().logits, step.causal().logits, step.single(index).logits]
        sum(v.sum() for v in views).backward()
        grads = torch.cat([p.grad.flatten() for _, p in sorted(model.named_parameters()) if p.grad is not None])
        results[share] = (views, grads, len(calls))
    for shared, alone in zip(results[True][0], results[False][0]):
        assert close64(shared, alone)
    assert close64(results[True][1], results[False][1])
    # once per step with the memo; per view and bucket group without (whole 1, causal rows in 3
    # kept-count groups, single 1)
    assert results[True][2] == per_forward and results[False][2] == per_forward * (1 + 3 + 1)
