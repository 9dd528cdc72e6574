"""TVQA+ and TVQA with STAGE: both recipes end to end on generated data in the released layouts (also
resumed, and on two processes), the reader's batch training STAGE through its adapter, spans from
labels back to seconds worked by hand, STAGE's prediction format scored by the official metric, the
reader's errors, and the teacher's priors extracted on STAGE's per-question frames."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ANNOTATIONS = Path(__file__).parent / "fixtures" / "annotations" / "tvqaplus"
sys.path.insert(0, str(RECIPES))
import tvqaplus  # noqa: E402  (recipes/tvqaplus.py: its readers, smoke data and prediction rows)

from sparc.data.tvqa_inference import box_records, find_max_pair, span_seconds, stage_predictions  # noqa: E402
from sparc.data.tvqa_stage import collate_stage, prior_lookup, question_frames  # noqa: E402

METRICS = {"qa_acc", "overall_map", "miou", "ans_span_joint_acc@.5"} | {f"R@{t / 10:.2f}" for t in range(1, 10)}


def run(recipe, *args, launch=None):
    command = [sys.executable] + (launch or []) + [str(RECIPES / recipe), *args]
    from helpers import run_checked  # tests/helpers.py

    run_checked(command, timeout=300, env={**os.environ, **({"ACCELERATE_USE_CPU": "1"} if launch else {})})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("tvqaplus")
    return tvqaplus.write_smoke_data(root / "data")


def config():
    return json.loads((RECIPES / "tvqaplus_stage.json").read_text())


# --------------------------------------------------------------------------- the recipes


ALL = ("--techniques", "contrastive,attention,span,sparc")     # written back in one order


def test_tvqaplus_smoke_trains_every_technique_reports_the_official_metrics_and_resumes(tmp_path):
    run("tvqaplus.py", "--smoke", "--output", str(tmp_path / "whole"), *ALL)
    results = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert set(results["metrics"]) == METRICS and results["techniques"] == "sparc,span,attention,contrastive"
    assert results["config"]["model"]["add_local"] is True
    # one wrap trains all five losses; the smoke priors keep a real subset of frames (consistency > 0)
    terms = results["loss_terms"]
    assert set(terms) == {"guided", "consistency", "spatial", "span", "attention", "contrastive"}
    assert all(np.isfinite(v) and v > 0 for v in terms.values()), terms
    assert results["trained"] == ["TemporalGuidance", "SpatialDistillation", "SpanSupervision",
                                      "AttentionSupervision", "ContrastiveMasking"]
    assert results["global_step"] == 2                          # 2 epochs x 8 train questions / batch 8
    assert results["config"]["lr"] == 1e-3 and results["config"]["ts_weight"] == 0.5
    predictions = json.loads((tmp_path / "whole" / "valid_inference_predictions.json").read_text())
    val = json.loads((tmp_path / "whole" / "smoke-data" / "tvqa_plus_annotations" / "tvqa_plus_val.json").read_text())
    assert sorted(predictions["ts_answer"]) == sorted(str(r["qid"]) for r in val)
    answer = {str(r["qid"]): r["answer_idx"] for r in val}
    for entry in predictions["raw_bbox"]:   # only the ground-truth answer's hypothesis, as the metric reads
        filled = [h for h, records in entry.items() if records]
        assert len(filled) == 1 and filled[0] == answer[str(entry[filled[0]][0]["qid"])]
    # killed after one step and started again: the techniques' generators and the mask vector resume too
    run("tvqaplus.py", "--smoke", "--output", str(tmp_path / "stopped"), "--max-steps", "1", *ALL)
    run("tvqaplus.py", "--smoke", "--output", str(tmp_path / "stopped"), *ALL)
    resumed = json.loads((tmp_path / "stopped" / "valid_inference_predictions.json").read_text())
    assert resumed == predictions


def test_tvqaplus_under_accelerate_on_two_cpu_processes(tmp_path):
    from helpers import free_port  # tests/helpers.py

    run("tvqaplus.py", "--smoke", "--output", str(tmp_path),
        launch=["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2                           # (--cpu would start one)
    assert results["techniques"] == "sparc,span,attention"     # the default: STAGE's full loss with +T+S
    predictions = json.loads((tmp_path / "valid_inference_predictions.json").read_text())
    assert len(predictions["ts_answer"]) == 8                 # each process's share gathered, none twice
    assert set(results["metrics"]) == METRICS


def test_tvqa_smoke(tmp_path):
    run("tvqa.py", "--smoke", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["metrics"]) == ["qa_acc"] and results["config"]["model"]["add_local"] is False
    preds = json.loads((tmp_path / "qid2preds_valid.json").read_text())
    assert len(preds) == 16 and set(preds.values()) <= set(range(5))


def test_tvqa_has_no_boxes_for_attention_supervision():
    done = subprocess.run([sys.executable, str(RECIPES / "tvqa.py"), "--smoke", "--techniques", "sparc,attention"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "attention supervision needs box annotations" in done.stderr


# --------------------------------------------------------------------------- the reader


def test_a_reader_batch_trains_stage_through_its_adapter(smoke, tmp_path):
    import sparc
    from sparc.adapters import STAGEAdapter
    from sparc.priors import PriorStore

    train = tvqaplus.plus_split(smoke, "train", config(), tmp_path)
    first = json.loads((smoke / "tvqa_plus_stage_features" / "tvqa_plus_train_preprocessed.json").read_text())[0]
    assert train.qids[0] == str(first["qid"]) == "127586"      # a real val question, boxes at frames 27, 33, ..., 51
    batch = collate_stage([train[i] for i in range(6)])
    B, T = len(batch["qid"]), batch["ts_label_mask"].shape[1]
    assert batch["vid"].shape[2] <= 25 and batch["vid"].shape[3] == 300 and batch["qas_bert"].shape[:2] == (B, 5)
    # phase 27 % 6 = 3: frames 3, 9, 15, ...; annotated from position 4 (frame 27) to 8 (frame 51)
    assert batch["frame_ids"][0, :5].tolist() == [3, 9, 15, 21, 27]
    assert (int(batch["anno_st_idx"][0]), int(batch["anno_ed_idx"][0])) == (4, 8)
    # ts [10.07, 16.78] s -> 3-fps [30.21, 50.34] in the 0-indexed positions 2, 8, ..., 32, ..., 50, 56:
    # first >= 30.21 is 32 (5), last <= 50.34 is 50 (8)
    assert (int(batch["ts_label_st"][0]), int(batch["ts_label_ed"][0])) == (5, 8)
    att = batch["att_labels"]
    assert att.shape == (B, T, batch["qas"].shape[2], batch["vid"].shape[2]) and bool((att > 0).any())
    rows = att.sum(dim=-1)                                      # a word's positives share its mass
    assert torch.allclose(rows[rows > 0], torch.ones_like(rows[rows > 0]), atol=1e-6)
    assert bool(((att > 0) <= (batch["vid_mask"][:, :, None, :] > 0)).all())   # only real regions
    word2idx = json.loads((ANNOTATIONS / "word2idx.json").read_text())
    assert int(batch["qas"][0, 0, 2]) == word2idx["howard"]    # "Who does Howard ...": ids of the lower-cased words

    store = PriorStore.open(smoke / "priors-train")
    priors = prior_lookup(store)(batch)
    assert priors.shape == (B, T, 5)
    # the full STAGE (span proposals over the ground-truth span), as the span loss will train it
    model = sparc.wrap(tvqaplus.build_stage(dict(config()["model"], hsz=16, dropout=0.0, add_local=True), seed=0),
                       STAGEAdapter(),
                       [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation()])
    out = model(batch, priors=priors)
    out.loss.backward()
    assert torch.isfinite(out.loss) and set(out.terms) == {"guided", "consistency", "spatial"}
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    # a store whose rows are not STAGE's frames is refused, naming the question
    other = PriorStore.from_arrays(tmp_path / "uniform", batch["qid"], np.full((B, 16, 5), 0.2, np.float32))
    with pytest.raises(ValueError, match=r"qid 127586: .* 16 frames .* STAGE samples .*--frame-ids.*\(field: priors\)"):
        prior_lookup(other)(batch)


def test_stage_without_local_features_trains_one_row_per_question():
    from sparc.adapters.stage import STAGEAdapter
    from cases.case_stage import stage_batch, tiny_stage   # tests/cases

    model = tiny_stage(add_local=False).train()
    out = STAGEAdapter().forward(model, stage_batch(4, 6, seed=0))
    assert out.logits.shape == (4, 5)


def test_reader_errors_name_file_question_and_field(smoke, tmp_path):
    import h5py

    data = tmp_path / "data"
    shutil.copytree(smoke, data)
    features = data / "tvqa_plus_stage_features"
    with h5py.File(features / "bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid.h5", "a") as f:
        del f["127586_a2"]
    with pytest.raises(ValueError, match=r"bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid\.h5: .*qid 127586.*"
                                         r"no dataset '127586_a2'.*\(field: 127586_a2\)"):
        tvqaplus.plus_split(data, "train", config(), tmp_path / "run")
    shutil.rmtree(data)
    shutil.copytree(smoke, data)
    boxes = json.loads((features / "tvqa_bbt_frcn_vg_hq_20_100.json").read_text())
    boxes["s10e09_seg02_clip_01"]["counts"][0] += 1
    (features / "tvqa_bbt_frcn_vg_hq_20_100.json").write_text(json.dumps(boxes))
    with pytest.raises(ValueError, match=r"pool5_hq_20_100_pca\.h5: .*qid 127586.*counts of video s10e09_seg02_clip_01 .*"
                                         r"sum to \d+ regions, but its features have \d+ rows \(field: counts\)"):
        tvqaplus.plus_split(data, "train", config(), tmp_path / "run2")
    with pytest.raises(ValueError, match=r"entry 0 \(qid 7\): the first annotated frame 400 is not among .*\(field: bbox\)"):
        question_frames({"400": []}, 500, "x.json, entry 0 (qid 7)")


def test_stage_frames_of_every_real_val_question():
    """On the real TVQA+ val file (3,017 questions, boxes at frames 1..285): every question's first annotated
    frame is sampled, and its annotated frames are exactly the sampled positions first..last."""
    records = json.loads((ANNOTATIONS / "tvqa_plus_val.json").read_text())
    spans = 0
    for r in records:
        ids, first, last = question_frames(r["bbox"], 300, f"qid {r['qid']}")
        assert [str(f) for f in ids[first:last + 1]] == sorted(r["bbox"], key=int)
        spans += last - first + 1
    assert len(records) == 3017 and spans == 15309                  # every annotated frame entry, once


def test_attention_labels_and_the_originals_iou_by_hand():
    from sparc.data.tvqa_att import attention_labels, box_iou

    # computeIoU adds 1 pixel to the intersection only: identical 10 x 10 boxes give 121 / 79
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(121 / 79)
    # [0, 0, 10, 10] vs [0, 0, 10, 20]: 121 / (100 + 200 - 121) = 0.676 -> positive; vs [5, 0, 15, 10]: 66 / 134
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(66 / 134)
    gt = {"7": [{"left": 0, "top": 0, "width": 10, "height": 10, "label": "Penny"}], "13": []}
    detected = [np.array([[0, 0, 10, 20], [5, 0, 15, 10], [0, 0, 11, 11], [50, 50, 60, 60]]), np.zeros((0, 4))]
    labels = attention_labels(gt, detected, [3, 2], ["where", "is", "penny", "?", "Penny", "sits"], num_frames=20)
    assert labels.shape == (2, 7, 3)                                # 2 frames, 6 words + end token, 3 regions
    # regions 0 and 2 (IoU 0.676, 121 / 100) of frame 7 for both mentions of "penny"; region 3 is not kept (count 3)
    assert labels[0, 2].tolist() == [0.5, 0.0, 0.5] and labels[0, 4].tolist() == [0.5, 0.0, 0.5]
    assert labels.sum() == 2.0


def test_the_detector_json_is_read_one_video_at_a_time(tmp_path):
    from sparc.data.tvqa_stage_files import build_boxes_cache, iter_json_object
    import h5py

    (tmp_path / "boxes.json").write_text(json.dumps({"v1": {"boxes": [[[0, 0, 1, 1]], []], "counts": [1, 0]},
                                                    "v2": {"boxes": [[[1.5, 2, 3, 4], [0, 0, 9, 9]]], "counts": [2]}}))
    assert [k for k, _ in iter_json_object(tmp_path / "boxes.json")] == ["v1", "v2"]
    with h5py.File(build_boxes_cache(tmp_path / "boxes.json", tmp_path / "cache.h5")) as f:
        assert f["v2"]["boxes"][()].tolist() == [[1.5, 2, 3, 4], [0, 0, 9, 9]] and f["v1"]["box_counts"][()].tolist() == [1, 0]
    (tmp_path / "bad.json").write_text('{"v1": {"boxes": [], "counts": []} "v2": 1}')
    with pytest.raises(ValueError, match=r"bad\.json: not JSON at character \d+"):
        list(iter_json_object(tmp_path / "bad.json"))


def test_subtitle_tokens_that_do_not_add_up_are_split_as_the_original_splits_them():
    from sparc.data.tvqa_stage_files import _dissect

    rows = np.arange(4)[:, None] * np.ones((1, 2))
    # sentences of 2, 3 and 1 tokens over 4 rows: [0:2], [2:4] (short), [5:6] empty -> the previous piece
    pieces = _dissect(rows, [2, 3, 1])
    assert [p[:, 0].tolist() for p in pieces] == [[0, 1], [2, 3], [2, 3]]
    assert [p[:, 0].tolist() for p in _dissect(rows[:0], [1, 1])] == [[], []]


# --------------------------------------------------------------------------- predictions


def test_spans_from_labels_to_frames_to_seconds():
    from sparc.data.tvqa import span_label

    # a question annotated from frame 13 (phase 1) in a 90-frame clip: ids 1, 7, ..., 85
    ids, first, last = question_frames({"13": [], "19": []}, 90, "q")
    assert ids == list(range(1, 91, 6)) and (first, last) == (2, 3)
    # 5-11 s -> 3-fps frames 15-33; positions 0, 6, 12, 18 ...: first >= 15 is 18 (3), last <= 33 is 30 (5)
    st, ed = span_label(5.0, 11.0, 90, [f - 1 for f in ids])
    assert (st, ed) == (3, 5)
    # back: offset (1 % 6) / 3 = 1/3 s; [3 * 2 + 1/3, (5 + 1) * 2 + 1/3]: frame ids 19 / 3 and 37 / 3
    assert span_seconds(st, ed, ids[0]) == pytest.approx([19 / 3, 37 / 3], abs=1e-12)
    assert span_seconds(0, 0, 6) == [0.0, 2.0]                    # phase 6: the original's offset is 0
    # the most likely start <= end pair; ties to the earliest
    assert find_max_pair([0.1, 0.6, 0.3], [0.2, 0.1, 0.7]) == ((1, 2), pytest.approx(0.42))
    assert find_max_pair([0.5, 0.5], [0.5, 0.5])[0] == (0, 0)
    assert find_max_pair([0.0, 0.0], [0.0, 0.0]) == ((0, 1), 0.0)


def test_stage_prediction_layout_is_scored_by_the_official_metric(tmp_path):
    from sparc.data.tvqa_att import gt_corners
    from sparc.metrics import tvqaplus_metrics

    records = json.loads((ANNOTATIONS / "tvqa_plus_val.json").read_text())[:2]
    word2idx = json.loads((ANNOTATIONS / "word2idx.json").read_text())
    (tmp_path / "val.json").write_text(json.dumps(records))
    rows = []
    for r in records:
        ids, first, last = question_frames(r["bbox"], 300, "q")
        a = int(r["answer_idx"])
        words = (r["q"] + " " + r[f"a{a}"]).split()
        word_ids = [word2idx.get(w.lower(), 1) for w in words]
        frames = sorted(r["bbox"], key=int)
        boxes = [[gt_corners(b) for b in r["bbox"][f]] + [[0, 0, 5, 5]] for f in frames]   # the truth and one more
        scores = np.full((len(ids), len(words), max(len(b) for b in boxes)), 0.1)
        for i, f in enumerate(frames):                     # each labelled box scored 0.9 by its word's first mention
            for j, b in enumerate(r["bbox"][f]):
                scores[first + i, [w.lower() for w in words].index(b["label"].lower()), j] = 0.9
        objects = {word2idx[b["label"].lower()] for f in frames for b in r["bbox"][f]}
        rows.append({"qid": r["qid"], "answer": a, "span": list(r["ts"]),
                     "boxes": {a: box_records(scores, word_ids, objects, boxes, ids, first, r["qid"], r["vid_name"])}})
    predictions = stage_predictions(rows)
    assert set(predictions["raw_bbox"][0]) == {"0", "1", "2", "3", "4"}
    record = predictions["raw_bbox"][0][str(rows[0]["answer"])][0]
    assert set(record) == {"pred", "bbox", "word", "qid", "vid_name", "img_idx"} and record["img_idx"] == 1
    metrics = tvqaplus_metrics(tmp_path / "val.json", predictions, ANNOTATIONS / "word2idx.json")
    assert metrics["qa_acc"] == 1.0 and metrics["miou"] == 1.0 and metrics["ans_span_joint_acc@.5"] == 1.0
    assert metrics["overall_map"] == pytest.approx(1.0)     # every ground-truth box found, nothing else above 0.2


# --------------------------------------------------------------------------- the teacher's frames


def test_extract_priors_on_frames_chosen_per_question(tmp_path, capsys):
    from sparc.cli import main
    from sparc.data.frames import FrameIdSource, read_frame_ids
    from sparc.data.questions import read_questions
    from sparc.priors import PriorStore
    from sparc.teachers.load import load_teacher
    from sparc.teachers.tiny import write_tiny_teacher_workspace

    ws = write_tiny_teacher_workspace(tmp_path / "ws", num_videos=2, questions_per_video=3, checkpoint=True)
    questions = read_questions(ws["questions"])
    chosen = {q.qid: ([1, 3, 5] if n % 3 != 1 else [2, 4]) for n, q in enumerate(questions)}   # two phases per video
    (tmp_path / "ids.json").write_text(json.dumps(chosen))
    out = tmp_path / "store"
    args = ["extract-priors", "--questions", str(ws["questions"]), "--frames", str(ws["frames"]), "--frame-ids",
            str(tmp_path / "ids.json"), "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]),
            "--checkpoint", str(ws["checkpoint"]), "--out", str(out), "--num-workers", "0", "--no-progress",
            "--dtype", "float32"]
    assert main(args) == 0
    assert "4 videos, 6 questions, 16 (frame, question) pairs" in capsys.readouterr().out   # 2 videos x 2 frame lists
    store = PriorStore.open(out)
    probs, lengths = store.lookup([q.qid for q in questions], return_lengths=True)
    assert lengths.tolist() == [len(chosen[q.qid]) for q in questions] and store.num_frames == 3
    teacher = load_teacher("albef", ws["checkpoint"], ws["vocab"], ws["config"])
    q = questions[1]
    frames = FrameIdSource(ws["frames"], {"g": (q.video, chosen[q.qid])})("g")
    expected = teacher.score(teacher.encode_images(frames), [q.question], [list(q.candidates)])[0]
    assert torch.allclose(probs[1, :2], expected.float(), atol=1e-5) and float(probs[1, 2].abs().sum()) == 0.0
    assert read_frame_ids(tmp_path / "ids.json") == chosen
    (tmp_path / "bad.json").write_text(json.dumps({questions[0].qid: [1, 3]}))
    bad = [str(tmp_path / "bad.json") if a == str(tmp_path / "ids.json") else str(tmp_path / "x") if a == str(out) else a
           for a in args]
    assert main(bad) == 2
    assert f"no frame ids for qid {questions[1].qid!r}" in capsys.readouterr().err


def test_the_recipe_writes_stage_frames_for_the_teacher(smoke, tmp_path):
    out = tmp_path / "ids.json"
    subprocess.run([sys.executable, str(RECIPES / "tvqaplus.py"), "--data", str(smoke), "--write-frame-ids", str(out)],
                   check=True, timeout=120, capture_output=True)
    ids = json.loads(out.read_text())
    assert len(ids) == 8 and ids["127586"][:5] == [3, 9, 15, 21, 27]
    store = json.loads((smoke / "priors-train" / "store.json").read_text())
    assert store["num_frames"] == max(len(v) for v in ids.values())
