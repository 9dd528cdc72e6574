"""DramaQA: the released question layout and the per-difficulty metric, on a file written here in that
layout (the real files are released on request only) with hand-worked numbers."""

import json

import pytest

from sparc.data.dramaqa import read_dramaqa_table
from sparc.metrics import dramaqa_accuracy


def question(qid, level, answer=None, vid="AnotherMissOh01_001_0034"):
    entry = {"qid": qid, "que": f"question {qid}?", "answers": [f"a{k}" for k in range(5)], "q_level_logic": level,
             "q_level_mem": 2, "vid": vid, "shot_contained": [34]}
    if answer is not None:
        entry["correct_idx"] = answer
    return entry


def test_levels_and_total_by_hand(tmp_path):
    entries = [question(1, 1, 0), question(2, 1, 3), question(3, 2, 1), question(4, 3, 4, "AnotherMissOh01_001_0000"),
               question(5, 4, 2, "AnotherMissOh01_001_0000"), question(6, 4, 2, "AnotherMissOh01_001_0000")]
    path = tmp_path / "AnotherMissOhQA_val_set.json"
    path.write_text(json.dumps(entries))
    table = read_dramaqa_table(path)
    assert table["qid"] == ["1", "2", "3", "4", "5", "6"] and table["level"] == [1, 1, 2, 3, 4, 4]
    preds = {"1": 0, "2": 0, "3": {"correct_idx": 1}, "4": 4, "5": 2, "6": 0}   # right: 1, 3, 4, 5
    assert dramaqa_accuracy(path, preds) == pytest.approx(
        {"level_1": 50.0, "level_2": 100.0, "level_3": 100.0, "level_4": 50.0, "total": 100 * 4 / 6})


def test_test_split_and_bad_entries(tmp_path):
    path = tmp_path / "AnotherMissOhQA_test_set.json"
    path.write_text(json.dumps([question(1, 1)]))
    assert read_dramaqa_table(path)["answer"] == [-1]
    with pytest.raises(ValueError, match="has no correct_idx"):
        dramaqa_accuracy(path, {"1": 0})
    path.write_text(json.dumps([question(1, 5, 0)]))
    with pytest.raises(ValueError, match=r"entry 0 \(qid 1\): q_level_logic 5 .*\(field: q_level_logic\)"):
        read_dramaqa_table(path)
