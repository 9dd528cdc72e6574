"""TGIF-QA: the four released test files read with every row (counts checked against the dataset's
README and the computed figures in ../shared/reference/benchmarks.md), and the official metrics on
predictions generated here, against numbers worked out by hand."""

import collections
from pathlib import Path

import pytest

from sparc.data.tgifqa import read_tgifqa_table, tgifqa_task
from sparc.metrics import tgifqa_metrics

DIR = Path(__file__).parent / "fixtures" / "annotations" / "tgifqa"
FILE = {task: DIR / f"Test_{task}_question.csv" for task in ("action", "transition", "count", "frameqa")}
SIZES = {"action": 2274, "transition": 6232, "count": 3554, "frameqa": 13691}


@pytest.mark.parametrize("task", list(FILE))
def test_every_row_is_read(task):
    table = read_tgifqa_table(FILE[task])
    assert tgifqa_task(FILE[task]) == task and len(table) == SIZES[task]
    assert len(set(table["qid"])) == SIZES[task]                     # vid_id is a question id


def test_standard_quoting_and_the_task_columns():
    transition = read_tgifqa_table(FILE["transition"])
    row = transition[transition["qid"].index("TRANS15831")]
    assert any('"' in c for c in row["candidates"]) and not any(c.startswith('"') for c in row["candidates"])
    action = read_tgifqa_table(FILE["action"])
    assert action[0]["candidates"][4] == "flap wings" and action[0]["answer"] == 4 and action[0]["key"] == "26"
    frameqa = read_tgifqa_table(FILE["frameqa"])
    assert collections.Counter(frameqa["type"]) == {0: 5586, 1: 3148, 2: 3904, 3: 1053}
    count = read_tgifqa_table(FILE["count"])
    answers = collections.Counter(count["answer"])
    assert answers[0] == 918 and answers[1] == 0 and answers[2] == 914 and answers[3] == 582
    assert all(t == max(a, 1) for a, t in zip(count["answer"], count["target"]))


def test_multiple_choice_and_frameqa_accuracy_by_hand():
    action = read_tgifqa_table(FILE["action"])
    preds = {q: a if i % 4 == 0 else (a + 1) % 5 for i, (q, a) in enumerate(zip(action["qid"], action["answer"]))}
    assert tgifqa_metrics(FILE["action"], preds)["accuracy"] == pytest.approx(100 * 569 / 2274)   # rows 0, 4, ...: 569
    frameqa = read_tgifqa_table(FILE["frameqa"])
    colour_right = {q: (a if t == 2 else "wrong") for q, a, t in zip(frameqa["qid"], frameqa["answer"], frameqa["type"])}
    got = tgifqa_metrics(FILE["frameqa"], colour_right)
    assert got == pytest.approx({"accuracy": 100 * 3904 / 13691, "object": 0.0, "number": 0.0, "color": 100.0,
                                 "location": 0.0})


def test_count_mse_rounds_half_to_even_clamps_and_scores_zero_as_one():
    count = read_tgifqa_table(FILE["count"])
    # predict 0.4 everywhere: rounds to 0, clamped to 1; answers 0 count as 1
    got = tgifqa_metrics(FILE["count"], {q: 0.4 for q in count["qid"]})["mse"]
    expected = sum((1 - max(a, 1)) ** 2 for a in count["answer"]) / len(count["answer"])
    assert got == pytest.approx(expected)
    # 2.5 rounds to 2 (half to even), 3.5 to 4, 11 clamps to 10: on the first three questions by hand
    first = count.select(range(3))
    assert first["answer"] == [3, 3, 2]
    preds = dict(zip(first["qid"], [2.5, 3.5, 11.0]))
    assert tgifqa_metrics(first, preds, task="count")["mse"] == pytest.approx(((2 - 3) ** 2 + (4 - 3) ** 2 + (10 - 2) ** 2) / 3)


def test_missing_predictions_and_bad_rows_are_named(tmp_path):
    with pytest.raises(ValueError, match="no prediction for question ACTION4"):
        tgifqa_metrics(FILE["action"], {})
    lines = FILE["count"].read_text().splitlines()
    lines[2] = lines[2].replace("\t3\tCOUNT18", "\tthree\tCOUNT18")
    (tmp_path / "Test_count_question.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3 \(qid COUNT18\): answer 'three' is not an integer in 0..10 \(field: answer\)"):
        read_tgifqa_table(tmp_path / "Test_count_question.csv")
