"""MSVD-QA / MSRVTT-QA: the released JSON layout, the answer-set protocol and the metric, on files
written here in that layout (the real files are not in the fixtures) with hand-worked numbers."""

import json

import pytest

from sparc.data.msqa import answer_set, in_answer_set, read_msqa_table
from sparc.metrics import msqa_accuracy


def write(path, entries):
    path.write_text(json.dumps(entries))
    return path


TRAIN = [{"answer": a, "id": i, "question": q, "video_id": v} for i, (a, q, v) in enumerate([
    ("man", "who is cutting ?", 1), ("dog", "what runs ?", 1), ("man", "who sings ?", 2),
    ("cat", "what sleeps ?", 3), ("dog", "what barks ?", 3), ("guitar", "what is played ?", 4)])]
TEST = [{"answer": a, "id": 100 + i, "question": q, "video_id": 9} for i, (a, q) in enumerate([
    ("man", "Who is cooking ?"), ("dog", "what jumps ?"), ("piano", "what is played ?"), ("cat", "how is it ?")])]


def test_the_table_and_the_answer_set_protocol(tmp_path):
    train = read_msqa_table(write(tmp_path / "train_qa.json", TRAIN))
    assert train["qid"][:2] == ["0", "1"] and train["question_word"][0] == "who" and train["video_id"][0] == "1"
    # counts: man 2, dog 2, cat 1, guitar 1 -> ties by first appearance
    assert answer_set(train["answer"], size=3) == ["man", "dog", "cat"]
    kept = in_answer_set(train, answer_set(train["answer"], size=3))
    assert kept["qid"] == ["0", "1", "2", "3", "4"]                  # guitar's question leaves training


def test_out_of_set_questions_count_as_wrong_and_words_are_split(tmp_path):
    test = write(tmp_path / "test_qa.json", TEST)
    answers = ["man", "dog", "cat"]
    preds = {"100": 0, "101": 2, "102": 1, "103": 2}                 # man right, cat wrong, (piano) wrong, cat right
    got = msqa_accuracy(test, preds, answers)
    assert got == pytest.approx({"overall": 50.0, "who": 100.0, "what": 0.0, "how": 100.0})
    words = {"100": "man", "101": "dog", "102": "piano", "103": "dog"}   # word predictions need no answer set
    assert msqa_accuracy(test, words)["overall"] == 75.0
    with pytest.raises(ValueError, match="pass answers="):
        msqa_accuracy(test, preds)
    with pytest.raises(ValueError, match="no prediction for question 103"):
        msqa_accuracy(test, {"100": "man", "101": "dog", "102": "x"})


def test_malformed_entries_are_named(tmp_path):
    bad = [dict(TRAIN[0]), {k: v for k, v in TRAIN[1].items() if k != "answer"}]
    with pytest.raises(ValueError, match=r"entry 1 \(qid 1\): no 'answer' \(field: answer\)"):
        read_msqa_table(write(tmp_path / "bad.json", bad))
    with pytest.raises(ValueError, match="question id 0 appears twice"):
        read_msqa_table(write(tmp_path / "dup.json", [TRAIN[0], TRAIN[0]]))
