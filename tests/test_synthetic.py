"""The embedded synthetic benchmark, its teacher and a miniature end-to-end demo."""

import json
import os

import numpy as np
import pytest
import torch

from sparc.data.synthetic import QUESTION_LENGTH, SyntheticBenchmark, SyntheticConfig
from sparc.demo_backbones import BACKBONES

SIZES = {"teacher": 60, "train": 80, "test": 40}


@pytest.fixture(scope="module")
def bench():
    return SyntheticBenchmark(SyntheticConfig(sizes=SIZES))


def _asked_subject(bench, split):
    return split.qa_tokens[:, 0, 1] - bench.token("subject0")


def test_generation_is_deterministic_from_the_seed(bench):
    again = SyntheticBenchmark(SyntheticConfig(sizes=SIZES))
    for name, split in bench.splits.items():
        other = again.splits[name]
        for field in ("vid_feats", "qa_tokens", "answer", "causal", "frame_subject", "frame_action", "candidates"):
            np.testing.assert_array_equal(getattr(split, field), getattr(other, field))
        assert split.qids == other.qids and split.video_ids == other.video_ids
    different = SyntheticBenchmark(SyntheticConfig(sizes=SIZES, seed=1))
    assert not np.array_equal(different.splits["train"].vid_feats, bench.splits["train"].vid_feats)


def test_every_candidate_appears_but_only_the_causal_frames_show_the_answer(bench):
    for split in bench.splits.values():
        asked = _asked_subject(bench, split)
        answer_action = split.candidates[np.arange(len(split)), split.answer]
        for n in range(len(split)):
            shown = set(split.frame_action[n].tolist())
            assert set(split.candidates[n].tolist()) <= shown        # misfocus has something to grab
            np.testing.assert_array_equal(split.causal[n], split.frame_subject[n] == asked[n])
            np.testing.assert_array_equal(split.frame_action[n] == answer_action[n], split.causal[n])
            assert 0 < split.causal[n].sum() < split.causal.shape[1]
        # how often an action is shown says nothing about the answer: every candidate fills 1-2 frames
        counts = (split.frame_action[:, :, None] == split.candidates[:, None, :]).sum(1)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1


def test_frame_features_are_their_subject_plus_action_plus_small_noise(bench):
    split = bench.splits["test"]
    clean = bench.subject_vectors[split.frame_subject] + bench.action_vectors[split.frame_action]
    noise = split.vid_feats - clean
    assert abs(noise.std() - bench.config.noise) < 0.02


def test_collate_shapes_and_contextual_token_features(bench):
    data = bench.dataset("train")
    batch = data.collate([data[i] for i in range(5)])
    c = bench.config
    L = QUESTION_LENGTH + 2
    assert batch["vid_feats"].shape == (5, c.num_frames, c.feature_dim)
    assert batch["qas"].shape == (5, c.num_candidates, L, c.word_dim)
    assert batch["qas_lengths"].tolist() == [[L] * c.num_candidates] * 5
    assert batch["answer"].shape == (5,) and batch["index"].tolist() == list(range(5))
    assert batch["qid"] == bench.splits["train"].qids[:5]
    tokens = torch.tensor([[bench.token("[CLS]"), bench.token("subject1"), bench.token("action2"), 0]])
    feats = bench.qa_features(tokens)
    table = bench.token_table
    context = table[bench.token("subject1")] + table[bench.token("action2")]
    torch.testing.assert_close(feats[0, 0], table[bench.token("[CLS]")] + context)
    assert feats[0, 3].abs().sum() == 0                                   # [PAD] stays zero
    questions, candidates = bench.teacher_inputs("train")
    assert questions.shape == (SIZES["train"], QUESTION_LENGTH, c.word_dim)
    assert candidates.shape == (SIZES["train"], c.num_candidates, c.word_dim)


def test_teacher_split_is_disjoint_and_independent_of_the_split_order(bench):
    ids = {name: set(split.video_ids) for name, split in bench.splits.items()}
    assert not ids["teacher"] & ids["train"] and not ids["teacher"] & ids["test"] and not ids["train"] & ids["test"]
    first = {name: split.vid_feats[0] for name, split in bench.splits.items()}
    assert not np.allclose(first["teacher"], first["train"]) and not np.allclose(first["train"], first["test"])
    reordered = SyntheticBenchmark(SyntheticConfig(sizes={"test": 40, "train": 80}))
    np.testing.assert_array_equal(reordered.splits["train"].vid_feats, bench.splits["train"].vid_feats)


def test_frame_teacher_scores_every_frame_against_every_question(bench):
    from sparc.teachers.frame_qa import FrameQATeacher, train_frame_teacher

    split = bench.splits["teacher"]
    questions, candidates = bench.teacher_inputs("teacher")
    torch.manual_seed(0)
    teacher = FrameQATeacher(bench.config.feature_dim, bench.config.word_dim)
    history = train_frame_teacher(teacher, torch.from_numpy(split.vid_feats), questions, candidates,
                                  torch.from_numpy(split.answer), frame_mask=torch.from_numpy(split.causal), epochs=20)
    assert len(history) == 20 and history[-1] < history[0] / 2
    state = teacher.encode_images(torch.from_numpy(split.vid_feats[0]))
    probs = teacher.score(state, questions[:3], candidates[:3])
    assert probs.shape == (3, bench.config.num_frames, bench.config.num_candidates)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, bench.config.num_frames))


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_tiny_demo_end_to_end(tmp_path, backbone):
    from sparc.demo import DemoSettings, format_table, run_demo

    settings = DemoSettings(seeds=(0,), configs=("plain", "+T+S+TGM"), epochs=1, batch_size=32, train_size=64,
                            test_size=32, teacher_size=64, teacher_epochs=2, workers=1, backbone=backbone)
    results = run_demo(str(tmp_path), log=lambda *_: None, settings=settings)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert list(saved["accuracy"]) == ["plain", "+T+S+TGM"]
    assert saved["settings"]["backbone"] == backbone
    for row in saved["accuracy"].values():
        assert 0 <= row["mean"] <= 100 and len(row["per_seed"]) == 1
    assert set(saved["teacher_selection"]) == {"train", "test"}
    assert os.path.exists(tmp_path / "priors" / "train") and os.path.exists(tmp_path / "priors" / "test")
    if backbone == "hga":  # the prior tools run on the demo's stores
        from sparc.cli import main

        priors = tmp_path / "priors"
        assert main(["priors-stats", str(priors / "test"), "--answers", str(priors / "test-answers.json"),
                     "--json", str(tmp_path / "stats.json")]) == 0
        assert (tmp_path / "stats.json").stat().st_size > 0
    pytest.importorskip("matplotlib")
    assert (tmp_path / "sparc-demo.png").stat().st_size > 0
    table = format_table(results["accuracy"])
    assert "plain" in table and "+T+S+TGM" in table


def test_the_command_line_offers_every_demo_backbone():
    from sparc.cli import BACKBONE_NAMES, build_parser

    assert set(BACKBONE_NAMES) == set(BACKBONES)
    args = build_parser().parse_args(["demo", "--backbone", "hga", "--quick"])
    assert args.backbone == "hga" and args.quick


def test_views_show_each_clips_subject_and_action_and_leave_the_frame_features_alone(bench):
    split, c = bench.splits["test"], bench.config
    before = split.vid_feats.copy()
    views = bench.views("test")
    assert views is bench.views("test")                                   # drawn once
    np.testing.assert_array_equal(split.vid_feats, before)
    N, T = split.frame_subject.shape
    assert views.regions.shape == (N, T, c.frames_per_clip, c.num_regions, c.feature_dim)
    subject, action = bench.subject_vectors[split.frame_subject], bench.action_vectors[split.frame_action]
    for r, clean in ((0, subject), (1, action), (2, np.zeros_like(subject))):  # subject, action, background
        noise = views.regions[:, :, :, r] - clean[:, :, None]
        assert abs(noise.std() - c.noise) < 0.05 and abs(noise.mean()) < 0.05
    assert abs((views.frame_feats - (subject + action)[:, :, None]).std() - c.noise) < 0.05
    assert abs((views.motion - bench.motion_vectors[split.frame_action]).std() - c.noise) < 0.05
    assert (views.boxes[..., :2] <= views.boxes[..., 2:]).all() and ((views.boxes >= 0) & (views.boxes <= 1)).all()
    np.testing.assert_array_equal(views.subtitles[..., 1], bench.token("subject0") + split.frame_subject)
    again = SyntheticBenchmark(SyntheticConfig(sizes=SIZES)).views("test")
    np.testing.assert_array_equal(again.regions, views.regions)
