"""recipes/tgifqa.py: memory-attention on TGIF-QA's four tasks, end to end on generated data in the
released layout (``--smoke``), and its batch builder (sparc.data.tgifqa_features) on real rows of the
released test files with generated features for their keys, checked by value."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sparc.data.frames import uniform_indices
from sparc.data.tgifqa import read_tgifqa_table
from sparc.data.tgifqa_features import (SEP, TGIFQAFeatures, candidate_ids, collate_tgifqa, frame_features,
                                        tgifqa_vocabulary, validation_split)
from sparc.data.words import words_of
from sparc.metrics import tgifqa_metrics

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: the smoke models are tiny: one thread each keeps 2 shared cores from spinning on thread sync
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
FIXTURES = Path(__file__).parent / "fixtures" / "annotations" / "tgifqa"
METRICS = {"action": ["accuracy"], "transition": ["accuracy"], "count": ["mse"],
           "frameqa": ["accuracy", "object", "number", "color", "location"]}


def recipe(*args, check=True):
    return subprocess.run([sys.executable, str(RECIPES / "tgifqa.py"), *args], check=check, timeout=300,
                          capture_output=True, text=True, env=ONE_THREAD)


def in_process(argv):
    sys.path.insert(0, str(RECIPES))
    try:
        import tgifqa
        return tgifqa.main(argv)
    finally:
        sys.path.remove(str(RECIPES))


@pytest.mark.parametrize("task", ["action", "transition", "frameqa"])
def test_smoke_writes_the_official_metrics_keyed_by_vid_id(tmp_path, task):
    out = tmp_path / "run"
    recipe("--smoke", "--task", task, "--output", str(out))
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == METRICS[task] and results["global_step"] == 6   # 2 epochs x ceil(21 / 8)
    assert results["techniques"] == ("sparc" if task == "frameqa" else "sparc+tgm")   # the task's default
    assert results["splits"]["val"] == 3 and results["config"]["lr"] == 1e-3
    test_file = out / "smoke-data" / "dataset" / f"Test_{task}_question.csv"
    predictions = json.loads((out / "predictions.json").read_text())
    assert list(predictions) == read_tgifqa_table(test_file)["qid"]                    # keyed by vid_id
    # the file is in the layout the official metric reads, and gives the reported numbers
    assert tgifqa_metrics(test_file, out / "predictions.json") == pytest.approx(results["metrics"])
    if task == "frameqa":
        from sparc.priors import PriorStore

        answers = json.loads((out / "answers.json").read_text())
        assert answers == PriorStore.open(out / "smoke-data" / "priors" / "frameqa").metadata["answers"]
        assert all(p["prediction"] in answers for p in predictions.values())
        assert results["answer_set"]["test_out_of_set"] == 2                         # thing50001, thing50010
        assert all(p["prediction"] != p["answer"] for p in predictions.values() if p["answer"] not in answers)
        assert results["splits"]["train_questions_dropped"] > 0                    # once-only answers left out


def test_count_smoke_and_a_stopped_run_resumes_to_the_same_predictions(tmp_path):
    recipe("--smoke", "--task", "count", "--output", str(tmp_path / "whole"))
    recipe("--smoke", "--task", "count", "--output", str(tmp_path / "stopped"), "--max-steps", "4")
    assert (tmp_path / "stopped" / "checkpoints" / "step-00000003").is_dir()        # epoch 1's, then stopped
    recipe("--smoke", "--task", "count", "--output", str(tmp_path / "stopped"))
    whole, resumed = (json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("whole", "stopped"))
    assert resumed == whole                                    # raw regressed counts, float for float
    results = json.loads((tmp_path / "stopped" / "results.json").read_text())
    assert results["global_step"] == 6 and results["techniques"] == "plain" and list(results["metrics"]) == ["mse"]
    test_file = tmp_path / "whole" / "smoke-data" / "dataset" / "Test_count_question.csv"
    assert tgifqa_metrics(test_file, tmp_path / "whole" / "predictions.json")["mse"] == pytest.approx(results["metrics"]["mse"])
    assert all(isinstance(p["prediction"], float) and p["answer"] >= 1 for p in whole.values())   # 0 scored as 1


def test_count_with_sparc_techniques_fails_at_start(capsys):
    with pytest.raises(SystemExit):
        in_process(["--smoke", "--task", "count", "--techniques", "sparc"])
    assert "TGIF-QA Count is a regression" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        in_process(["--smoke", "--task", "frameqa", "--techniques", "sparc+tgm"])
    assert "ids cannot be interpolated" in capsys.readouterr().err


def test_frameqa_uses_the_stores_answer_list_and_a_foreign_list_fails(tmp_path):
    from sparc.priors import PriorStore

    sys.path.insert(0, str(RECIPES))
    try:
        import tgifqa
    finally:
        sys.path.remove(str(RECIPES))
    data = tgifqa.write_smoke_data(tmp_path / "data", frames=6)
    store = PriorStore.open(data / "priors" / "frameqa")
    qids, probs = list(store.qids), store.lookup(list(store.qids)).numpy()
    answers = store.metadata["answers"]
    # the same priors over another dataset's answers: one of them never occurs in Train_frameqa
    foreign = PriorStore.from_arrays(tmp_path / "foreign", qids, probs, metadata={"answers": answers[:-1] + ["zebra"]})
    with pytest.raises(ValueError, match=r"never occur in .*Train_frameqa_question.csv.*'zebra'.*\(field: metadata.answers\)"):
        in_process(["--task", "frameqa", "--data", str(data), "--priors", foreign.path, "--output", str(tmp_path / "r1")])
    unnamed = PriorStore.from_arrays(tmp_path / "unnamed", qids, probs)
    with pytest.raises(ValueError, match=r"records no answer list .*--answers-from"):
        in_process(["--task", "frameqa", "--data", str(data), "--priors", unnamed.path, "--output", str(tmp_path / "r2")])
    # over 4 frames, the run samples 6
    short = PriorStore.from_arrays(tmp_path / "short", qids, probs[:, :4] / probs[:, :4].sum(-1, keepdims=True),
                                   metadata={"answers": answers})
    with pytest.raises(ValueError, match=r"over 4 frames but the run samples 6"):
        in_process(["--task", "frameqa", "--data", str(data), "--priors", short.path, "--output", str(tmp_path / "r3"),
                    "--epochs", "1", "--batch-size", "8"] + ["--config", str(_smoke_config(tmp_path))])
    # the store's list is taken as it is, order included (reversed here)
    sys.path.insert(0, str(RECIPES))
    try:
        from memory_attention import run_answer_set
    finally:
        sys.path.remove(str(RECIPES))
    train = read_tgifqa_table(data / "dataset" / "Train_frameqa_question.csv")
    reordered = PriorStore.from_arrays(tmp_path / "reordered", qids, probs[:, :, ::-1].copy(),
                                       metadata={"answers": answers[::-1]})
    got, where = run_answer_set(reordered, {"answer_set": {"rule": "all"}}, train["answer"], "Train")
    assert got == answers[::-1] and "prior store" in where
    got, where = run_answer_set(None, {"answer_set": {"rule": "all"}}, train["answer"], "Train")
    assert sorted(got) == sorted(set(train["answer"])) and "rule" in where      # without a store: every train answer


def _smoke_config(tmp_path):
    config = json.loads((RECIPES / "tgifqa.json").read_text())
    config.update(frames=6)
    config["model"].update(hidden=8, word_dim=8, video_slots=3, text_slots=2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_frameqa_under_accelerate_on_two_cpu_processes(tmp_path):
    from helpers import free_port, run_checked

    # two CPU processes: accelerate's multi-process launcher with ACCELERATE_USE_CPU=1 (--cpu starts one)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
              str(RECIPES / "tgifqa.py"), "--task", "frameqa", "--smoke", "--output", str(tmp_path)]
    run_checked(launch, timeout=300, env={**ONE_THREAD, "ACCELERATE_USE_CPU": "1"})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2 and results["global_step"] == 4    # 2 epochs x ceil(18 / 2 processes / 8)
    assert list(results["metrics"]) == METRICS["frameqa"] and len(json.loads((tmp_path / "predictions.json").read_text())) == 12
    test_file = tmp_path / "smoke-data" / "dataset" / "Test_frameqa_question.csv"
    assert tgifqa_metrics(test_file, tmp_path / "predictions.json") == pytest.approx(results["metrics"])   # all 12, once


# ---- the batch builder on real rows ----------------------------------------------------------------


def _features(path_res, path_c3d, keys, shapes):
    """Generated features for ``keys``: ``shapes[k] = (resnet frames, c3d frames or 0 for a 1-D entry)``."""
    g = np.random.default_rng(0)
    with h5py.File(path_res, "w") as res, h5py.File(path_c3d, "w") as c3d:
        for k in keys:
            n, m = shapes[k]
            res[k] = g.standard_normal((n, 2048), dtype=np.float32)
            c3d[k] = g.standard_normal(4096, dtype=np.float32) if m == 0 else g.standard_normal((m, 4096), dtype=np.float32)


def _real(task, rows):
    table = read_tgifqa_table(FIXTURES / f"Test_{task}_question.csv")
    return table, [table[r] for r in rows]


def test_real_action_rows_give_the_released_keys_candidates_and_frames(tmp_path):
    table, rows = _real("action", [0, 1, 2])
    keys = [r["key"] for r in rows]
    assert keys[:2] == ["26", "52"]
    shapes = {keys[0]: (40, 41), keys[1]: (3, 3), keys[2]: (20, 0)}   # C3D one longer; shorter than T; 1-D C3D
    res, c3d = tmp_path / "TGIF_RESNET_pool5.hdf5", tmp_path / "TGIF_C3D_fc6.hdf5"
    _features(res, c3d, keys, shapes)
    vocabulary = tgifqa_vocabulary(table)
    data = TGIFQAFeatures(FIXTURES / "Test_action_question.csv", "action", res, c3d, vocabulary, num_frames=8,
                          rows=[0, 1, 2])
    batch = collate_tgifqa([data[i] for i in range(3)])
    assert batch["qid"] == ["ACTION4_26", "ACTION12_52", f"{rows[2]['qid']}_{keys[2]}"]   # extract-priors' key
    assert batch["vid_id"][:2] == ["ACTION4", "ACTION12"] and batch["answer"].tolist()[:2] == [4, 3]
    assert batch["vid_feats"].shape == (3, 8, 6144) and batch["vid_lengths"].tolist() == [8, 8, 8]
    assert batch["qas"].shape == (3, 5, 35) and batch["index"].tolist() == [0, 1, 2]
    with h5py.File(res) as r, h5py.File(c3d) as c:
        a, m = r[keys[0]][()], c[keys[0]][()]
        picked = uniform_indices(40, 8)                            # 40 = the shorter of 40 and 41 frames
        assert torch.equal(batch["vid_feats"][0], torch.from_numpy(np.concatenate([a[picked], m[picked]], axis=1)))
        a, m = r[keys[1]][()], c[keys[1]][()]
        assert torch.equal(batch["vid_feats"][1], torch.from_numpy(np.concatenate([a, m], axis=1)[uniform_indices(3, 8)]))
        a, m = r[keys[2]][()], c[keys[2]][()]                      # a 1-D C3D entry is one frame: all 8 are frame 0
        assert torch.equal(batch["vid_feats"][2], torch.from_numpy(np.concatenate([a[:1], m[None]], axis=1)).expand(8, -1))
    # candidate 4 of ACTION4 is "question <sep> flap wings"
    words = [vocabulary.words[i] for i in batch["qas"][0, 4, :batch["qas_lengths"][0, 4]].tolist()]
    assert words == words_of("What does the butterfly do 10 or more than 10 times ?") + [SEP, "flap", "wings"]


def test_real_transition_count_and_frameqa_rows(tmp_path):
    res, c3d = tmp_path / "r.hdf5", tmp_path / "c.hdf5"
    transition, rows = _real("transition", [])
    quoted = transition["qid"].index("TRANS15831")
    count, count_rows = _real("count", [0, 2636])                     # COUNT12 (3) and COUNT22750 (0)
    frameqa, frame_rows = _real("frameqa", [0, 1])
    keys = {transition[quoted]["key"]} | {r["key"] for r in count_rows + frame_rows}
    _features(res, c3d, keys, {k: (16, 16) for k in keys})
    data = TGIFQAFeatures(FIXTURES / "Test_transition_question.csv", "transition", res, c3d,
                          tgifqa_vocabulary(transition), num_frames=4, rows=[quoted])
    item = data[0]
    vocabulary = data.vocabulary
    last = [vocabulary.words[i] for i in item["qas"][4, :item["qas_lengths"][4]].tolist()]
    assert last[-3:] == [SEP, "respond", "no"] and item["qid"] == "TRANS15831_26948"   # the quotes are CSV's, gone
    data = TGIFQAFeatures(FIXTURES / "Test_count_question.csv", "count", res, c3d, tgifqa_vocabulary(count),
                          num_frames=4, rows=[0, 2636])
    assert [data[i]["answer"] for i in range(2)] == [3, 1] and data[1]["vid_id"] == "COUNT22750"   # 0 -> 1
    assert data[0]["qns"].shape == (35,) and int(data[0]["qns_lengths"]) == len(words_of(count[0]["question"]))
    answers = ["machine", "dog"]                                        # FRAMEQA1159's cookie is not in it
    data = TGIFQAFeatures(FIXTURES / "Test_frameqa_question.csv", "frameqa", res, c3d, tgifqa_vocabulary(frameqa),
                          num_frames=4, answers=answers, rows=[0, 1])
    assert [data[i]["answer"] for i in range(2)] == [-1, 0] and [data[i]["type"] for i in range(2)] == [0, 3]
    kept = TGIFQAFeatures(FIXTURES / "Test_frameqa_question.csv", "frameqa", res, c3d, data.vocabulary, num_frames=4,
                          answers=answers, rows=[0, 1], drop_out_of_set=True)
    assert len(kept) == 1 and kept[0]["vid_id"] == "FRAMEQA9405" and kept[0]["index"] == 0


def test_a_missing_feature_key_names_file_line_qid_and_field(tmp_path):
    res, c3d = tmp_path / "TGIF_RESNET_pool5.hdf5", tmp_path / "TGIF_C3D_fc6.hdf5"
    table, rows = _real("action", [0, 1])
    _features(res, c3d, ["26", "52"], {"26": (5, 5), "52": (5, 5)})
    with h5py.File(c3d, "a") as f:
        del f["52"]
    with pytest.raises(ValueError, match=r"Test_action_question.csv, line 3 \(qid ACTION12\): key 52 is not in "
                                         r".*TGIF_C3D_fc6.hdf5 \(field: key\)"):
        TGIFQAFeatures(FIXTURES / "Test_action_question.csv", "action", res, c3d, tgifqa_vocabulary(table), 4, rows=[0, 1])
    with h5py.File(res, "a") as f:                                     # a feature of the wrong width, found on read
        del f["26"]
        f["26"] = np.zeros((5, 1024), dtype=np.float32)
    with h5py.File(c3d, "a") as f:
        f["52"] = np.zeros((5, 4096), dtype=np.float32)
    data = TGIFQAFeatures(FIXTURES / "Test_action_question.csv", "action", res, c3d, tgifqa_vocabulary(table), 4, rows=[0, 1])
    with pytest.raises(ValueError, match=r"line 2 \(qid ACTION4\), key 26: TGIF_RESNET_pool5.hdf5 holds 5 frames of width 1024"):
        data[0]


def test_frame_features_validation_split_and_candidate_text():
    a, m = np.ones((7, 2048), np.float32), np.zeros((9, 4096), np.float32)
    assert frame_features(a, m, "x").shape == (7, 6144) and frame_features(a[:3], m, "x").shape == (3, 6144)
    # HCRN's split: np.random.seed(666); permutation; the first int(0.9 n) train, the rest val
    np.random.seed(666)
    order = np.random.permutation(53)
    train, val = validation_split(53)
    assert val == sorted(order[47:].tolist()) and len(train) == 47 and sorted(train + val) == list(range(53))
    assert validation_split(53) == (train, val)                         # deterministic
    # a text too long for max_len keeps the whole answer and cuts the question
    vocabulary = tgifqa_vocabulary(read_tgifqa_table(FIXTURES / "Test_action_question.csv"))
    ids, n = candidate_ids(vocabulary, "what does the man do 3 times ?", "flap wings", 5)
    assert n == 5 and [vocabulary.words[i] for i in ids] == ["what", "does", SEP, "flap", "wings"]


def test_smoke_files_are_in_the_released_layout(tmp_path):
    sys.path.insert(0, str(RECIPES))
    try:
        import tgifqa
    finally:
        sys.path.remove(str(RECIPES))
    data = tgifqa.write_smoke_data(tmp_path, frames=6)
    for task, columns in tgifqa.HEADERS.items():
        for split in ("Train", "Test"):
            path = data / "dataset" / f"{split}_{task}_question.csv"
            with open(path, newline="") as f:
                assert next(csv.reader(f, delimiter="\t")) == columns
            assert len(read_tgifqa_table(path)) == (24 if split == "Train" else 12)
    assert '"respond ""no"""' in (data / "dataset" / "Train_transition_question.csv").read_text() or \
        '"respond ""no"""' in (data / "dataset" / "Test_transition_question.csv").read_text()
    # the batches' prior keys are the qids sparc extract-priors stores for the same file
    from sparc.data.questions import read_questions

    for task in ("action", "transition", "frameqa"):
        path = data / "dataset" / f"Train_{task}_question.csv"
        table = read_tgifqa_table(path)
        batches = TGIFQAFeatures(path, task, data / "features" / "TGIF_RESNET_pool5.hdf5",
                                 data / "features" / "TGIF_C3D_fc6.hdf5", tgifqa_vocabulary(table), 6,
                                 answers=sorted(set(table["answer"])) if task == "frameqa" else None)
        assert [batches[i]["qid"] for i in range(len(batches))] == [r.qid for r in read_questions(path)]
