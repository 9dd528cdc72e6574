"""The Accelerate loop: resume gives the uninterrupted losses; 2 CPU processes give 1 process's metrics."""

import json
import os
import subprocess
import sys

import pytest
import torch

import sparc
from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
from sparc.train import TrainConfig, train

T, C, L, D = 4, 5, 3, 8


class TinyQA(torch.utils.data.Dataset):
    """Random HGA-shaped examples whose answer is readable from frame 1 (so training moves)."""

    def __init__(self, n, seed, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        self.vid = torch.randn(n, T, D, generator=g).to(dtype)
        self.qas = (torch.randn(n, C, L, 768, generator=g) * 0.5).to(dtype)
        self.answer = self.vid[:, 1, :C].argmax(-1)
        self.priors = torch.softmax(4 * torch.randn(n, T, C, generator=g), -1).to(dtype)

    def __len__(self):
        return len(self.answer)

    def __getitem__(self, i):
        return i

    def collate(self, idx):
        idx = torch.tensor(idx)
        return {"index": idx, "qid": [f"q{i}" for i in idx.tolist()], "vid_feats": self.vid[idx],
                "qas": self.qas[idx], "qas_lengths": torch.full((len(idx), C), L), "answer": self.answer[idx]}


def make_model(techniques=True, seed=0, dropout=0.2):
    torch.manual_seed(seed)
    vid = EncoderVidHGA(dim_vid=D, dim_hidden=8, input_dropout_p=dropout)
    qns = EncoderQns(dim_embed=8, dim_hidden=8, vocab_size=1, glove_embed=None, use_bert=True, input_dropout_p=dropout)
    model = HGA(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2})
    techs = [sparc.TemporalGuidance(), sparc.SpatialDistillation(), sparc.TemporalGuidedMixup()] if techniques else []
    return sparc.wrap(model, HGAAdapter(), techs)


class RecordingSGD(torch.optim.SGD):
    """Plain SGD, whose update is linear in the gradient, keeping the (flattened) gradient each step
    applies. Adam's first steps are about lr * sign(g): rounding-level differences in a near-zero
    gradient component flip its sign and move the weight by a full step, so weights after Adam say
    nothing about whether two ways of computing the gradient agree."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.applied = []

    def step(self, closure=None):
        self.applied.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().clone()
                                       for group in self.param_groups for p in group["params"]]))
        return super().step(closure)


def all_weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# Equivalences of training runs (accumulation, processes) compare in float64: the same sums in another
# order agree to ~1e-14 relative there, so 1e-10 relative is tight, and far below what a wrong scaling
# (a factor of 2), a dropped batch or a stale gradient (O(1) relative) does.
REL64 = 1e-10
# Gradients are compared where both runs take them at the same weights: the first step, or every step
# of a run at lr 0 (both epochs, reshuffled; measured: 6e-14 relative). After a step at lr > 0 the two
# runs' weights differ by rounding, and this tiny HGA's gradient is sensitive enough to its weights
# (x20 per step at lr 0.1) that later gradients would measure the model's conditioning, not the loop;
# so at lr > 0 the final weights are compared, which SGD moves linearly in the gradients (measured:
# 3e-13 relative at lr 1e-2).
LR = 1e-2


def assert_close64(a, b, what):
    assert a.dtype == b.dtype == torch.float64, (what, a.dtype, b.dtype)
    diff, scale = float((a - b).abs().max()), float(b.abs().max())
    assert diff <= REL64 * scale, f"{what}: differ by {diff:.3g} at scale {scale:.3g}"


def run(data, config, techniques=True):
    return train(make_model(techniques), data, data.collate, config, eval_set=data,
                 priors=lambda b: data.priors[b["index"]])


def test_resume_after_a_kill_continues_exactly(tmp_path):
    data = TinyQA(24, seed=1)
    base = dict(epochs=3, batch_size=5, lr=1e-2, seed=3, progress=False, log_with=None)
    full = run(data, TrainConfig(**base))
    # "killed" after step 7 (mid-epoch 2: 5 batches per epoch), with a checkpoint every 7 steps
    out = str(tmp_path / "run")
    first = run(data, TrainConfig(**base, output_dir=out, checkpoint_every=7, max_steps=7))
    assert first.losses == pytest.approx(full.losses[:7], abs=1e-6)
    resumed = run(data, TrainConfig(**base, output_dir=out, checkpoint_every=7))
    assert resumed.losses == pytest.approx(full.losses[7:], abs=1e-6)
    assert resumed.metrics["accuracy"] == full.metrics["accuracy"]
    with open(os.path.join(out, "checkpoints", "step-00000014", "progress.json")) as f:
        assert json.load(f) == {"epoch": 2, "batch": 4, "global_step": 14}


def test_half_written_checkpoint_is_ignored(tmp_path):
    data = TinyQA(10, seed=1)
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000099.tmp").mkdir(parents=True)
    result = run(data, TrainConfig(epochs=1, batch_size=5, seed=0, progress=False, log_with=None, output_dir=str(out)))
    assert result.global_step == 2


def train_sgd64(data, lr, eval_set=None, **config):
    """Plain HGA (no dropout) trained in float64 with :class:`RecordingSGD`: (result, the gradient of
    every step [steps, parameters], the final weights)."""
    cfg = TrainConfig(epochs=2, lr=lr, seed=0, progress=False, log_with=None, **config)
    model = make_model(techniques=False, dropout=0.0).double()
    optimizer = RecordingSGD(model.parameters(), lr=lr)
    result = train(model, data, data.collate, cfg, eval_set=eval_set, optimizer=optimizer)
    return result, torch.stack(optimizer.applied), all_weights(model)


def two_process_worker(out_path, per_process_batch):
    """Train plain HGA in float64 with SGD and save (on the main process) the metrics, predictions,
    final weights and the gradient every step applied (all-reduced across processes)."""
    data = TinyQA(20, seed=5, dtype=torch.float64)
    eval_data = TinyQA(13, seed=6, dtype=torch.float64)   # odd size: gather_for_metrics must drop the padding duplicates
    result, gradients, weights = train_sgd64(data, LR, eval_data, batch_size=per_process_batch, eval_batch_size=4)
    from accelerate import PartialState

    if PartialState().is_main_process:
        torch.save({"metrics": result.metrics, "predictions": result.predictions, "weights": weights,
                    "gradients": gradients}, out_path)
    from sparc.distributed import end_process_group

    end_process_group()   # a clean gloo shutdown (left to interpreter exit, a worker can abort)


def test_two_cpu_processes_match_one(tmp_path):
    # Fresh processes on gloo (forking this pytest process could deadlock). torchrun with
    # ACCELERATE_USE_CPU=1 is what makes accelerate pick its multi-CPU backend.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from test_train import two_process_worker; two_process_worker(sys.argv[1], int(sys.argv[2]))"
    script = tmp_path / "worker.py"
    script.write_text(code)
    from helpers import free_port  # tests/helpers.py

    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    subprocess.run(launch + [str(script), str(tmp_path / "two.pt"), "5"], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), "10"], env=env, check=True, timeout=300)
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert two["metrics"] == one["metrics"]
    assert two["metrics"]["num_examples"] == 13
    assert torch.equal(two["predictions"], one["predictions"])
    # the all-reduced gradient of 2 x 5 examples is the gradient of the 10 (the first step, at the same
    # weights; one run only, as each launch costs seconds), and SGD then takes the same four steps
    assert two["gradients"].shape == one["gradients"].shape and two["gradients"].shape[0] == 4
    assert_close64(two["gradients"][0], one["gradients"][0], "gradient of step 1")
    assert_close64(two["weights"], one["weights"], "weights after training")


def test_gradient_accumulation_matches_the_larger_batch():
    data = TinyQA(20, seed=2, dtype=torch.float64)
    results = []
    for batch_size, accumulate in [(10, 1), (5, 2)]:
        config = dict(batch_size=batch_size, gradient_accumulation_steps=accumulate)
        frozen, grads, _ = train_sgd64(data, 0.0, **config)
        trained, _, weights = train_sgd64(data, LR, data, **config)
        results.append((frozen.global_step, trained.global_step, grads, trained.predictions, weights))
    (frozen_a, steps_a, grads_a, pred_a, w_a), (frozen_b, steps_b, grads_b, pred_b, w_b) = results
    assert frozen_a == frozen_b == steps_a == steps_b == 4 and grads_a.shape[0] == grads_b.shape[0] == 4
    # two accumulated halves (each loss scaled by 1/2) give the gradient of the batch of 10, every step
    for step, (ga, gb) in enumerate(zip(grads_a, grads_b)):
        assert_close64(gb, ga, f"gradient of step {step + 1}")
    assert torch.equal(pred_a, pred_b)
    assert_close64(w_b, w_a, "weights after training")


def test_predict_gives_the_eval_predictions_a_recipe_asks_for():
    data = TinyQA(10, seed=3)
    config = TrainConfig(epochs=1, batch_size=4, eval_batch_size=3, progress=False, log_with=None)
    plain = run(data, config)
    assert plain.predictions.dtype == torch.int64 and "accuracy" in plain.metrics
    # two columns per example (e.g. answer and its score): rows stay in dataset order, no accuracy
    both = train(make_model(), data, data.collate, config, eval_set=data, priors=lambda b: data.priors[b["index"]],
                 predict=lambda out: torch.stack([out.logits.argmax(-1).double(), out.logits.max(-1).values.double()], -1))
    assert both.predictions.shape == (10, 2) and "accuracy" not in both.metrics and both.metrics["num_examples"] == 10
    assert torch.equal(both.predictions[:, 0].long(), plain.predictions)   # same seed, same run: same answers


def test_early_stopping_counts_evaluations_without_improvement():
    data = TinyQA(12, seed=4)
    config = TrainConfig(epochs=10, batch_size=4, lr=0.0, progress=False, log_with=None, early_stopping_patience=2)
    result = run(data, config)                      # lr 0: accuracy never improves after epoch 0
    assert result.stopped_early and [e["epoch"] for e in result.eval_history] == [0, 1, 2]
    assert result.best_epoch == 0 and result.global_step == 3 * 3


class ScriptedAccuracy(torch.nn.Module):
    """A model whose eval accuracy after each epoch follows a script: a buffer counts its training
    steps (so it lives in the weights keep_best restores), and in eval the first ``right`` of the N
    examples get their answer. Its exact numbers hold on any CPU."""

    SCRIPT = [0.25, 0.75, 0.5, 0.5]          # accuracy after epochs 0..3: the best is epoch 1

    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, batch, priors=None):
        from types import SimpleNamespace

        if self.training:
            self.steps += 1
            return SimpleNamespace(loss=self.w ** 2)
        epoch = int(self.steps) // self.steps_per_epoch - 1
        right = batch["index"] < int(self.SCRIPT[epoch] * 8)
        answer = batch["answer"]
        return SimpleNamespace(logits=torch.nn.functional.one_hot(torch.where(right, answer, (answer + 1) % C), C).float())


def test_keep_best_ends_with_the_best_epochs_weights(tmp_path):
    data = TinyQA(8, seed=5)
    config = TrainConfig(epochs=4, batch_size=4, progress=False, log_with=None, keep_best=True)
    result = train(ScriptedAccuracy(2), data, data.collate, config, eval_set=data)
    assert [e["accuracy"] for e in result.eval_history] == ScriptedAccuracy.SCRIPT
    assert result.best_epoch == 1 and result.metrics["accuracy"] == 0.75
    assert (result.predictions == data.answer).tolist() == [True] * 6 + [False] * 2
    # through the files beside the checkpoints, killed in epoch 2 and resumed: the same end
    on_disk = TrainConfig(**{**config.__dict__, "output_dir": str(tmp_path)})
    train(ScriptedAccuracy(2), data, data.collate, TrainConfig(**{**on_disk.__dict__, "max_steps": 5}), eval_set=data)
    resumed = train(ScriptedAccuracy(2), data, data.collate, on_disk, eval_set=data)
    assert resumed.best_epoch == 1 and torch.equal(resumed.predictions, result.predictions)
    assert [e["epoch"] for e in resumed.eval_history] == [0, 1, 2, 3]
    # without keep_best the run ends with its last epoch
    last = train(ScriptedAccuracy(2), data, data.collate, TrainConfig(**{**config.__dict__, "keep_best": False}), eval_set=data)
    assert last.metrics["accuracy"] == 0.5 and last.best_epoch == 1


def test_early_stopping_resumes_its_count(tmp_path):
    data = TinyQA(12, seed=4)
    config = TrainConfig(epochs=10, batch_size=4, lr=0.0, progress=False, log_with=None, early_stopping_patience=2,
                         output_dir=str(tmp_path))
    run(data, TrainConfig(**{**config.__dict__, "max_steps": 6}))     # two epochs, then killed
    resumed = run(data, config)
    assert resumed.stopped_early and [e["epoch"] for e in resumed.eval_history] == [0, 1, 2]
    again = run(data, config)                                          # a finished run started again: no training
    assert again.stopped_early and again.global_step == 9 and again.predictions is not None
