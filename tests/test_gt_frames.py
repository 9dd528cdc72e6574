"""Ground-truth causal frames: STAGE's span labels read as frame positions (SpanFrames / STAGE_SPANS) on
real TVQA+ questions through the reader, the teacher&gt / teacher|gt selections worked by hand, the
techniques pointed at another selection, and the TVQA+ recipe's --frames."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sparc
from sparc.selection import (FRAME_CHOICES, STAGE_SPANS, CausalFrames, Intersection, SelectionInputs, SpanFrames,
                             declare_frames, frames_choice)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))
import tvqaplus  # noqa: E402  (recipes/tvqaplus.py)


def rows(keep):
    return [torch.nonzero(r).flatten().tolist() for r in keep]


@pytest.fixture(scope="module")
def reader_batch(tmp_path_factory):
    """Three real TVQA+ val questions (the fixture) through the TVQA+ reader, on smoke features."""
    from sparc.data.tvqa_stage import collate_stage

    root = tmp_path_factory.mktemp("gt-frames")
    data = tvqaplus.write_smoke_data(root / "data")
    config = json.loads((RECIPES / "tvqaplus_stage.json").read_text())
    train = tvqaplus.plus_split(data, "train", config, root)
    return collate_stage([train[i] for i in range(3)])


def test_stage_spans_on_real_tvqa_plus_questions(reader_batch):
    b = reader_batch
    assert b["qid"] == ["127586", "125244", "131187"]
    # 127586: ts [10.07, 16.78] s, boxes from frame 27 -> phase 3: frames 3, 9, ..., 57 (10 real, padded
    # to 11), 0-indexed positions 2, 8, 14, ...; 3-fps [30.21, 50.34]: first position >= 30.21 is 32
    # (index 5), last <= 50.34 is 50 (index 8) -> frames 33, 39, 45, 51.
    # 125244 and 131187: ts [0, 6.1] s, boxes from frame 1 -> frames 1, 7, 13, ...; 3-fps [0, 18.3]:
    # positions 0, 6, 12, 18 -> indices 0..3 -> frames 1, 7, 13, 19.
    valid = b["ts_label_mask"].bool()
    inputs = SelectionInputs(b, None, b["answer"], valid)
    keep = STAGE_SPANS(inputs)
    assert rows(keep) == [[5, 6, 7, 8], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert [b["frame_ids"][i][k].tolist() for i, k in enumerate(keep)] == [[33, 39, 45, 51], [1, 7, 13, 19],
                                                                           [1, 7, 13, 19]]
    assert valid.sum(dim=1).tolist() == [10, 11, 11] and not bool(keep[0, 10])   # padding never kept
    # seconds against per-frame times select the same frames here: frame f is at (f - 1) / 3 s
    seconds = dict(b, span_start=torch.tensor([10.07, 0.0, 0.0]), span_end=torch.tensor([16.78, 6.1, 6.1]),
                   frame_times=(b["frame_ids"].float() - 1) / 3)
    assert torch.equal(SpanFrames()(SelectionInputs(seconds, None, b["answer"], valid)), keep)


def test_stage_spans_select_a_training_steps_frames_on_the_reader_batch(reader_batch):
    from sparc.adapters import STAGEAdapter

    b = reader_batch
    config = json.loads((RECIPES / "tvqaplus_stage.json").read_text())
    model = sparc.wrap(tvqaplus.build_stage(dict(config["model"], hsz=16, dropout=0.0), seed=0), STAGEAdapter(),
                       [sparc.TemporalGuidance()], frames=frames_choice("gt"))   # no priors needed
    out = model(b)
    out.loss.backward()
    assert rows(out.keep) == [[5, 6, 7, 8], [0, 1, 2, 3], [0, 1, 2, 3]] and torch.isfinite(out.loss)


def test_the_synthetic_stage_batch_has_the_readers_fields(reader_batch):
    from sparc.backbones.stage import stage_batch
    from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig

    bench = SyntheticBenchmark(SyntheticConfig(sizes={"teacher": 2, "train": 4, "test": 2}))
    synthetic = stage_batch(bench, [bench.dataset("train")[i] for i in range(4)])
    assert set(synthetic) == set(reader_batch)
    for name, value in reader_batch.items():   # the same rank per field (B first; the axes' sizes differ)
        if torch.is_tensor(value):
            assert synthetic[name].dim() == value.dim(), name


# ---- the named selections, by hand -------------------------------------------------------------------

# P[b, t, answer] for four samples of five frames; sample 3 has four real frames.
P_ANSWER = torch.tensor([[0.9, 0.7, 0.2, 0.1, 0.6],     # teacher: 0, 1, 4
                         [0.1, 0.2, 0.3, 0.2, 0.1],     # teacher: none
                         [0.8, 0.1, 0.1, 0.1, 0.1],     # teacher: 0 (outside the span)
                         [0.1, 0.6, 0.7, 0.9, 0.0]])    # teacher: 1, 2, 3 (frame 4 is padding)
SPANS = {"ts_label_st": torch.tensor([1, 2, 3, 0]), "ts_label_ed": torch.tensor([2, 3, 4, 1]),
         "ts_missing": torch.tensor([False, False, False, False])}


def hand_inputs(batch=SPANS):
    answer = torch.tensor([0, 1, 2, 3])
    priors = torch.zeros(4, 5, 5)
    priors[torch.arange(4), :, answer] = P_ANSWER
    for b in range(4):   # the rest of each frame's mass on the first other candidate
        priors[b, :, (answer[b] + 1) % 5] = 1 - P_ANSWER[b]
    valid = torch.tensor([[True] * 5] * 3 + [[True] * 4 + [False]])
    return SelectionInputs(batch, priors, answer, valid)


def test_teacher_gt_and_their_intersection_and_union_by_hand():
    x = hand_inputs()
    select = {choice: rows(frames_choice(choice, 0.5)(x)) for choice in FRAME_CHOICES}
    # teacher (empty="all": sample 1 has no frame above 0.5 and keeps every frame)
    assert select["teacher"] == [[0, 1, 4], [0, 1, 2, 3, 4], [0], [1, 2, 3]]
    assert select["gt"] == [[1, 2], [2, 3], [3, 4], [0, 1]]
    # inside the span: 1 | none -> the span | 0 is outside -> the span | 1
    assert select["teacher&gt"] == [[1], [2, 3], [3, 4], [1]]
    # together: {0, 1, 4} + {1, 2} | none + {2, 3} | {0} + {3, 4} | {1, 2, 3} + {0, 1}
    assert select["teacher|gt"] == [[0, 1, 2, 4], [2, 3], [0, 3, 4], [0, 1, 2, 3]]
    assert frames_choice("teacher", 0.5) == CausalFrames(0.5) and frames_choice("gt") == STAGE_SPANS
    assert frames_choice("teacher&gt", 0.6) == Intersection((CausalFrames(0.6, "skip"), STAGE_SPANS), fallback=STAGE_SPANS)
    assert frames_choice("teacher|gt", 0.6) == CausalFrames(0.6, "skip") | STAGE_SPANS
    with pytest.raises(ValueError, match=r"frames must be one of .*'teacher&gt'.*got 'both'"):
        frames_choice("both")


def test_an_unannotated_span_keeps_every_frame_and_bad_spans_are_refused():
    missing = dict(SPANS, ts_missing=torch.tensor([False, True, False, True]))
    # TVQA's NaN spans (labelled [10, 30] s by the reader) are no annotation: every real frame
    assert rows(STAGE_SPANS(hand_inputs(missing))) == [[1, 2], [0, 1, 2, 3, 4], [3, 4], [0, 1, 2, 3]]
    assert rows(frames_choice("teacher&gt")(hand_inputs(missing)))[1] == [0, 1, 2, 3, 4]   # the teacher has none
    backwards = dict(SPANS, ts_label_st=torch.tensor([1, 3, 3, 0]), ts_label_ed=torch.tensor([2, 2, 4, 1]))
    with pytest.raises(ValueError, match=r"batch row 1: span \(3, 2\) is not 0 <= start <= end"):
        STAGE_SPANS(hand_inputs(backwards))
    past = dict(SPANS, ts_label_ed=torch.tensor([2, 3, 4, 4]))   # sample 3's last real frame is 3
    with pytest.raises(ValueError, match=r"batch row 3: span \(0, 4\) is not 0 <= start <= end <= 3 .*"
                                         r"\(fields: ts_label_st, ts_label_ed\)"):
        STAGE_SPANS(hand_inputs(past))
    with pytest.raises(ValueError, match=r"no \['ts_label_st', 'ts_label_ed'\] \(field: ts_label_st\)"):
        STAGE_SPANS(hand_inputs({}))


def test_techniques_built_for_the_teachers_frames_are_pointed_at_another_selection():
    gt = frames_choice("gt")
    techniques = [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation(),
                  sparc.TemporalGuidedMixup(threshold=0.5), sparc.TemporalGuidance(source="top_k", k=2)]
    out = declare_frames(techniques, gt, CausalFrames(0.5))
    assert out is not techniques and [t.frames for t in out] == [gt, None, gt, sparc.TopKFrames(2)]
    with pytest.raises(TypeError, match="selector must be a FrameSelector"):
        declare_frames(techniques, "gt", CausalFrames(0.5))
    # the recipe's helper: teacher changes nothing; another choice needs a technique that reads frames
    config = {"threshold": 0.5}
    made = [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation()]
    assert tvqaplus.frames_selection("teacher", config, made) == (made, None)
    ts, frames = tvqaplus.frames_selection("teacher|gt", config, made)
    assert frames == frames_choice("teacher|gt") and ts[0].frames == frames
    with pytest.raises(ValueError, match=r"--frames gt: no technique reads causal frames \(--techniques plain\)"):
        tvqaplus.frames_selection("gt", config, [])


def test_tvqaplus_recipe_trains_on_the_teachers_frames_inside_the_span(tmp_path):
    subprocess.run([sys.executable, str(RECIPES / "tvqaplus.py"), "--smoke", "--frames", "teacher&gt",
                    "--output", str(tmp_path)], check=True, timeout=300, capture_output=True, env=dict(os.environ))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["frames"] == "teacher&gt" and results["techniques"] == "sparc,span,attention"
    assert 0.0 <= results["metrics"]["qa_acc"] <= 1.0
