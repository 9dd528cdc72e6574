"""The benchmark recipes end to end on generated data in the released layouts (``--smoke``): they
train, evaluate with the official metric, write results.json, resume exactly after a stop, and run
under ``accelerate launch`` on two CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
KEYS = ["Why", "How", "Bef&Aft", "When", "Cnt", "Loc", "Other", "Acc_C", "Acc_T", "Acc_D", "Acc"]


def run(*args, env=None):
    subprocess.run([sys.executable, str(RECIPES / "nextqa.py"), *args], check=True, timeout=300,
                   env={**os.environ, **(env or {})}, capture_output=True)


def test_nextqa_smoke_writes_the_official_metrics(tmp_path):
    run("--smoke", "--output", str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and results["techniques"] == "sparc+tgm"
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(predictions) == 24 and all(set(v) == {"prediction", "answer"} for v in predictions.values())
    assert results["global_step"] == 6                                  # 2 epochs x 24 questions / batch 8


def test_nextqa_vgt_smoke(tmp_path):
    run("--smoke", "--backbone", "vgt", "--output", str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and results["backbone"] == "vgt"
    assert results["config"]["lr"] == 1e-5                            # SpARC Table 6's VGT row


def test_nextqa_resumes_where_it_stopped(tmp_path):
    run("--smoke", "--output", str(tmp_path / "whole"))
    run("--smoke", "--output", str(tmp_path / "stopped"), "--max-steps", "3")   # killed after epoch 1's checkpoint
    run("--smoke", "--output", str(tmp_path / "stopped"))
    whole, resumed = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("whole", "stopped"))
    assert resumed == whole
    assert json.loads((tmp_path / "stopped" / "results.json").read_text())["global_step"] == 6


def test_nextqa_under_accelerate_on_two_cpu_processes(tmp_path):
    from helpers import free_port  # tests/helpers.py

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--main_process_port", str(free_port()), str(RECIPES / "nextqa.py"), "--smoke", "--output", str(tmp_path)]
    subprocess.run(launch, check=True, timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and len(json.loads((tmp_path / "predictions.json").read_text())) == 24
