"""Fine-tuning the ALBEF teacher (SpARC A.1/A.4): freezing, the loss, resume, saving, the CLI, bad input."""

import argparse

import pytest
import torch

from sparc.cli.teachers import add_subcommands
from sparc.data.frames import FrameSource
from sparc.data.questions import VideoQuestion, read_questions
from sparc.teachers.finetune import (
    FINETUNED_NAME,
    _CrossModal,
    answer_lm_loss,
    encode_question_finetune,
    epoch_plan,
    finetune_teacher,
    set_finetune_mode,
    trainable_parameter_names,
)
from sparc.teachers.load import build_albef, load_bert_tokenizer
from sparc.teachers.tiny import write_tiny_teacher_workspace

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return write_tiny_teacher_workspace(tmp_path_factory.mktemp("ws"), checkpoint=True)


def _inputs(ws):
    model = build_albef(ws["config"], ws["checkpoint"])
    return model, load_bert_tokenizer(ws["vocab"]), read_questions(ws["questions"]), FrameSource(ws["frames"], NUM_FRAMES)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trainable_set_and_freezing_after_a_step(ws):
    model, tok, qs, frames = _inputs(ws)
    fusion = model.text_encoder.config.fusion_layer
    layers = model.text_encoder.config.num_hidden_layers
    assert 0 < fusion < layers
    names = set(trainable_parameter_names(model))
    expected = {n for n, _ in model.named_parameters()
                if n.startswith("text_decoder.")
                or any(n.startswith(f"text_encoder.encoder.layer.{i}.") for i in range(fusion, layers))}
    assert names == expected
    assert any(".crossattention." in n for n in names) and not any(n.startswith("visual_encoder.") for n in names)
    assert not any(n.startswith("text_encoder.embeddings.") for n in names)

    before = _state(model)
    params = dict(model.named_parameters())
    finetune_teacher(model, tok, qs, frames, batch_size=8, lr=1e-3, max_steps=1, progress=False)
    after = model.state_dict()
    for k, v in before.items():
        if k in names:
            assert not torch.equal(v, after[k]), f"trainable {k} did not change"
        elif k in params or k.endswith("position_ids"):
            assert torch.equal(v, after[k]), f"frozen {k} changed"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == names


def test_frozen_parts_run_in_eval_mode_and_question_encoding_matches(ws):
    model, *_ = _inputs(ws)
    set_finetune_mode(model)
    assert not model.visual_encoder.training and not model.text_encoder.embeddings.training
    fusion = model.text_encoder.config.fusion_layer
    assert [l.training for l in model.text_encoder.encoder.layer] == [i >= fusion for i in range(len(model.text_encoder.encoder.layer))]
    assert model.text_decoder.training
    model.eval()
    img = model.encode_image(torch.randn(2, 3, 32, 32))
    ids = torch.tensor([[101, 110, 111, 112], [101, 113, 0, 0]])
    mask = (ids != 0).long()
    torch.testing.assert_close(encode_question_finetune(model, img, ids, mask), model.encode_question(img, ids, mask),
                               rtol=0, atol=0)


def test_loss_equals_hand_computation():
    torch.manual_seed(0)
    V = 7
    logits = torch.randn(2, 5, V)
    ids = torch.tensor([[1, 3, 4, 2, 0], [1, 5, 6, 6, 2]])  # [CLS]=1 a.. [SEP]=2, pad 0
    per = answer_lm_loss(logits, ids, pad_id=0)
    logp = logits.log_softmax(-1)
    hand = []
    for n in range(2):
        total = 0.0
        for t in range(1, 5):  # position t-1 predicts token t; first token never predicted
            if ids[n, t] != 0:
                total -= float(logp[n, t - 1, ids[n, t]])
        hand.append(total)
    torch.testing.assert_close(per, torch.tensor(hand), rtol=0, atol=1e-5)
    assert float(per.mean()) == pytest.approx(sum(hand) / 2, abs=1e-5)  # batch loss: mean over examples


def test_module_loss_is_albef_arithmetic(ws):
    model, *_ = _inputs(ws)
    model.eval()
    img = model.encode_image(torch.randn(2, 3, 32, 32))
    q = torch.tensor([[101, 110, 111], [101, 112, 0]])
    a = torch.tensor([[101, 120, 121, 102], [101, 122, 102, 0]])
    per = _CrossModal(model).eval()(img, q, (q != 0).long(), a, (a != 0).long())
    # the teacher's own summed log-likelihood of the same answer, negated
    states = model.encode_question(img, q, (q != 0).long())
    ll = torch.stack([model.cand_loglik(states[i:i + 1], (q[i:i + 1] != 0).long(), a[i:i + 1], (a[i:i + 1] != 0).long())[0, 0]
                      for i in range(2)])
    torch.testing.assert_close(per, -ll, rtol=1e-5, atol=1e-5)


def test_epoch_plan_covers_every_pair_once_and_depends_on_seed_and_epoch():
    sizes = [3, 1, 2, 4, 2]
    plan = epoch_plan(sizes, 4, batch_size=5, pool_videos=2, seed=0, epoch=1)
    seen = [(pool[v], f, q) for pool, batches in plan for b in batches for v, f, q in b]
    assert sorted(seen) == sorted((v, f, q) for v, n in enumerate(sizes) for f in range(4) for q in range(n))
    assert all(len(b) <= 5 for _, bs in plan for b in bs)
    assert plan == epoch_plan(sizes, 4, 5, 2, 0, 1) and plan != epoch_plan(sizes, 4, 5, 2, 0, 2)


def test_loss_goes_down(ws):
    model, tok, qs, frames = _inputs(ws)
    r = finetune_teacher(model, tok, qs[:6], frames, epochs=12, batch_size=8, lr=2e-3, progress=False)
    assert len(r.losses) == 36 and r.completed
    first, last = sum(r.losses[:6]) / 6, sum(r.losses[-6:]) / 6
    assert last < 0.6 * first, (first, last)


def test_kill_and_resume_gives_the_uninterrupted_weights_and_saved_file_loads_strictly(ws, tmp_path):
    kw = dict(epochs=2, batch_size=8, lr=1e-3, progress=False)
    model, tok, qs, frames = _inputs(ws)
    full = finetune_teacher(model, tok, qs, frames, output_dir=str(tmp_path / "full"), **kw)
    assert full.completed and full.global_step == 12
    want = _state(model)

    out = tmp_path / "killed"
    m1, *_ = _inputs(ws)
    part = finetune_teacher(m1, tok, qs, frames, output_dir=str(out), checkpoint_every=4, max_steps=7, **kw)
    assert not part.completed and part.global_step == 7
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step-00000004", "step-00000007"]
    # a kill after step 4's checkpoint (mid-epoch, mid-pool): the later checkpoint never happened
    import shutil
    shutil.rmtree(out / "checkpoints" / "step-00000007")
    m2, *_ = _inputs(ws)
    resumed = finetune_teacher(m2, tok, qs, frames, output_dir=str(out), checkpoint_every=4, **kw)
    assert resumed.completed and resumed.global_step == 12
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6)
    got = m2.state_dict()
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)

    saved = out / FINETUNED_NAME
    assert saved.is_file() and not (out / (FINETUNED_NAME + ".tmp")).exists()
    loaded = build_albef(ws["config"], checkpoint=saved)  # strict
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, got[k], rtol=0, atol=0, msg=k)


def _parser():
    parser = argparse.ArgumentParser(prog="sparc")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_end_to_end(ws, tmp_path, capsys):
    out = tmp_path / "cli"
    args = _parser().parse_args([
        "teacher-finetune", "--questions", str(ws["questions"]), "--frames", str(ws["frames"]), "--num-frames", "2",
        "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]), "--checkpoint", str(ws["checkpoint"]),
        "--output-dir", str(out), "--epochs", "1", "--batch-size", "6", "--num-workers", "1", "--no-progress"])
    assert args.func(args) == 0
    assert "weights in" in capsys.readouterr().out
    build_albef(ws["config"], checkpoint=out / FINETUNED_NAME)

    args = _parser().parse_args([
        "teacher-finetune", "--questions", str(ws["questions"]), "--frames", str(tmp_path / "nowhere"),
        "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]), "--output-dir", str(out)])
    assert args.func(args) == 2
    assert "sparc teacher-finetune: error:" in capsys.readouterr().err


def test_bad_input_names_qid_and_field(ws, tmp_path):
    model, tok, qs, frames = _inputs(ws)
    bad = VideoQuestion("oe_7", qs[0].video, "what is it ?", None, "  ")
    with pytest.raises(ValueError, match=r"oe_7.*field: answer"):
        finetune_teacher(model, tok, [qs[0], bad], frames, progress=False)
    empty = ws["frames"].parent / "frames_empty"
    (empty / qs[0].video).mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"{qs[0].video}.*{qs[0].qid}.*field: video"):
        finetune_teacher(model, tok, [qs[0]], FrameSource(empty, 2), progress=False)
    with pytest.raises(FileNotFoundError, match=rf"{qs[0].qid}.*field: video"):
        finetune_teacher(model, tok, [qs[0]], FrameSource(tmp_path, 2), progress=False)


def test_two_processes_train_like_one_with_the_global_batch(ws, tmp_path):
    """torchrun with 2 CPU processes x 4 pairs = 1 process x 8 pairs (dropout off so both compute the
    same thing): the global batch is split between the processes and the gradients averaged over it.
    Plain SGD, so the weights move by lr x the gradient: a summed instead of averaged gradient would
    double the step (Adam would hide it, being scale-free), and a float32 rounding difference in the
    reduction stays a rounding difference (under Adam a near-zero component's sign can flip)."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from sparc.cli import main

    config = json.loads(ws["config"].read_text())
    config["bert_config"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (tmp_path / "nodrop.json").write_text(json.dumps(config))
    common = ["teacher-finetune", "--questions", str(ws["questions"]), "--frames", str(ws["frames"]), "--num-frames",
              "4", "--tokenizer", str(ws["vocab"]), "--teacher-config", str(tmp_path / "nodrop.json"), "--checkpoint",
              str(ws["checkpoint"]), "--epochs", "2", "--num-workers", "0", "--no-progress", "--optimizer", "sgd",
              "--lr", "0.05"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    from helpers import free_port  # tests/helpers.py

    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "sparc"]
    subprocess.run(launch + common + ["--batch-size", "4", "--output-dir", str(tmp_path / "two")], env=env, check=True,
                   timeout=300, capture_output=True)
    assert main(common + ["--batch-size", "8", "--output-dir", str(tmp_path / "one")]) == 0
    one = load_file(str(tmp_path / "one" / "albef-finetuned.safetensors"))
    two = load_file(str(tmp_path / "two" / "albef-finetuned.safetensors"))
    moved = load_file(str(ws["checkpoint"]))
    step = max((one[k] - moved[k]).abs().max().item() for k in one)
    diff = max((one[k] - two[k]).abs().max().item() for k in one)
    print(f"largest move {step:.3g}, largest 1-vs-2-process difference {diff:.3g}")
    assert step > 1e-3                                                        # training did change them
    # float32: the two reductions round differently, ~1e-7 relative per step; 1e-4 of the move is ample
    assert diff < 1e-4 * step
