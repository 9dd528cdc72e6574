"""TVQA+'s official metrics (eval_tvqa_plus.py's arithmetic and quirks) on the real val annotations and
word2idx.json (tests/fixtures/annotations/tvqaplus), with predictions generated here and numbers worked
out by hand."""

import json
from pathlib import Path

import pytest

from sparc.metrics import tvqaplus_metrics
from sparc.metrics.tvqaplus import temporal_iou
from sparc.metrics.voc import average_precision

DIR = Path(__file__).parent / "fixtures" / "annotations" / "tvqaplus"
VAL, WORDS = DIR / "tvqa_plus_val.json", DIR / "word2idx.json"


def annotations():
    return json.loads(VAL.read_text())


def test_perfect_spans_and_answers_score_the_hull_quirk_and_no_boxes_score_zero():
    truth = annotations()
    preds = {"ts_answer": {str(e["qid"]): [e["ts"], int(e["answer_idx"])] for e in truth}, "raw_bbox": []}
    got = tvqaplus_metrics(VAL, preds, WORDS)
    n = len(truth)
    assert n == 3017
    assert got["qa_acc"] == 1.0
    # the two zero-length ground-truth spans (qids 136018, 130879) have a zero-length hull: IoU 0
    assert got["miou"] == pytest.approx((n - 2) / n) and got["ans_span_joint_acc@.5"] == pytest.approx((n - 2) / n)
    assert [k for k in got if k.startswith("R@")] == [f"R@0.{d}0" for d in range(1, 10)]
    assert all(got[f"R@0.{d}0"] == pytest.approx((n - 2) / n) for d in range(1, 10))
    assert got["overall_map"] == 0.0                                  # every annotated frame predicted empty


def test_temporal_iou_is_over_the_hull_and_only_predicted_questions_count():
    assert temporal_iou([0, 4], [2, 6]) == pytest.approx(2 / 6)      # a true union would be 6 too; hull = 6
    assert temporal_iou([0, 1], [3, 5]) == 0.0 and temporal_iou([2, 2], [2, 2]) == 0.0
    truth = annotations()[:2]
    preds = {"ts_answer": {str(truth[0]["qid"]): [[truth[0]["ts"][0], truth[0]["ts"][1]], int(truth[0]["answer_idx"])],
                           str(truth[1]["qid"]): [[truth[1]["ts"][1] + 1, truth[1]["ts"][1] + 2], 9]},
             "raw_bbox": []}
    got = tvqaplus_metrics(VAL, preds, WORDS)
    assert got["qa_acc"] == 0.5 and got["miou"] == pytest.approx(0.5) and got["R@0.90"] == 0.5


def test_grounding_ap_by_hand(tmp_path):
    """"leonard" in frames 1 and 4 (one GT box each), "sheldon" in frame 7. leonard's scored
    predictions: a hit at 0.9, a miss at 0.8, frame 4's hit at 0.7 -> precision 1, 1/2, 2/3 at recall
    1/2, 1/2, 1: AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; sheldon's one hit: AP 1; mAP = 11/12. Not scored at
    all: a leonard miss at 0.99 under another hypothesis, and a leonard miss at 0.99 in frame 7, where
    leonard is not annotated (either, scored, would rank first as a false positive: leonard AP 1/2)."""
    words = json.loads(WORDS.read_text())
    box = {"img_id": 1, "top": 10, "left": 20, "width": 30, "height": 40, "label": "Leonard"}
    entry = {"qid": 1, "q": "q?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", "a4": "e", "answer_idx": "2",
             "ts": [0.0, 2.0], "vid_name": "s01e01_seg01_clip_00",
             "bbox": {"1": [box], "4": [dict(box, img_id=4, left=100)], "7": [dict(box, img_id=7, label="sheldon")]}}
    (tmp_path / "val.json").write_text(json.dumps([entry]))
    hit1, miss, hit4 = [20, 10, 50, 50], [200, 200, 230, 240], [100, 10, 130, 50]
    leonard, sheldon = words["leonard"], words["sheldon"]

    def record(frame, word, boxes, scores):
        return {"qid": 1, "vid_name": entry["vid_name"], "img_idx": frame, "word": word, "bbox": boxes, "pred": scores}

    raw = {str(h): [] for h in range(5)}
    raw["2"] = [record(1, leonard, [hit1, miss], [0.9, 0.8]), record(4, leonard, [hit4], [0.7]),
                record(7, sheldon, [hit1], [0.5]), record(7, leonard, [miss], [0.99])]   # leonard not in frame 7
    raw["0"] = [record(4, leonard, [miss], [0.99])]                  # not the ground-truth answer's hypothesis
    preds = {"ts_answer": {"1": [[0.0, 2.0], 2]}, "raw_bbox": [raw]}
    got = tvqaplus_metrics(tmp_path / "val.json", preds, WORDS)
    assert got["overall_map"] == pytest.approx((5 / 6 + 1) / 2)
    assert average_precision([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0]) == pytest.approx(5 / 6)


def test_bad_predictions_are_named(tmp_path):
    with pytest.raises(ValueError, match="no 'raw_bbox'"):
        tvqaplus_metrics(VAL, {"ts_answer": {}}, WORDS)
    with pytest.raises(ValueError, match="question 5 is not in the annotations"):
        tvqaplus_metrics(VAL, {"ts_answer": {"5": [[0, 1], 0]}, "raw_bbox": []}, WORDS)
