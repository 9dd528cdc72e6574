"""AGQA 2.0 balanced: the released layout (one JSON object keyed by question id) parsed one question at
a time into a memory-mapped table, the validation split by video, and the accuracy by answer type, on
files written here (the real files are ~GBs) with hand-worked numbers."""

import json

import pytest

from sparc.data.agqa import iter_questions, read_agqa_table, validation_split
from sparc.metrics import agqa_accuracy


def record(video, answer, kind, question="Did they hold a cup?"):
    return {"question": question, "answer": answer, "video_id": video, "global": ["exists", "obj-rel"],
            "local": "yes-no-o4", "ans_type": kind, "steps": 3, "semantic": "object", "structural": "verify",
            "program": "...", "sg_grounding": {"0": [1, 2]}}


QUESTIONS = {f"q{i}": record(v, a, t) for i, (v, a, t) in enumerate([
    ("YSKX3", "No", "binary"), ("YSKX3", "table", "open"), ("ABCD1", "Yes", "binary"),
    ("ABCD1", "cup", "open"), ("ZZZZ9", "Yes", "binary"), ("ZZZZ9", "before", "open")])}


def test_the_object_is_parsed_one_question_at_a_time(tmp_path):
    path = tmp_path / "train_balanced.txt"
    path.write_text(json.dumps(QUESTIONS, indent=1))
    pairs = list(iter_questions(path, chunk_size=7))                 # values straddle every chunk boundary
    assert [q for q, _ in pairs] == list(QUESTIONS) and pairs[3][1] == QUESTIONS["q3"]
    table = read_agqa_table(path, cache_dir=tmp_path / "cache")
    assert table["qid"] == list(QUESTIONS) and table["ans_type"][:2] == ["binary", "open"]
    assert table[0]["global"] == "exists|obj-rel" and table[0]["steps"] == "3"
    assert table.cache_files                                         # on disk, memory-mapped


def test_validation_split_keeps_videos_whole(tmp_path):
    path = tmp_path / "train_balanced.txt"
    path.write_text(json.dumps(QUESTIONS))
    train, val = validation_split(read_agqa_table(path, cache_dir=tmp_path / "cache"), fraction=0.34, seed=0)
    assert len(train) + len(val) == 6 and len(val) == 2               # 1 of 3 videos, with both its questions
    assert not set(train["video_id"]) & set(val["video_id"])


def test_accuracy_by_answer_type(tmp_path):
    path = tmp_path / "test_balanced.txt"
    path.write_text(json.dumps(QUESTIONS))
    preds = {"q0": "No", "q1": "chair", "q2": "No", "q3": "cup", "q4": "Yes", "q5": "<unk>"}
    assert agqa_accuracy(path, preds) == pytest.approx({"binary": 200 / 3, "open": 100 / 3, "total": 50.0})


def test_malformed_records_are_named(tmp_path):
    bad = dict(QUESTIONS, q9=dict(record("Q", "x", "open"), ans_type="yes-no"))
    path = tmp_path / "bad.txt"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"question q9: ans_type 'yes-no' is not one of .*\(field: ans_type\)"):
        read_agqa_table(path, cache_dir=tmp_path / "cache")
    path.write_text('{"q0": {"question": "a"} "q1": {}}')
    with pytest.raises(ValueError, match="expected ',' or '}'"):
        list(iter_questions(path))
