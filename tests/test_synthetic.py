"""The embedded synthetic benchmark, its teacher and a miniature end-to-end demo."""

import json
import os

import numpy as np
import pytest
import torch

from sparc.data.synthetic import QUESTION_LENGTH, QUESTION_TYPES, SyntheticBenchmark, SyntheticConfig
from sparc.backbones import BACKBONES

SIZES = {"teacher": 60, "train": 80, "test": 40}


@pytest.fixture(scope="module")
def bench():
    return SyntheticBenchmark(SyntheticConfig(sizes=SIZES))


FIELDS = ("vid_feats", "images", "qa_tokens", "answer", "causal", "frame_subject", "frame_action", "candidates",
          "qtype", "asked", "other")


def test_generation_is_deterministic_from_the_seed(bench):
    again = SyntheticBenchmark(SyntheticConfig(sizes=SIZES))
    for name, split in bench.splits.items():
        other = again.splits[name]
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(split, field), getattr(other, field))
        assert split.qids == other.qids and split.video_ids == other.video_ids
    different = SyntheticBenchmark(SyntheticConfig(sizes=SIZES, seed=1))
    assert not np.array_equal(different.splits["train"].vid_feats, bench.splits["train"].vid_feats)


def test_the_question_tokens_name_type_subject_and_candidate(bench):
    split = bench.splits["train"]
    tok = bench.token
    for n in range(len(split)):
        for c in range(bench.config.num_candidates):
            assert split.qa_tokens[n, c].tolist() == [
                tok("[CLS]"), tok(QUESTION_TYPES[split.qtype[n]]), tok(f"subject{split.asked[n]}"), tok("[SEP]"),
                tok(f"action{split.candidates[n, c]}"), tok("[SEP]")]
    assert set(split.qtype.tolist()) == {0, 1, 2}


def test_every_frame_shows_two_pairs_and_only_the_causal_frames_show_the_subject_doing_the_answer(bench):
    c = bench.config
    for split in bench.splits.values():
        answer = split.candidates[np.arange(len(split)), split.answer]
        asked = split.frame_subject == split.asked[:, None, None]                 # [N, T, P]
        does_answer = asked & (split.frame_action == answer[:, None, None])
        np.testing.assert_array_equal(split.causal, does_answer.any(-1))
        for n in range(len(split)):
            actions = split.frame_action[n]
            assert (actions[:, 0] != actions[:, 1]).all()                         # two different pairs
            assert (asked[n].sum(-1) <= 1).all()                                  # a person once per frame
            k = int(split.causal[n].sum())
            assert c.causal_frames[0] <= k <= c.causal_frames[1]
            # beside the asked subject in its answer frames: bystanders doing distractors, all different
            beside = ~asked[n] & split.causal[n][:, None]
            assert (split.frame_subject[n][beside] >= c.num_subjects).all()
            distractors = set(split.candidates[n].tolist()) - {answer[n]}
            shown_beside = split.frame_action[n][beside].tolist()
            assert set(shown_beside) <= distractors and len(set(shown_beside)) == k
            # the asked subject does nothing but candidates; the answer is done by no one else
            own = split.frame_action[n][asked[n]]
            assert set(own.tolist()) <= set(split.candidates[n].tolist())
            assert not ((split.frame_action[n] == answer[n]) & ~asked[n]).any()
            if split.temporal[n]:
                # first k frames of s: one candidate, last k: another; the question's word picks the answer
                first, last = own[:k], own[k:]
                assert len(own) == 2 * k and len(set(first)) == 1 and len(set(last)) == 1 and first[0] != last[0]
                assert answer[n] == (first[0] if QUESTION_TYPES[split.qtype[n]] == "first" else last[0])
                assert last[0] in split.candidates[n] and first[0] in split.candidates[n]
            else:
                assert len(own) == k and (own == answer[n]).all()
        # how often a candidate is shown says nothing about the answer: all are shown equally often
        counts = (split.frame_action[..., None] == split.candidates[:, None, None, :]).sum((1, 2))
        assert (counts == counts[:, :1]).all()


def test_pooled_features_are_the_pairs_parts_and_bound_parts_plus_noise(bench):
    split, c = bench.splits["test"], bench.config
    person, action = split.frame_subject, split.frame_action
    clean = (bench.subject_vectors[person] + bench.action_vectors[action] + bench.pair_vectors[person, action]).sum(2)
    np.testing.assert_allclose(bench.pooled(person, action), clean, rtol=1e-6, atol=1e-5)
    assert abs((split.vid_feats - clean).std() - c.noise) < 0.05
    # the bound part is its own direction for every (person, action): who does what survives pooling
    np.testing.assert_allclose(np.linalg.norm(bench.pair_vectors, axis=-1), c.binding * c.signal, rtol=1e-5)
    swapped = bench.pair_vectors[0, 1] + bench.pair_vectors[1, 0]
    assert np.linalg.norm(bench.pair_vectors[0, 0] + bench.pair_vectors[1, 1] - swapped) > c.signal
    regions = bench.region_subject_vectors[person] + bench.region_action_vectors[action]
    assert split.images.shape == (len(split), c.num_frames, 2, c.feature_dim)
    assert abs((split.images - regions).std() - c.noise) < 0.05


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
    tokens = torch.tensor([[bench.token("[CLS]"), bench.token("first"), bench.token("subject1"), bench.token("action2"), 0]])
    feats = bench.qa_features(tokens)
    table = bench.token_table
    e = lambda w: table[bench.token(w)]
    context = e("first") + e("subject1") + e("action2") + e("subject1") * e("action2")   # words + their composition
    torch.testing.assert_close(feats[0, 0], e("[CLS]") + context)
    torch.testing.assert_close(feats[0, 3], e("action2") + context)
    assert feats[0, 4].abs().sum() == 0                                   # [PAD] stays zero
    # a sequence without an action (the teacher's question) has no composition term
    alone = bench.qa_features(torch.tensor([[bench.token("[CLS]"), bench.token("subject1")]]))
    torch.testing.assert_close(alone[0, 0], e("[CLS]") + e("subject1"))
    questions, candidates = bench.teacher_inputs("train")
    assert questions.shape == (SIZES["train"], QUESTION_LENGTH, c.word_dim)
    assert candidates.shape == (SIZES["train"], c.num_candidates, c.word_dim)


def test_impossible_configurations_are_errors():
    with pytest.raises(ValueError, match="num_subjects"):
        SyntheticBenchmark(SyntheticConfig(num_subjects=1, sizes={}))
    with pytest.raises(ValueError, match="causal_frames"):
        SyntheticBenchmark(SyntheticConfig(causal_frames=(2, 5), sizes={}))
    with pytest.raises(ValueError, match="num_actions"):
        SyntheticBenchmark(SyntheticConfig(num_actions=6, sizes={}))
    with pytest.raises(ValueError, match="temporal_fraction"):
        SyntheticBenchmark(SyntheticConfig(temporal_fraction=1.5, sizes={}))


def test_teacher_split_is_disjoint_and_independent_of_the_split_order(bench):
    ids = {name: set(split.video_ids) for name, split in bench.splits.items()}
    assert not ids["teacher"] & ids["train"] and not ids["teacher"] & ids["test"] and not ids["train"] & ids["test"]
    first = {name: split.vid_feats[0] for name, split in bench.splits.items()}
    assert not np.allclose(first["teacher"], first["train"]) and not np.allclose(first["train"], first["test"])
    reordered = SyntheticBenchmark(SyntheticConfig(sizes={"test": 40, "train": 80}))
    np.testing.assert_array_equal(reordered.splits["train"].vid_feats, bench.splits["train"].vid_feats)


def test_frame_teacher_scores_every_frame_against_every_question(bench):
    from sparc.demo import teacher_frames
    from sparc.teachers.frame_qa import FrameQATeacher, train_frame_teacher

    split = bench.splits["teacher"]
    questions, candidates = bench.teacher_inputs("teacher")
    frames = teacher_frames(split)
    assert frames.shape == (SIZES["teacher"], bench.config.num_frames, 2 * bench.config.feature_dim)
    torch.manual_seed(0)
    teacher = FrameQATeacher(2 * bench.config.feature_dim, bench.config.word_dim, num_slots=2)
    history = train_frame_teacher(teacher, frames, questions, candidates,
                                  torch.from_numpy(split.answer), frame_mask=torch.from_numpy(split.causal), epochs=20)
    assert len(history) == 20 and history[-1] < history[0] / 2
    state = teacher.encode_images(frames[0])
    probs = teacher.score(state, questions[:3], candidates[:3])
    assert probs.shape == (3, bench.config.num_frames, bench.config.num_candidates)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, bench.config.num_frames))


@pytest.mark.parametrize("backbone", BACKBONES.names("demo"))
def test_tiny_demo_end_to_end(tmp_path, backbone):
    from sparc.demo import DemoSettings, format_table, run_demo

    settings = DemoSettings(seeds=(0,), configs=("plain", "+T+S+TGM"), epochs=1, batch_size=32, train_size=64,
                            test_size=32, teacher_size=64, teacher_pretrain_epochs=2, teacher_epochs=1, workers=1,
                            backbone=backbone)
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
    from sparc.cli import build_parser

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    backbone = next(a for a in demo._actions if a.dest == "backbone")
    assert tuple(backbone.choices) == BACKBONES.names("demo")
    args = build_parser().parse_args(["demo", "--backbone", "hga", "--quick"])
    assert args.backbone == "hga" and args.quick


def test_views_show_each_clips_pairs_and_leave_the_frame_features_alone(bench):
    split, c = bench.splits["test"], bench.config
    before = split.vid_feats.copy()
    views = bench.views("test")
    assert views is bench.views("test")                                   # drawn once
    np.testing.assert_array_equal(split.vid_feats, before)
    N, T, P = split.frame_subject.shape
    assert views.regions.shape == (N, T, c.frames_per_clip, c.num_regions, c.feature_dim)
    person, action = split.frame_subject, split.frame_action
    pair = bench.region_subject_vectors[person] + bench.region_action_vectors[action]        # [N, T, P, D]
    for r in range(c.num_regions):                                        # one region per pair, then background
        clean = pair[:, :, r] if r < P else np.zeros_like(pair[:, :, 0])
        noise = views.regions[:, :, :, r] - clean[:, :, None]
        assert abs(noise.std() - c.noise) < 0.05 and abs(noise.mean()) < 0.05
    assert abs((views.frame_feats - bench.pooled(person, action)[:, :, None]).std() - c.noise) < 0.05
    assert abs((views.motion - bench.motion_vectors[action].sum(2)).std() - c.noise) < 0.05
    assert (views.boxes[..., :2] <= views.boxes[..., 2:]).all() and ((views.boxes >= 0) & (views.boxes <= 1)).all()
    np.testing.assert_array_equal(views.subtitles[..., 1:-1], bench.token("subject0") + person)
    assert bench.config.vocab[bench.token("subject0") + c.num_subjects] == "bystander0"   # people in vocab order
    again = SyntheticBenchmark(SyntheticConfig(sizes=SIZES)).views("test")
    np.testing.assert_array_equal(again.regions, views.regions)
