"""recipes/agqa.py end to end on generated data in the released layouts (--smoke), its answer set (the
prior store's, checked against SpARC's rule), the AGQA batches (features in the AGQA baselines' HME
layout, word ids) and the errors that name the file, the question and the field; extract-priors'
reading of the balanced files."""

import json
import os
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))
import agqa  # noqa: E402  (recipes/agqa.py: its smoke-data writer)
from helpers import run_checked  # noqa: E402  (tests/helpers.py)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}   # one thread per process: 2 shared cores


def run(*args, launcher=(sys.executable,), env=None):
    run_checked([*launcher, str(RECIPES / "agqa.py"), "--smoke", *args], timeout=300, env={**ENV, **(env or {})})


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("agqa") / "whole"
    run("--output", str(out))
    return out


def test_smoke_writes_agqa_accuracy_on_test(whole):
    from sparc.metrics import agqa_accuracy

    results = json.loads((whole / "results.json").read_text())
    assert set(results["metrics"]) == {"binary", "open", "total"} and results["techniques"] == "sparc"
    assert results["answer_set"] == {"size": 8, "rule": {"rule": "sparc", "min_count": 2}, "from": "prior store"}
    assert results["train_questions_outside_answer_set"] == 1           # 'lamp' occurs once in train
    assert results["global_step"] == 2 * -(-results["train_questions"] // 8)
    predictions = json.loads((whole / "predictions.json").read_text())
    assert len(predictions) == 16 and predictions["5015"]["answer"] == "doorknob"   # never in train: always wrong
    test_file = whole / "smoke-data" / "AGQA_balanced" / "test_balanced.txt"
    assert agqa_accuracy(test_file, predictions) == pytest.approx(results["metrics"])
    assert json.loads((whole / "answers.json").read_text()) == json.loads(
        (whole / "smoke-data" / "priors-train" / "store.json").read_text())["metadata"]["answers"]


def test_resumes_where_it_stopped_also_under_accelerate_launch(whole, tmp_path):
    from helpers import free_port  # tests/helpers.py

    # stopped after epoch 1's checkpoint, under accelerate launch; resumed by plain python
    run("--output", str(tmp_path), "--max-steps", "5", launcher=(
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--main_process_port",
        str(free_port())))
    assert json.loads((tmp_path / "results.json").read_text())["global_step"] == 5
    run("--output", str(tmp_path))
    assert json.loads((tmp_path / "predictions.json").read_text()) == json.loads((whole / "predictions.json").read_text())
    assert json.loads((tmp_path / "results.json").read_text())["global_step"] == 10


def test_two_processes(tmp_path):
    from helpers import free_port

    # accelerate's CPU launcher starts one process; torchrun starts two (README: multi-process on CPUs)
    run("--output", str(tmp_path), launcher=(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                             "--master_port", str(free_port())), env={"ACCELERATE_USE_CPU": "1"})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["global_step"] == 2 * -(-results["train_questions"] // 16)   # half the batches per process
    assert len(json.loads((tmp_path / "predictions.json").read_text())) == 16
    assert results["eval_history"][-1]["num_examples"] == results["validation"]["questions"]


# ---- the answer set --------------------------------------------------------------------------------


def store(tmp_path, answers, name="store"):
    from sparc.priors import PriorStore

    probs = np.full((1, 8, len(answers)), 1.0 / len(answers), dtype=np.float32)
    return PriorStore.from_arrays(tmp_path / name, ["q"], probs, metadata={"answers": answers})


def test_answer_set_is_the_stores_in_its_order_checked_against_the_rule(tmp_path):
    from sparc.data.answer_sets import answer_set_from_config, store_answer_set

    counts = Counter({"No": 5, "Yes": 5, "table": 3, "chair": 2, "lamp": 1})
    rule = {"rule": "sparc", "min_count": 2}
    wanted = answer_set_from_config(counts, rule)
    assert wanted == ["No", "Yes", "table", "chair"]                     # by count, ties a-z
    # with priors: exactly the store's list, in the store's order (prior [t, c] is answer c of it)
    assert store_answer_set(store(tmp_path, ["chair", "Yes", "No", "table"]), counts, expected=wanted) == [
        "chair", "Yes", "No", "table"]
    with pytest.raises(ValueError, match=r"not the configured answer set.*'lamp' is in the store only.*"
                                         r"field: metadata.answers"):
        store_answer_set(store(tmp_path, ["No", "Yes", "table", "chair", "lamp"], "more"), counts, expected=wanted)
    with pytest.raises(ValueError, match="'chair' is missing from the store"):
        store_answer_set(store(tmp_path, ["No", "Yes", "table"], "fewer"), counts, expected=wanted)
    from sparc.priors import PriorStore

    plain = PriorStore.from_arrays(tmp_path / "mc", ["q"], np.full((1, 8, 4), 0.25, dtype=np.float32))
    with pytest.raises(ValueError, match="records no answer list.*--answers-from"):
        store_answer_set(plain, counts, expected=wanted)


def test_vocabulary_rule_and_bad_rules(tmp_path):
    from sparc.data.answer_sets import answer_set_from_config

    (tmp_path / "vocab.json").write_text(json.dumps({"table": 1, "No": 0, "Yes": 2}))   # MIST's {answer: id}
    vocab = {"rule": "vocab", "vocab": str(tmp_path / "vocab.json")}
    assert answer_set_from_config(Counter(), vocab) == ["No", "table", "Yes"]
    (tmp_path / "bad.json").write_text(json.dumps({"No": 0, "Yes": 2}))
    with pytest.raises(ValueError, match="indices must be 0..1"):
        answer_set_from_config(Counter(), {**vocab, "vocab": str(tmp_path / "bad.json")})
    with pytest.raises(ValueError, match="field: answer_set"):
        answer_set_from_config(Counter({"No": 3}), {"top": 171})
    with pytest.raises(ValueError, match="unknown parameter 'top'"):
        answer_set_from_config(Counter({"No": 3}), {"rule": "top", "top": 171})
    with pytest.raises(ValueError, match="no train answer occurs 2 times"):
        answer_set_from_config(Counter({"No": 1}), {"rule": "sparc", "min_count": 2})


# ---- the batches -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return agqa.write_smoke_data(tmp_path_factory.mktemp("agqa-data"))


def features(data, table=None, str2num=None, answers=("Yes", "No", "table"), appearance=None, motion=None):
    from sparc.data.agqa import read_agqa_table
    from sparc.data.agqa_features import AGQAFeatures, read_str2num
    from sparc.data.words import WordVocabulary

    path = data / "AGQA_balanced" / "train_balanced.txt"
    table = read_agqa_table(path) if table is None else table
    vocab = WordVocabulary.build(table["question"])
    return AGQAFeatures(table, appearance or data / "TGIF_RESNET_pool5.hdf5", motion or data / "TGIF_RESNEXT.hdf5",
                        read_str2num(data / "strID2numID.json") if str2num is None else str2num, vocab, answers,
                        num_frames=8, max_words=6, annotations=path)


def test_item_by_hand(data):
    from sparc.data.agqa_features import collate_agqa
    from sparc.data.frames import uniform_indices

    ds = features(data)
    item, record = ds[2], ds.table[2]
    row = json.loads((data / "strID2numID.json").read_text())[record["video_id"]]
    positions = uniform_indices(11, 8)                                  # 11 feature frames per video
    assert positions == [0, 2, 3, 4, 6, 7, 8, 10]
    with h5py.File(data / "TGIF_RESNET_pool5.hdf5") as a, h5py.File(data / "TGIF_RESNEXT.hdf5") as m:
        want = np.concatenate([a["resnet_features"][row][positions], m["resnet_features"][row][positions]], axis=1)
    assert item["vid_feats"].shape == (8, 4096) and np.array_equal(item["vid_feats"].numpy(), want)
    words = ds.vocabulary.encode(record["question"], 6)[0]
    assert item["qns"].tolist() == words.tolist() and int(item["qns_lengths"]) == 6      # cut at max_words
    assert record["answer"] == "table" and item["answer"] == 2          # its class in ("Yes", "No", "table")
    assert ds[6]["answer"] == -1                                        # 'chair' is outside this answer set
    batch = collate_agqa([ds[0], ds[1]])
    assert batch["qns"].shape == (2, 6) and batch["qns_lengths"].tolist() == [6, 6] and batch["index"].tolist() == [0, 1]


def test_feature_errors_name_file_question_and_field(data, tmp_path):
    from sparc.data.agqa_features import read_str2num

    mapping = read_str2num(data / "strID2numID.json")
    first = json.loads((data / "AGQA_balanced" / "train_balanced.txt").read_text())["1000"]["video_id"]
    with pytest.raises(ValueError, match=rf"train_balanced.txt: question 1000: video '{first}' is not in "
                                         r"strID2numID.json \(field: video_id\)"):
        features(data, str2num={k: v for k, v in mapping.items() if k != first})
    with pytest.raises(ValueError, match=r"question 1000: video .* is number 99 .*beyond the 8 videos"):
        features(data, str2num={**mapping, first: 99})
    with h5py.File(tmp_path / "short.hdf5", "w") as f:
        f["resnet_features"] = np.zeros((8, 5, 2048), dtype=np.float32)
    with pytest.raises(ValueError, match="has 11 frames per video but .*short.hdf5 has 5"):
        features(data, motion=tmp_path / "short.hdf5")
    with h5py.File(tmp_path / "flat.hdf5", "w") as f:
        f["resnet_features"] = np.zeros((8, 2048), dtype=np.float32)
    with pytest.raises(ValueError, match=r"flat.hdf5: dataset 'resnet_features' has shape \(8, 2048\).*field: resnet_features"):
        features(data, appearance=tmp_path / "flat.hdf5")
    (tmp_path / "map.json").write_text(json.dumps({"YSKX3": "x"}))
    with pytest.raises(ValueError, match=r"map.json: video 'YSKX3' maps to 'x'.*field: YSKX3"):
        read_str2num(tmp_path / "map.json")


def test_extract_priors_reads_the_balanced_file_one_question_at_a_time(data, tmp_path):
    from sparc.data.questions import open_answer_set, read_questions

    path = data / "AGQA_balanced" / "train_balanced.txt"
    questions = read_questions(path)
    records = json.loads(path.read_text())
    assert [q.qid for q in questions] == list(records) and len(questions) == 40
    q = questions[3]
    assert (q.video, q.question, q.answer, q.type, q.candidates) == (
        records[q.qid]["video_id"], records[q.qid]["question"], records[q.qid]["answer"], records[q.qid]["ans_type"], None)
    answers = list(open_answer_set(questions))                          # what --answers-from records
    assert answers == json.loads((data / "priors-train" / "store.json").read_text())["metadata"]["answers"]
    bad = dict(records)
    bad["1003"] = {k: v for k, v in records["1003"].items() if k != "video_id"}
    (tmp_path / "train_balanced.txt").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"qid '1003': missing or empty field 'video_id'"):
        read_questions(tmp_path / "train_balanced.txt")
