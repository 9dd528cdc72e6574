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

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.vid = torch.randn(n, T, D, generator=g)
        self.qas = torch.randn(n, C, L, 768, generator=g) * 0.5
        self.answer = self.vid[:, 1, :C].argmax(-1)
        self.priors = torch.softmax(4 * torch.randn(n, T, C, generator=g), -1)

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


def two_process_worker(out_path, per_process_batch):
    """Train plain HGA and save (on the main process) its metrics, predictions and weights."""
    data = TinyQA(20, seed=5)
    eval_data = TinyQA(13, seed=6)   # odd size: gather_for_metrics must drop the padding duplicates
    cfg = TrainConfig(epochs=2, batch_size=per_process_batch, eval_batch_size=4, lr=1e-2, seed=0,
                      progress=False, log_with=None)
    model = make_model(techniques=False, dropout=0.0)  # 1 and 2 processes then compute the same thing
    result = train(model, data, data.collate, cfg, eval_set=eval_data)
    from accelerate import PartialState

    if PartialState().is_main_process:
        # The video encoder's weights: (the attention-pool weights get ~0 gradients, which Adam
        # turns into full-size steps of float noise, so they are not comparable across reductions)
        weights = torch.cat([p.detach().flatten() for p in model.model.vid_encoder.parameters()])
        torch.save({"metrics": result.metrics, "predictions": result.predictions, "weights": weights}, out_path)


def test_two_cpu_processes_match_one(tmp_path):
    # Fresh processes on gloo (forking this pytest process could deadlock). torchrun with
    # ACCELERATE_USE_CPU=1 is what makes accelerate pick its multi-CPU backend.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1",
           "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = "import sys; from test_train import two_process_worker; two_process_worker(sys.argv[1], int(sys.argv[2]))"
    script = tmp_path / "worker.py"
    script.write_text(code)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    subprocess.run(launch + [str(script), str(tmp_path / "two.pt"), "5"], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), "10"], env=env, check=True, timeout=300)
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert two["metrics"] == one["metrics"]
    assert two["metrics"]["num_examples"] == 13
    assert torch.equal(two["predictions"], one["predictions"])
    assert torch.allclose(two["weights"], one["weights"], atol=1e-3)  # Adam at lr 1e-2 amplifies reduction-order rounding


def test_gradient_accumulation_matches_the_larger_batch():
    data = TinyQA(20, seed=2)
    results = []
    for batch_size, accumulate in [(10, 1), (5, 2)]:
        cfg = TrainConfig(epochs=2, batch_size=batch_size, gradient_accumulation_steps=accumulate, lr=1e-2,
                          seed=0, progress=False, log_with=None)
        model = make_model(techniques=False, dropout=0.0)
        result = train(model, data, data.collate, cfg, eval_set=data)
        weights = torch.cat([p.detach().flatten() for p in model.model.vid_encoder.parameters()])
        results.append((result.global_step, result.predictions, weights))
    (steps_a, pred_a, w_a), (steps_b, pred_b, w_b) = results
    assert steps_a == steps_b == 4
    assert torch.equal(pred_a, pred_b)
    assert torch.allclose(w_a, w_b, atol=1e-3)
