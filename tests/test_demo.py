"""The demo's reading of its own results: verdicts against plain, the non-learned baselines, the
configs it can train, the A.1 teacher, and what a quick run says about itself."""

import numpy as np
import pytest
import torch

from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig
from sparc.demo import (CONFIGS, DemoSettings, _vote_accuracy, baselines, build_techniques, format_table,
                        run_demo, summarize, verdict_against_plain)


def test_verdict_needs_every_seed_to_agree_and_the_mean_to_exceed_the_spread():
    # deltas 2, 3, 4: mean 3, sample std 1 -> beats
    v = verdict_against_plain(np.array([2.0, 3.0, 4.0]))
    assert v["verdict"] == "beats plain" and v["delta"] == pytest.approx(3.0) and v["delta_spread"] == pytest.approx(1.0)
    # one seed the other way: no verdict whatever the mean
    assert verdict_against_plain(np.array([2.0, -1.0, 5.0]))["verdict"] == "no significant difference"
    # all positive but mean 2.03 < std 2.51 -> not significant
    v = verdict_against_plain(np.array([0.5, 0.6, 5.0]))
    assert v["delta_spread"] == pytest.approx(np.std([0.5, 0.6, 5.0], ddof=1))
    assert v["verdict"] == "no significant difference"
    assert verdict_against_plain(np.array([-3.0, -4.0, -5.0]))["verdict"] == "worse than plain"
    assert verdict_against_plain(np.array([7.0]))["verdict"] == "one seed: no verdict"


def test_summary_pairs_rows_with_plain_by_seed_and_the_table_prints_each_verdict():
    def runs(accs, curve_end):
        return [{"accuracy": a, "curve": [0.2, curve_end], "answer_changes_with_subject": 0.5,
                 "accuracy_by_group": {"all": a, "what": a + 0.1, "first/last": a - 0.1}} for a in accs]

    table = summarize({"plain": runs([0.60, 0.70, 0.50], 0.6), "+T": runs([0.65, 0.74, 0.56], 0.9)})
    assert table["+T"]["delta_per_seed"] == pytest.approx([5.0, 4.0, 6.0])
    assert table["+T"]["verdict"] == "beats plain"
    assert table["plain"]["std"] == pytest.approx(10.0)           # sample std of 60, 70, 50
    assert table["+T"]["by_group"]["what"] == pytest.approx(75.0)   # mean of 75, 84, 66
    text = format_table(table)
    assert "+T: beats plain (+5.0 points, paired by seed: +5.0, +4.0, +6.0)" in text
    # +T gained 70 points in its last epoch: flagged as not converged; plain gained 40 -> flagged too
    flagged = [line for line in text.splitlines() if line.startswith("not converged at this budget")]
    assert len(flagged) == 1 and flagged[0].endswith("plain, +T")


def test_vote_accuracy_splits_ties_evenly():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 3.0, 3.0]])
    np.testing.assert_allclose(_vote_accuracy(scores, np.array([0, 1, 2])), [0.5, 1.0, 1 / 3])


class _Store:
    def __init__(self, priors):
        self.priors = priors

    def lookup(self, qids):
        return torch.as_tensor(self.priors)


def test_baselines_on_a_hand_built_split():
    class Split:
        qids = ["a", "b"]
        answer = np.array([0, 1])
        candidates = np.array([[10, 11], [12, 13]])
        # two slots per frame. a: 10 in three slots, 11 in one (causal: frame 0, showing 10 and 11);
        # b: 12 in three slots, 13 in two (causal: frame 2, showing 13 and a filler 99)
        frame_action = np.array([[[10, 11], [10, 99], [10, 99]], [[12, 13], [12, 12], [13, 99]]])
        causal = np.array([[True, False, False], [False, False, True]])
        temporal = np.array([False, True])

    priors = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],     # mean over frames favours 0: right
                       [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]])    # a tie: half right
    out = baselines(_Store(priors), Split())
    assert out["teacher vote over frames"] == pytest.approx({"all": 75.0, "what": 100.0, "first/last": 50.0})
    # whole video: a right (3 vs 1), b wrong (3 vs 2); causal frames: a tie (1 vs 1), b right (1 vs 0)
    assert out["counting candidates, whole video"] == pytest.approx({"all": 50.0, "what": 100.0, "first/last": 0.0})
    assert out["counting candidates, causal frames"] == pytest.approx({"all": 75.0, "what": 50.0, "first/last": 100.0})


def test_configs_are_built_by_name_and_unknown_names_are_errors():
    import sparc

    made = build_techniques("+T+S whole-CE", threshold=0.4)
    assert [type(t) for t in made] == [sparc.TemporalGuidance, sparc.SpatialDistillation]
    assert made[0].whole_ce_weight == 1.0 and made[0].frames == sparc.CausalFrames(0.4) and not made[0].detach_guided
    assert build_techniques("plain", 0.5) == []
    assert isinstance(build_techniques("+T+S+mixup", 0.5)[2], sparc.Mixup)
    with pytest.raises(ValueError, match="unknown demo config 'temporall'"):
        build_techniques("temporall", 0.5)
    with pytest.raises(ValueError, match="unknown technique 'Q'"):
        build_techniques([("Q", {})], 0.5)
    with pytest.raises(ValueError, match="unknown demo config"):
        DemoSettings.make(False, configs=["+T+S", "+X"])
    settings = DemoSettings.make(False, configs=["+T+S"], seeds=[3, 4], epochs=2)
    assert settings.configs == ("plain", "+T+S") and settings.seeds == (3, 4) and settings.epochs == 2
    assert set(settings.configs) <= set(CONFIGS)


def test_the_demo_help_names_every_config_and_the_default_rows():
    from sparc.cli import build_parser
    from sparc.demo import DEMO_ROWS

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    text = next(a.help for a in demo._actions if "--configs" in a.option_strings)
    assert all(f"'{label}'" in text for label in CONFIGS if label != "plain"), text
    default = text.split(";")[0]
    assert all(f"'{label}'" in default for label in DEMO_ROWS if label != "plain")
    assert DemoSettings().configs == DEMO_ROWS and DEMO_ROWS[0] == "plain"


def test_the_a1_teacher_is_sure_on_the_answer_frames_and_unsure_elsewhere():
    """Trained as a VQA model, then fine-tuned on every frame of its split's videos labelled with the
    answer (SpARC A.1), the teacher puts P(answer) high on the frames where the asked subject does the
    answer of a "what" question and low on the others, instead of naming an action it sees there. On a
    first / last question it cannot tell from one frame which of the subject's two actions comes first:
    it splits between them."""
    from sparc.demo import teacher_frames, train_teacher

    bench = SyntheticBenchmark(SyntheticConfig(sizes={"teacher": 2000, "test": 200}))   # the demo's teacher split
    teacher = train_teacher(bench, DemoSettings(), log=lambda *_: None)
    test = bench.splits["test"]
    questions, candidates = bench.teacher_inputs("test")
    frames = teacher_frames(test)
    with torch.no_grad():
        p = torch.stack([teacher.score(teacher.encode_images(frames[i]), questions[i:i + 1], candidates[i:i + 1])[0]
                         for i in range(len(test))]).numpy()
    p_answer = p[np.arange(len(test)), :, test.answer]
    what = ~test.temporal[:, None]
    sure, elsewhere, unsure = (p_answer[test.causal & what].mean(), p_answer[~test.causal & what].mean(),
                               p_answer[test.causal & ~what].mean())       # measured 0.58, 0.19, 0.39
    assert sure > 0.45 and elsewhere < 0.25 and sure > 2.5 * elsewhere
    assert 0.25 < unsure < sure


def test_a_quick_run_says_it_is_a_smoke_test(tmp_path):
    lines = []
    settings = DemoSettings(seeds=(0,), configs=("plain", "+T+S"), epochs=1, batch_size=32, train_size=64,
                            test_size=32, teacher_size=64, teacher_pretrain_epochs=1, teacher_epochs=1, workers=1,
                            quick=True)
    run_demo(str(tmp_path), log=lines.append, settings=settings)
    text = "\n".join(lines)
    assert "smoke test" in text and "QUICK SMOKE RUN" in text
    assert "teacher vote over frames" in text and "precision" in text


def test_swapping_the_asked_subject_names_the_videos_other_subject():
    bench = SyntheticBenchmark(SyntheticConfig(num_subjects=3, sizes={"test": 20}))
    split = bench.splits["test"]
    before, after = split.qa_tokens, bench.swap_asked_subject("test")
    np.testing.assert_array_equal(np.delete(after, 2, axis=2), np.delete(before, 2, axis=2))
    first = bench.token("subject0")
    np.testing.assert_array_equal(before[:, :, 2] - first, np.repeat(split.asked[:, None], 5, axis=1))
    np.testing.assert_array_equal(after[:, :, 2] - first, np.repeat(split.other[:, None], 5, axis=1))
    assert (split.other != split.asked).all()
    # the other subject is on screen in the video, and never does the asked question's answer
    answer = split.candidates[np.arange(len(split)), split.answer]
    shows_other = split.frame_subject == split.other[:, None, None]
    assert shows_other.any((1, 2)).all()
    assert not (shows_other & (split.frame_action == answer[:, None, None])).any()


def test_frame_teacher_reads_region_slots_in_any_order():
    """With ``num_slots=2`` the question attends over the two regions of a frame: swapping them changes nothing."""
    from sparc.teachers.frame_qa import FrameQATeacher

    torch.manual_seed(0)
    teacher = FrameQATeacher(feature_dim=8, word_dim=6, hidden=5, num_slots=2).eval()
    frames = torch.randn(3, 8)
    swapped = torch.cat([frames[:, 4:], frames[:, :4]], dim=1)
    questions, candidates = torch.randn(2, 4, 6), torch.randn(2, 5, 6)
    with torch.no_grad():
        p = teacher.score(teacher.encode_images(frames), questions, candidates)
        q = teacher.score(teacher.encode_images(swapped), questions, candidates)
    assert p.shape == (2, 3, 5)
    torch.testing.assert_close(p, q)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3))
    with pytest.raises(ValueError, match="multiple of num_slots"):
        FrameQATeacher(feature_dim=7, word_dim=6, num_slots=2)
