"""Official metrics, checked on the real NExT-QA val annotations (tests/fixtures/annotations) with
predictions generated here, against numbers worked out by hand from the split's type counts
(val: CW 1924, CH 683, TN 895, TC 663, TP 54, DC 177, DL 295, DO 305; 4,996 questions)."""

import csv
import json
from pathlib import Path

import pytest

from sparc.metrics import atp_hard_accuracy, nextqa_accuracy, read_nextqa_rows

VAL = Path(__file__).parent / "fixtures" / "annotations" / "nextqa" / "val.csv"
KEYS = ["Why", "How", "Bef&Aft", "When", "Cnt", "Loc", "Other", "Acc_C", "Acc_T", "Acc_D", "Acc"]


def predictions(correct_if):
    """Every val question, the prediction right exactly when ``correct_if(row)``."""
    with open(VAL, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        answer = int(row["answer"])
        out[f"{row['video']}_{row['qid']}"] = {"answer": answer, "prediction": answer if correct_if(row) else (answer + 1) % 5}
    return out


def test_the_reader_keeps_every_row_in_file_order():
    rows = read_nextqa_rows(VAL)
    assert len(rows) == 4996 and len({r["video"] for r in rows}) == 570
    assert len({r["key"] for r in rows}) == 4996
    assert rows[0]["key"] == "4010069381_6" and rows[0]["line"] == 2


def test_all_correct_and_all_wrong():
    right = nextqa_accuracy(VAL, predictions(lambda row: True))
    assert list(right) == KEYS and all(v == 100.0 for v in right.values())
    wrong = nextqa_accuracy(VAL, predictions(lambda row: False))
    assert all(v == 0.0 for v in wrong.values())


def test_each_group_by_hand():
    only_why = nextqa_accuracy(VAL, predictions(lambda row: row["type"] == "CW"))
    assert only_why["Why"] == 100.0 and only_why["How"] == 0.0
    assert only_why["Acc_C"] == pytest.approx(100 * 1924 / (1924 + 683))
    assert only_why["Acc_T"] == 0.0 and only_why["Acc_D"] == 0.0
    assert only_why["Acc"] == pytest.approx(100 * 1924 / 4996)
    # TP ("previous") is counted with TN as Bef&Aft, as eval_mc.py merges them
    only_previous = nextqa_accuracy(VAL, predictions(lambda row: row["type"] == "TP"))
    assert only_previous["Bef&Aft"] == pytest.approx(100 * 54 / (895 + 54))
    assert only_previous["When"] == 0.0
    assert only_previous["Acc_T"] == pytest.approx(100 * 54 / (895 + 54 + 663))
    descriptive = nextqa_accuracy(VAL, predictions(lambda row: row["type"][0] == "D"))
    assert descriptive["Acc_D"] == 100.0 and descriptive["Acc"] == pytest.approx(100 * (177 + 295 + 305) / 4996)


def test_the_answer_is_read_from_the_prediction_file(tmp_path):
    """eval_mc.py compares the file's own "answer" with its "prediction", never the CSV's answer."""
    preds = predictions(lambda row: True)
    for entry in preds.values():
        entry["answer"] = entry["prediction"] = 7        # agree with each other, not with the CSV
    path = tmp_path / "result.json"
    path.write_text(json.dumps(preds))
    assert nextqa_accuracy(VAL, str(path))["Acc"] == 100.0


def test_a_missing_prediction_names_the_question():
    preds = predictions(lambda row: True)
    del preds["4882821564_1"]
    with pytest.raises(ValueError, match=r"no prediction for question 4882821564_1 \(annotations line 3\)"):
        nextqa_accuracy(VAL, preds)


def test_vgt_csvs_name_the_column_video_id(tmp_path):
    text = VAL.read_text().replace("video,frame_count", "video_id,frame_count", 1)
    (tmp_path / "val.csv").write_text(text)
    assert nextqa_accuracy(tmp_path / "val.csv", predictions(lambda row: True))["Acc"] == 100.0


def test_atp_hard_by_row_index_or_key(tmp_path):
    rows = read_nextqa_rows(VAL)
    # the first 10 rows: by hand, their types and which of them the predictions get right
    types = [r["type"] for r in rows[:10]]
    assert types == ["CH", "CW", "CH", "TN", "CW", "CW", "CW", "TN", "TN", "CW"]   # no TC, no descriptive
    chosen = list(range(10))
    right = {rows[i]["key"] for i in (0, 1, 3, 9)}                   # CH, CW, TN, CW correct
    preds = predictions(lambda row: f"{row['video']}_{row['qid']}" in right)
    (tmp_path / "atp-hard-ct4.txt").write_text("\n".join(map(str, chosen)) + "\n")
    by_rows = atp_hard_accuracy(VAL, preds, tmp_path / "atp-hard-ct4.txt")
    assert by_rows == atp_hard_accuracy(VAL, preds, [rows[i]["key"] for i in chosen])
    assert list(by_rows) == ["Why", "How", "Bef&Aft", "Acc_C", "Acc_T", "Acc"]   # groups without questions left out
    assert by_rows["Why"] == pytest.approx(100 * 2 / 5)                # CW rows 1, 4, 5, 6, 9: 1 and 9 right
    assert by_rows["How"] == pytest.approx(100 * 1 / 2)                # CH rows 0, 2: 0 right
    assert by_rows["Bef&Aft"] == pytest.approx(100 * 1 / 3)            # TN rows 3, 7, 8: 3 right
    assert by_rows["Acc_C"] == pytest.approx(100 * 3 / 7) and by_rows["Acc_T"] == pytest.approx(100 * 1 / 3)
    assert by_rows["Acc"] == pytest.approx(100 * 4 / 10)
    with pytest.raises(ValueError, match="row index 4996 is outside"):
        atp_hard_accuracy(VAL, preds, [4996])
    with pytest.raises(ValueError, match="listed twice"):
        atp_hard_accuracy(VAL, preds, [0, rows[0]["key"]])
