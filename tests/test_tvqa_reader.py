"""TVQA / TVQA+ questions: the real TVQA+ val file read with every question (counts from
../shared/reference/benchmarks.md, computed on the same file), TVQA's jsonl layout written here, and
STAGE's frame sampling and span labels worked out by hand."""

import json
from pathlib import Path

import pytest

from sparc.data.tvqa import MISSING_SPAN, read_tvqa_table, span_label, stage_frame_ids

VAL = Path(__file__).parent / "fixtures" / "annotations" / "tvqaplus" / "tvqa_plus_val.json"


def test_tvqa_plus_val_is_read_whole():
    table = read_tvqa_table(VAL)
    assert len(table) == 3017 and len(set(table["vid_name"])) == 431
    qids = [int(q) for q in table["qid"]]
    assert min(qids) == 122039 and max(qids) == 137289
    assert set(table["answer"]) <= {0, 1, 2, 3, 4} and not any(table["ts_missing"])
    boxes = [json.loads(b) for b in table["bbox"]]
    assert sum(len(b) for b in boxes) == 15309
    assert sum(len(v) for b in boxes for v in b.values()) == 32682
    frames = [int(f) for b in boxes for f in b]
    assert min(frames) == 1 and max(frames) == 285
    assert sum(1 for s, e in zip(table["ts_start"], table["ts_end"]) if s == e) == 2
    first = table[0]
    assert first["qid"] == "133290" and first["answer"] == 3 and (first["ts_start"], first["ts_end"]) == (0.0, 5.4)


def test_tvqa_jsonl_with_int_answers_string_spans_and_nan(tmp_path):
    rows = [{"qid": 7, "q": "what?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", "a4": "e", "answer_idx": 2,
             "ts": "76.01-84.2", "vid_name": "friends_s01e01_seg01_clip_00", "show_name": "Friends"},
            {"qid": 8, "q": "who?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", "a4": "e", "answer_idx": 0,
             "ts": "NaN-NaN", "vid_name": "s01e01_seg01_clip_00", "show_name": "The Big Bang Theory"},
            {"qid": 9, "q": "how?", "a0": "a", "a1": "b", "a2": "c", "a3": "d", "a4": "e",
             "ts": "1.5-3", "vid_name": "s01e01_seg01_clip_01", "show_name": "The Big Bang Theory"}]
    path = tmp_path / "tvqa_val.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_tvqa_table(path)
    assert table["answer"] == [2, 0, -1] and table["show_name"][0] == "Friends"
    assert (table["ts_start"][0], table["ts_end"][0]) == (76.01, 84.2)
    assert (table["ts_start"][1], table["ts_end"][1]) == MISSING_SPAN and table["ts_missing"] == [False, True, False]
    rows[0]["ts"] = "84.2-76.01"
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(ValueError, match=r"line 1 \(qid 7\): ts ends \(76.01\) before it starts.*\(field: ts\)"):
        read_tvqa_table(path)


def test_stage_frame_sampling_and_span_labels():
    ids = stage_frame_ids(first_annotated=1, num_frames=90)
    assert ids == list(range(1, 91, 6)) and len(ids) == 15
    assert stage_frame_ids(first_annotated=12, num_frames=40) == [6, 12, 18, 24, 30, 36]   # 12 % 6 == 0 -> phase 6
    assert len(stage_frame_ids(1, 500)) == 50                           # never past frame 300
    # 2-4 s -> frames 6-12: first id >= 6 is 7 (position 1), last id <= 12 is 7 (position 1)
    assert span_label(2.0, 4.0, 90, ids) == (1, 1)
    # 0.1-30 s -> frames 0.3-90: positions 0 .. 14, the end made inclusive -> 13
    assert span_label(0.1, 30.0, 90, ids) == (0, 13)
    # a 600-frame clip: times rescaled by 300/600 before the search
    assert span_label(20.0, 40.0, 600, stage_frame_ids(1, 600)) == span_label(10.0, 20.0, 300, stage_frame_ids(1, 300))
