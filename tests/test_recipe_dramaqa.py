"""recipes/dramaqa.py end to end on generated data in the released QA layout (--smoke); the DramaQA
batches over per-frame features (a scene-level question gathers its shot_contained shots); the frame
folders that give the teacher exactly those frames; the errors that name the file, the question and
the field; extract-priors' reading of the QA json."""

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}   # one thread per process: 2 shared cores
LEVELS = {"level_1", "level_2", "level_3", "level_4", "total"}


def run(*args, launcher=(sys.executable,)):
    from helpers import run_checked  # tests/helpers.py

    run_checked([*launcher, str(RECIPES / "dramaqa.py"), "--smoke", *args], timeout=300, env=ENV)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("dramaqa") / "whole"
    run("--output", str(out))
    return out


def test_smoke_writes_dramaqa_accuracy_per_level(whole):
    from sparc.metrics import dramaqa_accuracy

    results = json.loads((whole / "results.json").read_text())
    assert set(results["metrics"]) == LEVELS and results["techniques"] == "sparc+tgm"
    assert results["global_step"] == 8 and results["feature_dim"] == 16          # 2 epochs x 30 questions / 8
    val = json.loads((whole / "predictions.json").read_text())                    # the challenge's answers.json
    assert len(val) == 12 and all(set(p) == {"correct_idx", "qid"} and isinstance(p["qid"], int) for p in val)
    val_file = whole / "smoke-data" / "AnotherMissOh_QA" / "AnotherMissOhQA_val_set.json"
    as_dict = {str(p["qid"]): p for p in val}
    assert dramaqa_accuracy(val_file, as_dict) == pytest.approx(results["metrics"])
    assert len(json.loads((whole / "test_predictions.json").read_text())) == 6


def test_resumes_where_it_stopped_also_under_accelerate_launch(whole, tmp_path):
    from helpers import free_port  # tests/helpers.py

    run("--output", str(tmp_path), "--max-steps", "4", launcher=(
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--main_process_port",
        str(free_port())))
    run("--output", str(tmp_path))
    assert json.loads((tmp_path / "predictions.json").read_text()) == json.loads((whole / "predictions.json").read_text())
    assert json.loads((tmp_path / "results.json").read_text())["global_step"] == 8


# ---- a scene-level question's frames, for the student and for the teacher ----------------------------

SHOTS = {"AnotherMissOh01_002_0001": 3, "AnotherMissOh01_002_0002": 4, "AnotherMissOh01_002_0003": 2,
         "AnotherMissOh01_002_0004": 5}
T = 8
FEATURES = "AnotherMissOh_frame_features.h5"     # DATA's per-frame feature file (recipes/dramaqa_hga.json)


def entry(qid, vid, shot_contained, level=3, answer=1):
    return {"qid": qid, "que": "Why is Haeyoung sad?", "answers": ["Because of Dokyung."] + [f"No {k}." for k in range(4)],
            "correct_idx": answer, "q_level_logic": level, "q_level_mem": 2, "vid": vid, "shot_contained": shot_contained}


@pytest.fixture()
def scene(tmp_path):
    """Per-frame features whose value is the frame's number in the scene (shot by shot), and the released
    images layout with each image's pixels holding that same number."""
    from torchvision.io import write_png

    number = 0
    with h5py.File(tmp_path / FEATURES, "w") as f:
        for shot, frames in SHOTS.items():
            f[shot] = np.arange(number, number + frames, dtype=np.float32)[:, None].repeat(3, axis=1)
            folder = tmp_path / "AnotherMissOh_images" / shot[:15] / shot[16:19] / shot[20:]
            folder.mkdir(parents=True)
            for i in range(frames):   # names as released: IMAGE_<frame id>.jpg order = natural order
                write_png(torch.full((3, 4, 4), number + i, dtype=torch.uint8), str(folder / f"IMAGE_{1000 + 8 * i:010d}.png"))
            number += frames
    (tmp_path / "AnotherMissOh_QA").mkdir()
    split = tmp_path / "AnotherMissOh_QA" / "AnotherMissOhQA_train_set.json"    # DATA's layout
    split.write_text(json.dumps([entry(7, "AnotherMissOh01_002_0000", [2, 4]),          # shots 2..4 of scene 002
                                 entry(8, "AnotherMissOh01_002_0003", [3], level=1)]))  # one shot
    return tmp_path, split


def test_scene_question_gathers_its_shots_frames(scene):
    from sparc.data.dramaqa_features import DramaQAFeatures, collate_dramaqa, frames_key
    from sparc.data.frames import uniform_indices
    from sparc.data.words import WordVocabulary

    root, split = scene
    vocab = WordVocabulary.build(["why is haeyoung sad because of dokyung no"])
    ds = DramaQAFeatures(split, root / FEATURES, vocab, num_frames=T, max_words=9)
    assert ds.shots[0] == ["AnotherMissOh01_002_0002", "AnotherMissOh01_002_0003", "AnotherMissOh01_002_0004"]
    assert frames_key("AnotherMissOh01_002_0000", [2, 4]) == "AnotherMissOh01_002_0002-0004"
    # shots 2-4 hold scene frames 3..13 (11 frames); the sampled ones, by hand:
    assert uniform_indices(11, T) == [0, 2, 3, 4, 6, 7, 8, 10]
    assert ds[0]["vid_feats"][:, 0].tolist() == [3 + i for i in (0, 2, 3, 4, 6, 7, 8, 10)]
    assert ds[1]["vid_feats"][:, 0].tolist() == [7, 7, 7, 7, 8, 8, 8, 8]          # 2 frames, each shown 4 times
    item = ds[0]
    # "question answer_k": 7 words for the first candidate, 6 for "No k." (the digit is not in the vocabulary)
    assert item["qas"].shape == (5, 7) and item["qas_lengths"].tolist() == [7, 6, 6, 6, 6] and item["answer"] == 1
    assert item["qas"][0].tolist() == [vocab.index[w] for w in "why is haeyoung sad because of dokyung".split()]
    assert item["qas"][1].tolist() == [vocab.index[w] for w in "why is haeyoung sad no".split()] + [1, 0]
    batch = collate_dramaqa([ds[0], ds[1]])
    assert batch["vid_feats"].shape == (2, T, 3) and batch["level"].tolist() == [3, 1]


def test_teachers_frame_folders_are_the_students_frames(scene):
    from sparc.data.dramaqa_features import DramaQAFeatures, link_frame_folders
    from sparc.data.frames import FrameSource
    from sparc.data.questions import read_questions
    from sparc.data.words import WordVocabulary

    root, split = scene
    counts = link_frame_folders([split], root / "AnotherMissOh_images", root / "frames", features=root / FEATURES)
    assert counts == {"AnotherMissOh01_002_0002-0004": 11, "AnotherMissOh01_002_0003": 2}
    questions = read_questions(split)                       # what extract-priors reads
    assert [q.video for q in questions] == list(counts) and [q.answer for q in questions] == [1, 1]
    assert [q.type for q in questions] == ["level_3", "level_1"]
    ds = DramaQAFeatures(split, root / FEATURES, WordVocabulary.build(["x"]), num_frames=T)
    source = FrameSource(root / "frames", num_frames=T)     # extract-priors --frames ROOT --num-frames 8
    for i, q in enumerate(questions):
        assert source(q.video)[:, 0, 0, 0].tolist() == ds[i]["vid_feats"][:, 0].tolist()
    assert link_frame_folders([split], root / "AnotherMissOh_images", root / "frames") == counts   # again: kept
    sys.path.insert(0, str(RECIPES))
    import dramaqa  # recipes/dramaqa.py --frame-folders: the same folders, counts checked against the features

    assert dramaqa.main(["--data", str(root), "--images", str(root / "AnotherMissOh_images"), "--frame-folders",
                         str(root / "frames-cli")]) == {"folders": 2, "frames": 13}
    assert sorted(p.name for p in (root / "frames-cli").iterdir()) == sorted(counts)


def test_errors_name_the_question_and_the_field(scene, tmp_path):
    from sparc.data.dramaqa_features import DramaQAFeatures, link_frame_folders, question_shots
    from sparc.data.questions import read_questions
    from sparc.data.words import WordVocabulary

    root, split = scene
    vocab = WordVocabulary.build(["x"])
    bad = tmp_path / "AnotherMissOhQA_val_set.json"
    bad.write_text(json.dumps([entry(9, "AnotherMissOh01_002_0000", [3, 6])]))        # shots 5, 6 do not exist
    with pytest.raises(ValueError, match=r"entry 0 \(qid 9\): shot AnotherMissOh01_002_0005 has no features in "
                                         r".*AnotherMissOh_frame_features.h5 \(field: AnotherMissOh01_002_0005\)"):
        DramaQAFeatures(bad, root / FEATURES, vocab)
    with pytest.raises(ValueError, match=r"qid 9\): shot AnotherMissOh01_002_0005 has no images"):
        link_frame_folders([bad], root / "AnotherMissOh_images", tmp_path / "frames")
    with h5py.File(root / FEATURES, "a") as f:
        del f["AnotherMissOh01_002_0004"]
        f["AnotherMissOh01_002_0004"] = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"qid 7\): shot AnotherMissOh01_002_0004 has 5 images .* but 4 feature rows"):
        link_frame_folders([split], root / "AnotherMissOh_images", tmp_path / "frames", features=root / FEATURES)
    with pytest.raises(ValueError, match=r"qid 3\): scene-level question .* without its shots \(field: shot_contained\)"):
        question_shots("AnotherMissOh01_002_0000", [], qid="3")
    with pytest.raises(ValueError, match=r"shot_contained \[4, 2\] is not a range"):
        question_shots("AnotherMissOh01_002_0000", [4, 2])
    with pytest.raises(ValueError, match=r"vid 'Friends_01' is not AnotherMissOh.*\(field: vid\)"):
        question_shots("Friends_01")
    test_split = tmp_path / "AnotherMissOhQA_test_set.json"
    test_split.write_text(json.dumps([{k: v for k, v in entry(5, "AnotherMissOh01_002_0001", [1]).items()
                                       if k != "correct_idx"}]))
    with pytest.raises(ValueError, match=r"qid '5': no correct_idx .*\(field: correct_idx\)"):
        read_questions(test_split)
    assert DramaQAFeatures(test_split, root / FEATURES, vocab)[0]["answer"] == -1   # the test split: no answers
