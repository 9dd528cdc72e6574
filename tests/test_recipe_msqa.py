"""recipes/msvdqa.py and recipes/msrvttqa.py: memory-attention on MSVD-QA / MSRVTT-QA end to end on
generated data in Xu et al.'s layout (``--smoke``); the feature row of a video (MSVD ``video_id - 1``,
MSRVTT ``video_id``) checked by value; out-of-set answers (-1) kept out of training and counted wrong;
the answer set taken from the prior store; ``sparc extract-priors`` reading the released JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from sparc.data.answer_sets import store_answer_set, train_answer_set
from sparc.data.msqa import read_msqa_table
from sparc.data.msqa_features import MSQAFeatures, collate_msqa, feature_row, msqa_vocabulary
from sparc.metrics import msqa_accuracy

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
#: the smoke models are tiny: one thread each keeps 2 shared cores from spinning on thread sync
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
KEYS = ["overall", "what", "who", "how", "when", "where"]


def recipe(name, *args):
    return subprocess.run([sys.executable, str(RECIPES / f"{name}.py"), *args], check=True, timeout=300,
                          capture_output=True, text=True, env=ONE_THREAD)


def shared():
    sys.path.insert(0, str(RECIPES))
    try:
        import memory_attention
        return memory_attention
    finally:
        sys.path.remove(str(RECIPES))


@pytest.mark.parametrize("dataset", ["msvd", "msrvtt"])
def test_smoke_writes_the_official_accuracy_keyed_by_qid(tmp_path, dataset):
    glove = tmp_path / "glove.txt"                       # 8-d, the smoke's word_dim: two words of the questions
    glove.write_text("".join(f"{w} {' '.join(['0.5'] * 8)}\n" for w in ("what", "playing")))
    out = tmp_path / "run"
    recipe(f"{dataset}qa", "--smoke", "--output", str(out), "--glove", str(glove))
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == KEYS and list(results["val_metrics"]) == KEYS
    assert results["techniques"] == "sparc" and results["global_step"] == 6 and results["glove_words_found"] == 2
    data = out / "smoke-data"
    test = read_msqa_table(data / "test_qa.json")
    predictions = json.loads((out / "predictions.json").read_text())
    assert list(predictions) == test["qid"]                                          # str(id)
    assert msqa_accuracy(data / "test_qa.json", out / "predictions.json") == pytest.approx(results["metrics"])
    # the classes are the prior store's list, in its order
    from sparc.priors import PriorStore

    answers = json.loads((out / "answers.json").read_text())
    assert answers == PriorStore.open(data / "priors-train").metadata["answers"]
    # out of set: dropped from train, kept in test and wrong there
    train = read_msqa_table(data / "train_qa.json")
    dropped = sum(a not in answers for a in train["answer"])
    assert results["answer_set"]["train_questions_dropped"] == dropped >= 4                # at least the 4 once-only
    out_of_set = [q for q, a in zip(test["qid"], test["answer"]) if a not in answers]
    assert len(out_of_set) == results["answer_set"]["test_out_of_set"] >= 2
    assert all(predictions[q]["prediction"] in answers and predictions[q]["prediction"] != predictions[q]["answer"]
               for q in out_of_set)


def _features(path, videos=4):
    g = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        f["vgg"] = g.standard_normal((videos, 20, 4096), dtype=np.float32)
        f["c3d"] = g.standard_normal((videos, 20, 4096), dtype=np.float32)


def _questions(path, entries):
    path.write_text(json.dumps([{"answer": a, "id": i, "question": f"what is {a}?", "video_id": v}
                                for i, (v, a) in enumerate(entries)]))
    return path


def test_the_feature_row_is_video_id_minus_one_for_msvd_and_video_id_for_msrvtt(tmp_path):
    _features(tmp_path / "video_feature_20.h5")
    qa = _questions(tmp_path / "test_qa.json", [(2, "dog"), (3, "cat")])
    table = read_msqa_table(qa)
    vocabulary = msqa_vocabulary(table)
    with h5py.File(tmp_path / "video_feature_20.h5") as f:
        vgg, c3d = f["vgg"][()], f["c3d"][()]
    for dataset, row in (("msvd", 1), ("msrvtt", 2)):                 # video_id 2
        data = MSQAFeatures(qa, tmp_path / "video_feature_20.h5", dataset, vocabulary, ["dog", "cat"], num_frames=20)
        item = data[0]
        assert feature_row(dataset, 2) == row
        assert torch.equal(item["vid_feats"], torch.from_numpy(np.concatenate([vgg[row], c3d[row]], axis=1)))
        assert not torch.equal(item["vid_feats"], torch.from_numpy(np.concatenate([vgg[3 - row], c3d[3 - row]], axis=1)))
    # fewer frames: uniform_indices(20, 5) = 2, 6, 10, 14, 18
    data = MSQAFeatures(qa, tmp_path / "video_feature_20.h5", "msvd", vocabulary, ["dog"], num_frames=5)
    assert torch.equal(data[1]["vid_feats"], torch.from_numpy(np.concatenate([vgg[2], c3d[2]], axis=1)[[2, 6, 10, 14, 18]]))
    batch = collate_msqa([data[0], data[1]])
    assert batch["qid"] == ["0", "1"] and batch["answer"].tolist() == [0, -1] and batch["vid_feats"].shape == (2, 5, 8192)
    assert batch["qns"].shape == (2, 35) and batch["qns_lengths"].tolist() == [3, 3]


def test_a_video_without_a_feature_row_names_file_entry_qid_and_field(tmp_path):
    _features(tmp_path / "f.h5")
    vocabulary = msqa_vocabulary(read_msqa_table(_questions(tmp_path / "train_qa.json", [(1, "dog")])))
    qa = _questions(tmp_path / "val_qa.json", [(1, "dog"), (0, "cat")])
    with pytest.raises(ValueError, match=r"val_qa.json, entry 1 \(qid 1\): video_id 0 has no row in .*f.h5 "
                                         r"\(4 videos; msvd: row = video_id - 1\) \(MSVD-QA's video ids start at 1; "
                                         r"is this MSRVTT-QA\?\) \(field: video_id\)"):
        MSQAFeatures(qa, tmp_path / "f.h5", "msvd", vocabulary, ["dog"])
    qa = _questions(tmp_path / "val_qa.json", [(4, "dog")])              # MSRVTT: rows 0..3
    with pytest.raises(ValueError, match=r"entry 0 \(qid 0\): video_id 4 has no row .*msrvtt: row = video_id - 0"):
        MSQAFeatures(qa, tmp_path / "f.h5", "msrvtt", vocabulary, ["dog"])
    with h5py.File(tmp_path / "f.h5", "a") as f:
        del f["c3d"]
    with pytest.raises(ValueError, match=r"no dataset 'c3d' .*\(field: c3d\)"):
        MSQAFeatures(qa, tmp_path / "f.h5", "msrvtt", vocabulary, ["dog"])


def test_out_of_set_answers_never_reach_a_training_loss_and_count_wrong(tmp_path):
    import sparc
    from sparc.adapters import MemoryAdapter
    from sparc.train import evaluate

    _features(tmp_path / "f.h5")
    train_qa = _questions(tmp_path / "train_qa.json", [(1, "dog"), (2, "dog"), (3, "cat"), (4, "emu")])
    answers = train_answer_set(read_msqa_table(train_qa)["answer"], "top", size=2)      # dog, cat
    vocabulary = msqa_vocabulary(read_msqa_table(train_qa))
    train = MSQAFeatures(train_qa, tmp_path / "f.h5", "msvd", vocabulary, answers, num_frames=4, drop_out_of_set=True)
    assert answers == ["dog", "cat"] and len(train) == 3 and [train[i]["answer"] for i in range(3)] == [0, 0, 1]
    kept = MSQAFeatures(train_qa, tmp_path / "f.h5", "msvd", vocabulary, answers, num_frames=4)
    assert len(kept) == 4 and kept[3]["answer"] == -1                                   # val/test keep it: -1
    # were one to reach training, the wrapped model refuses it, naming the question
    model = shared().build_model({"hidden": 8, "word_dim": 8, "video_slots": 3, "text_slots": 2, "max_len_q": 35,
                                  "dropout": 0.0, "activation": "relu"}, "open_ended", 4096, 4096, vocabulary, 2, 0)[0]
    wrapped = sparc.wrap(model, MemoryAdapter("open_ended", num_answers=2))
    with pytest.raises(ValueError, match=r"qid 3: answer index -1 is out of range for 2 candidates"):
        wrapped(collate_msqa([kept[i] for i in range(4)]))

    # evaluation counts it wrong: predictions equal to the answer wherever it is in the set
    class Identity:
        @staticmethod
        def gather_for_metrics(x):
            return x

    class Oracle(torch.nn.Module):
        def forward(self, batch):
            logits = torch.nn.functional.one_hot(batch["answer"].clamp(min=0), 2).float()
            return type("Out", (), {"logits": logits})()

    metrics, predictions = evaluate(Identity(), Oracle(), [collate_msqa([kept[i] for i in range(4)])])
    assert metrics["accuracy"] == 0.75 and predictions.tolist() == [0, 0, 1, 0]


def test_extract_priors_reads_the_released_json(tmp_path):
    from sparc.data.questions import open_answer_set, read_questions

    msvd = tmp_path / "train_qa.json"
    msvd.write_text(json.dumps([{"answer": "someone", "id": 37348, "question": "who opened the box?", "video_id": 1451},
                                {"answer": "rifle", "id": 37349, "question": "What contains it?", "video_id": 1451},
                                {"answer": "someone", "id": 37350, "question": "who opens it?", "video_id": 7}]))
    records = read_questions(msvd)
    assert [(r.qid, r.video, r.type, r.answer) for r in records] == [
        ("37348", "vid1451", "who", "someone"), ("37349", "vid1451", "what", "rifle"), ("37350", "vid7", "who", "someone")]
    assert list(open_answer_set(records)) == train_answer_set([r.answer for r in records], "sparc") == ["someone"]
    msrvtt = tmp_path / "msrvtt_train_qa.json"
    msrvtt.write_text(json.dumps([{"answer": "man", "category_id": 3, "id": 0, "question": "who sings?", "video_id": 0}]))
    assert read_questions(msrvtt)[0].video == "video0" and read_questions(msrvtt)[0].qid == "0"
    # the batches' prior keys are the qids extract-priors stores
    with h5py.File(tmp_path / "f.h5", "w") as f:                    # video 1451's row exists, tiny streams
        f["vgg"] = f["c3d"] = np.zeros((1500, 2, 3), dtype=np.float32)
    data = MSQAFeatures(msvd, tmp_path / "f.h5", "msvd", msqa_vocabulary(read_msqa_table(msvd)), ["someone"], num_frames=2)
    assert [data[i]["qid"] for i in range(3)] == [r.qid for r in records]
    msvd.write_text(json.dumps([{"answer": "x", "id": 5, "question": "what?", "video_id": "v12"}]))
    with pytest.raises(ValueError, match=r"qid '5': video_id 'v12' is not a video number \(field: video_id\)"):
        read_questions(msvd)


def test_the_stores_answer_list_is_checked_against_the_store_and_train(tmp_path):
    from sparc.priors import PriorStore

    probs = np.full((2, 3, 2), 0.5, dtype=np.float32)
    train = ["dog", "cat", "dog"]
    store = PriorStore.from_arrays(tmp_path / "ok", ["0", "1"], probs, metadata={"answers": ["cat", "dog"]})
    assert store_answer_set(store, train) == ["cat", "dog"]                # its order, not train's frequency order
    bad = PriorStore.from_arrays(tmp_path / "long", ["0", "1"], probs, metadata={"answers": ["cat", "dog", "emu"]})
    with pytest.raises(ValueError, match=r"has 3 answers but its priors have 2 candidates \(field: metadata.answers\)"):
        store_answer_set(bad, train)
    bad = PriorStore.from_arrays(tmp_path / "other", ["0", "1"], probs, metadata={"answers": ["cat", "yak"]})
    with pytest.raises(ValueError, match=r"never occur in train_qa.json, e.g. 'yak'"):
        store_answer_set(bad, train, "train_qa.json")
    from sparc.recipe import check_store

    with pytest.raises(ValueError, match=r"no priors for 1 of the 3 training questions of train_qa.json, e.g. qid 2"):
        check_store(store, ["0", "1", "2"], 3, 2, "train_qa.json")
    with pytest.raises(ValueError, match=r"over 3 frames but the run samples 20"):
        check_store(store, ["0"], 20, 2, "train_qa.json")


def test_msvd_recipe_with_a_foreign_store_fails_before_training(tmp_path):
    from sparc.priors import PriorStore

    ma = shared()
    data = ma.write_msqa_smoke(tmp_path / "data", "msvd", frames=5)
    store = PriorStore.open(data / "priors-train")
    qids = list(store.qids)
    foreign = PriorStore.from_arrays(tmp_path / "foreign", qids, store.lookup(qids).numpy(),
                                     metadata={"answers": store.metadata["answers"][:-1] + ["zebra"]})
    sys.path.insert(0, str(RECIPES))
    try:
        import msvdqa
        with pytest.raises(ValueError, match=r"prior store .*foreign: 1 answer\(s\) of its answer list never occur in "
                                             r".*train_qa.json, e.g. 'zebra'"):
            msvdqa.main(["--data", str(data), "--priors", foreign.path, "--output", str(tmp_path / "run")])
    finally:
        sys.path.remove(str(RECIPES))
