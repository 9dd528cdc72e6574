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
    from helpers import run_checked  # tests/helpers.py

    run_checked([sys.executable, str(RECIPES / "nextqa.py"), *args], timeout=300, env={**os.environ, **(env or {})})


def test_nextqa_smoke_writes_the_official_metrics(tmp_path):
    run("--smoke", "--output", str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and results["techniques"] == "sparc+tgm"
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert len(predictions) == 24 and all(set(v) == {"prediction", "answer"} for v in predictions.values())
    assert results["global_step"] == 6                                  # 2 epochs x 24 questions / batch 8
    # the smoke's NExT-GQA spans cover its 15 causal and temporal questions: the model's frames are scored
    grounding = results["grounding"]
    assert grounding["questions"] == 15 and {r["group"] for r in grounding["rows"]} == {"(all)", "CW", "CH", "TN", "TC"}
    assert all(0 <= r["mIoP"] <= 100 and 0 <= r["IoU@0.5"] <= 100 for r in grounding["rows"])


def test_nextqa_vgt_smoke(tmp_path):
    run("--smoke", "--backbone", "vgt", "--output", str(tmp_path / "run"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and results["backbone"] == "vgt"
    assert results["config"]["lr"] == 1e-5                            # SpARC Table 6's VGT row
    assert results["grounding"]["questions"] == 15                    # one-frame views over VGT's clips


def test_nextqa_resumes_where_it_stopped(tmp_path):
    run("--smoke", "--output", str(tmp_path / "whole"))
    run("--smoke", "--output", str(tmp_path / "stopped"), "--max-steps", "3")   # killed after epoch 1's checkpoint
    run("--smoke", "--output", str(tmp_path / "stopped"))
    whole, resumed = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("whole", "stopped"))
    assert resumed == whole
    assert json.loads((tmp_path / "stopped" / "results.json").read_text())["global_step"] == 6


def test_nextqa_under_accelerate_on_two_cpu_processes(tmp_path):
    from helpers import free_port, run_checked  # tests/helpers.py

    # accelerate launch --cpu always starts ONE process (accelerate 1.16: its simple launcher); two CPU
    # processes are the multi-process launcher with ACCELERATE_USE_CPU=1, which Accelerator reads as MULTI_CPU.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              str(RECIPES / "nextqa.py"), "--smoke", "--output", str(tmp_path)]
    run_checked(launch, timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2
    assert list(results["metrics"]) == KEYS and len(json.loads((tmp_path / "predictions.json").read_text())) == 24
    assert results["global_step"] == 4                                  # 2 epochs x ceil(12 questions per process / 8)


def test_atp_hard_scores_a_nextqa_run_on_its_subset_in_each_file_form(tmp_path):
    subprocess.run([sys.executable, str(RECIPES / "atp_hard.py"), "--smoke", "--run", str(tmp_path)], check=True,
                   timeout=300, capture_output=True)
    report = json.loads((tmp_path / "atp_hard.json").read_text())
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    lines = (tmp_path / "smoke-data" / "nextqa" / "val.csv").read_text().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    chosen = [i for i, r in enumerate(rows) if r["type"][0] in "CT"]        # the smoke's subset: C and T rows
    assert report["questions"] == len(chosen) == 15
    right = [predictions[f"{rows[i]['video']}_{rows[i]['qid']}"] for i in chosen]
    assert abs(report["metrics"]["Acc"] - 100.0 * sum(p["prediction"] == p["answer"] for p in right) / 15) < 1e-9
    causal = [p for i, p in zip(chosen, right) if rows[i]["type"][0] == "C"]
    assert abs(report["metrics"]["Acc_C"] - 100.0 * sum(p["prediction"] == p["answer"] for p in causal) / len(causal)) < 1e-9
    assert "Acc_D" not in report["metrics"]                                 # no descriptive question in the subset
    # the same subset as video_qid keys and as a CSV of val.csv's rows gives the same numbers
    (tmp_path / "keys.txt").write_text("".join(f"{rows[i]['video']}_{rows[i]['qid']}\n" for i in chosen))
    (tmp_path / "subset.csv").write_text("\n".join([lines[0]] + [lines[i + 1] for i in chosen]) + "\n")
    for name in ("keys.txt", "subset.csv"):
        out = tmp_path / f"{name}.json"
        subprocess.run([sys.executable, str(RECIPES / "atp_hard.py"), "--run", str(tmp_path), "--data",
                        str(tmp_path / "smoke-data"), "--subset", str(tmp_path / name), "--output", str(out)],
                       check=True, timeout=120, capture_output=True)
        assert json.loads(out.read_text())["metrics"] == report["metrics"]


def test_atp_hard_needs_a_finished_run(tmp_path):
    (tmp_path / "subset.txt").write_text("0\n")
    done = subprocess.run([sys.executable, str(RECIPES / "atp_hard.py"), "--run", str(tmp_path), "--data", str(tmp_path),
                           "--subset", str(tmp_path / "subset.txt")], timeout=120, capture_output=True, text=True)
    assert done.returncode == 2 and "predictions.json does not exist" in done.stderr
