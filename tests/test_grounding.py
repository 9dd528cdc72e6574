"""Grounding scores of selected frames against human time spans (NExT-GQA's eval_ground.py
arithmetic), by hand on small spans, and through ``sparc priors-stats --grounding``."""

import json

import numpy as np
import pytest

from sparc.grounding import prior_grounding, read_nextgqa, selection_span, span_scores, temporal_grounding
from sparc.prior_tools import load_answers
from sparc.priors import PriorStore


def test_span_scores_by_hand():
    assert span_scores([2, 6], [4, 10]) == pytest.approx((2 / 8, 2 / 6))       # IoU over the hull, IoP over the prediction
    assert span_scores([2, 6], [3, 3]) == (0.0, 1.0)                          # a point inside the segment
    iou, iop = span_scores([2, 6], [8, 10])
    assert iou < 0 and iop < 0                                                # disjoint: negative overlap ...


def test_grounding_takes_the_best_segment_and_counts_disjoint_as_zero():
    truth = {"v_1": {"duration": 20.0, "spans": [[0.0, 2.0], [4.0, 8.0]]}, "v_2": {"duration": 20.0, "spans": [[2.0, 6.0]]},
             "v_3": {"duration": 20.0, "spans": [[1.0, 2.0]]}}
    preds = {"v_1": [4.0, 8.0], "v_2": [8.0, 10.0]}                           # v_3 has no prediction: skipped
    qa = {"v_1": {"answer": 1, "prediction": 1}, "v_2": {"answer": 0, "prediction": 0}}
    got = temporal_grounding(preds, truth, qa)
    assert got == pytest.approx({"questions": 2, "mIoP": 50.0, "IoP@0.3": 50.0, "IoP@0.5": 50.0, "mIoU": 50.0,
                                 "IoU@0.3": 50.0, "IoU@0.5": 50.0, "Acc@GQA": 50.0})   # ... counted as 0


def test_a_selection_covers_its_first_to_last_frame():
    assert selection_span([False, True, True, False, True, False, False, False], 16.0) == [2.0, 10.0]
    assert selection_span([False] * 4, 8.0) is None


def write_case(tmp_path):
    """Two questions of 4 frames over 8 s; the teacher believes the answer on frames 1-2 of q1 and
    frame 3 of q2. Human spans: q1 2-6 s, q2 0-2 s."""
    answer_p = np.array([[0.2, 0.8, 0.9, 0.1], [0.1, 0.2, 0.3, 0.95]])
    probs = np.stack([(1 - answer_p) / 2, answer_p, (1 - answer_p) / 2], axis=-1).astype(np.float32)
    store = PriorStore.from_arrays(tmp_path / "priors", ["vid_1", "vid_2"], probs)
    (tmp_path / "answers.json").write_text(json.dumps({"vid_1": {"answer": 1, "type": "CW"}, "vid_2": {"answer": 1, "type": "TN"}}))
    (tmp_path / "gsub_val.json").write_text(json.dumps({"vid": {"duration": 8.0, "fps": 29.97,
                                                                "location": {"1": [[2.0, 6.0]], "2": [[0.0, 2.0]]}}}))
    return store


def test_teacher_selection_grounding_per_threshold_and_type(tmp_path):
    store = write_case(tmp_path)
    answers = load_answers(str(tmp_path / "answers.json"), store)
    got = prior_grounding(store, answers, read_nextgqa(tmp_path / "gsub_val.json"), [0.5, 0.99], by="type")
    rows = {(r["threshold"], r["group"]): r for r in got["rows"]}
    # t=0.5: q1 keeps frames 1-2 -> 2-6 s = the human span (IoU 1, IoP 1); q2 frame 3 -> 6-8 s, disjoint (0, 0)
    assert rows[(0.5, "CW")]["mIoU"] == pytest.approx(100.0) and rows[(0.5, "TN")]["mIoU"] == 0.0
    assert rows[(0.5, "(all)")]["mIoP"] == pytest.approx(50.0)
    # t=0.99: nothing passes, empty="all" -> the whole video 0-8 s: q1 IoU 4/8 IoP 4/8, q2 IoU 2/8 IoP 2/8
    assert rows[(0.99, "(all)")]["mIoU"] == pytest.approx(100 * (0.5 + 0.25) / 2)


def test_the_command_prints_the_grounding(tmp_path, capsys):
    from sparc.cli import main

    write_case(tmp_path)
    code = main(["priors-stats", str(tmp_path / "priors"), "--answers", str(tmp_path / "answers.json"),
                 "--thresholds", "0.5", "--grounding", str(tmp_path / "gsub_val.json"), "--json", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "grounding of the selected frames" in out and "mIoU" in out
    assert json.loads((tmp_path / "s.json").read_text())["grounding"]["questions"] == 2
