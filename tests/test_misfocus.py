"""sparc.misfocus: the SpARC 4.1.1 misfocus diagnostic (pure functions, drivers and the command)."""

import argparse
import json

import numpy as np
import pytest
import torch

from sparc.data.questions import read_questions
from sparc.cli.misfocus import add_subcommands
from sparc.misfocus import (ALL_GROUP, ORDER_EDIT, SUBJECT_EDIT, attention_misfocus, format_misfocus_table,
                            misfocus_summary, selection_from_scores, store_misfocus, swap_before_after,
                            swap_order_tokens, swap_subject_tokens, synthetic_misfocus, teacher_misfocus)
from sparc.priors import PriorStore
from helpers import probs_with_answer


# ---- swap_before_after -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("what did he do before he sat ?", "what did he do after he sat ?"),
    ("what did he do after he sat ?", "what did he do before he sat ?"),
    ("before the dog ran, after the cat sat", "after the dog ran, before the cat sat"),  # one pass, both ways
    ("Before he sat", "After he sat"),
    ("AFTER HE SAT", "BEFORE HE SAT"),
    ("what happened before?", "what happened after?"),
    ("beforehand he sat before afterwards", "beforehand he sat after afterwards"),
])
def test_swap_before_after(text, expected):
    assert swap_before_after(text) == expected
    assert swap_before_after(expected) == text  # its own inverse


@pytest.mark.parametrize("text", ["why did the man wave ?", "beforehand", "afterwards he left", ""])
def test_swap_before_after_none(text):
    assert swap_before_after(text) is None


# ---- selection_from_scores -------------------------------------------------------------------------

SCORES = torch.tensor([[0.1, 0.9, 0.5, 0.9],
                       [0.3, 0.2, 0.8, 0.7]])


def _sets(sel):
    return [np.flatnonzero(row).tolist() for row in sel.numpy()]


def test_selection_top_k():
    assert _sets(selection_from_scores(SCORES, top_k=2)) == [[1, 3], [2, 3]]
    assert _sets(selection_from_scores(SCORES, top_k=1)) == [[1], [2]]  # tie 0.9/0.9 -> the earlier frame
    assert _sets(selection_from_scores(SCORES, top_k=2, lengths=[4, 2])) == [[1, 3], [0, 1]]
    assert _sets(selection_from_scores(SCORES, top_k=3, lengths=[4, 1])) == [[1, 2, 3], [0]]
    assert _sets(selection_from_scores(SCORES.numpy(), top_k=9)) == [[0, 1, 2, 3]] * 2
    assert selection_from_scores(SCORES, top_k=2).dtype == torch.bool


def test_selection_threshold():
    assert _sets(selection_from_scores(SCORES, threshold=0.5)) == [[1, 3], [2, 3]]  # 0.5 itself is not kept
    assert _sets(selection_from_scores(SCORES, threshold=0.5, lengths=torch.tensor([4, 2]))) == [[1, 3], []]
    assert _sets(selection_from_scores(SCORES, threshold=0.95)) == [[], []]


def test_selection_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        selection_from_scores(SCORES)
    with pytest.raises(ValueError, match="exactly one"):
        selection_from_scores(SCORES, top_k=1, threshold=0.5)
    with pytest.raises(ValueError, match="top_k"):
        selection_from_scores(SCORES, top_k=0)
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        selection_from_scores(SCORES[0], top_k=1)


# ---- misfocus_summary ------------------------------------------------------------------------------


def test_summary_hand_computed_with_empty_selections():
    orig = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
    swap = torch.tensor([[0, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)
    s = misfocus_summary(orig, swap, groups=["a", "b", "a", "b"])
    # row 0: both empty -> identical, J = 1; row 1: {0} vs {0,1} J = 1/2; row 2: {} vs {1} J = 0; row 3: same, J = 1
    assert (s["questions"], s["identical"]) == (4, 2)
    assert s["identical_rate"] == pytest.approx(0.5)
    assert s["mean_jaccard"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert (s["empty_original"], s["empty_swapped"]) == (2, 1)
    assert s["mean_kept_original"] == pytest.approx(3 / 4)
    assert s["mean_kept_swapped"] == pytest.approx(5 / 4)
    a, b = s["groups"]["a"], s["groups"]["b"]
    assert (a["questions"], a["identical"], a["identical_rate"], a["mean_jaccard"]) == (2, 1, 0.5, 0.5)
    assert (b["questions"], b["identical"], b["identical_rate"], b["mean_jaccard"]) == (2, 1, 0.5, 0.75)
    assert list(s["groups"]) == ["a", "b"]
    assert misfocus_summary(orig, swap)["groups"] == {}


def test_summary_errors():
    sel = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="one shape"):
        misfocus_summary(sel, sel[:, :2])
    with pytest.raises(ValueError, match="one label per question"):
        misfocus_summary(sel, sel, groups=["x"])
    with pytest.raises(ValueError, match="no questions"):
        misfocus_summary(sel[:0], sel[:0])


def test_attention_misfocus():
    swapped = torch.tensor([[0.9, 0.1, 0.5, 0.95], [0.3, 0.2, 0.8, 0.7]])  # row 0 moves frame 1 -> frame 0
    s = attention_misfocus(SCORES, swapped, top_k=2)
    assert (s["identical"], s["mean_jaccard"]) == (1, pytest.approx((1 / 3 + 1) / 2))


# ---- teacher mode on the tiny workspace ------------------------------------------------------------


class FakeTeacher:
    """P[t, answer] = 0.9 on the frames it picks, 0.05 elsewhere. ``reads_word``: the picked frames are
    the first half for a question with "before", the second half for "after"; otherwise always the
    first half, whatever the question says."""

    def __init__(self, questions, reads_word):
        self.answer = {(q.question, q.candidates): q.answer_index for q in questions}
        for q in questions:
            swapped = swap_before_after(q.question)
            if swapped is not None:
                self.answer[(swapped, q.candidates)] = q.answer_index
        self.reads_word = reads_word
        self.encoded = 0

    def encode_images(self, frames):
        assert frames.dtype == torch.uint8 and frames.shape[-1] == 3
        self.encoded += 1
        return frames.shape[0]

    def score(self, num_frames, questions, candidates):
        out = []
        for q, c in zip(questions, candidates):
            C = len(c)
            a = self.answer[(q, tuple(c))]
            first_half = torch.arange(num_frames) < num_frames // 2
            picked = first_half if not self.reads_word or " before " in f" {q} " else ~first_half
            p = torch.full((num_frames, C), 0.0)
            p[:, a] = torch.where(picked, 0.9, 0.05)
            p += ((1 - p[:, a]) / (C - 1))[:, None] * (torch.arange(C) != a)
            out.append(p)
        return torch.stack(out)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from sparc.teachers.tiny import write_tiny_teacher_workspace

    return write_tiny_teacher_workspace(tmp_path_factory.mktemp("tiny"), checkpoint=True)


def test_teacher_mode_question_blind_teacher_is_fully_misfocused(workspace):
    from sparc.data.frames import FrameSource

    questions = read_questions(workspace["questions"])
    teacher = FakeTeacher(questions, reads_word=False)
    r = teacher_misfocus(teacher, FrameSource(workspace["frames"], 4), questions, by="type")
    with_word = [q for q in questions if swap_before_after(q.question)]
    assert r["questions"] == len(with_word) > 0 and r["skipped"] == len(questions) - len(with_word)
    assert (r["identical_rate"], r["mean_jaccard"]) == (1.0, 1.0)
    assert teacher.encoded == len({q.video for q in with_word})  # each video's frames encoded once
    assert set(r["groups"]) == {"TN"}
    rec = r["per_question"][0]
    assert rec["original"] == rec["swapped"] == [0, 1] and rec["identical"]
    assert swap_before_after(rec["question"]) == rec["swapped_question"]


def test_teacher_mode_word_reading_teacher_moves(workspace):
    from sparc.data.frames import FrameSource

    questions = read_questions(workspace["questions"])
    r = teacher_misfocus(FakeTeacher(questions, reads_word=True), FrameSource(workspace["frames"], 4), questions)
    assert (r["identical_rate"], r["mean_jaccard"]) == (0.0, 0.0)
    assert r["groups"] == {}
    # top-1 selection follows the word as well
    r = teacher_misfocus(FakeTeacher(questions, reads_word=True), FrameSource(workspace["frames"], 4), questions,
                         top_k=1)
    assert r["identical_rate"] == 0.0


def test_teacher_mode_no_swappable_question(workspace):
    questions = [q for q in read_questions(workspace["questions"]) if swap_before_after(q.question) is None]
    with pytest.raises(ValueError, match="before.*after"):
        teacher_misfocus(FakeTeacher(questions, False), None, questions)


# ---- store mode ------------------------------------------------------------------------------------


@pytest.fixture
def stores(tmp_path):
    rows = [  # qid, question, type, answer, P[t, a] original, P[t, a] swapped
        ("q0", "what did he do before he sat ?", "TP", 0, [0.9, 0.6, 0.1, 0.1], [0.9, 0.6, 0.1, 0.1]),
        ("q1", "what did he do after he sat ?", "TN", 2, [0.8, 0.2, 0.7, 0.1], [0.1, 0.2, 0.7, 0.9]),
        ("q2", "why did he wave ?", "CW", 1, [0.2, 0.2, 0.9, 0.9], [0.2, 0.2, 0.9, 0.9]),
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"qid": q, "video": "v", "question": text, "candidates": ["a", "b", "c"],
                                        "answer": a, "type": t}) + "\n" for q, text, t, a, _, _ in rows))
    qids = [r[0] for r in rows]
    orig = PriorStore.from_arrays(tmp_path / "orig", qids, np.stack([probs_with_answer(r[4], r[3]) for r in rows]))
    swap = PriorStore.from_arrays(tmp_path / "swap", qids[:2], np.stack([probs_with_answer(r[5], r[3]) for r in rows[:2]]))
    return {"questions": path, "orig": orig, "swap": swap, "tmp": tmp_path}


def test_store_mode_hand_computed(stores):
    r = store_misfocus(stores["orig"], stores["swap"], read_questions(stores["questions"]), 0.5, by="type")
    # q0: {0, 1} both times (identical); q1: {0, 2} -> {2, 3}, J = 1/3; q2 has no before/after (skipped)
    assert (r["questions"], r["identical"], r["skipped"]) == (2, 1, 1)
    assert r["identical_rate"] == pytest.approx(0.5)
    assert r["mean_jaccard"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["groups"]["TP"]["identical_rate"] == 1.0 and r["groups"]["TN"]["identical_rate"] == 0.0
    assert [p["original"] for p in r["per_question"]] == [[0, 1], [0, 2]]
    # threshold 0.95: nothing passes anywhere; empty="all" -> whole video both times; "skip" -> none both times
    for empty in ("all", "skip"):
        r = store_misfocus(stores["orig"], stores["swap"], read_questions(stores["questions"]), 0.95, empty=empty)
        assert r["identical_rate"] == 1.0
    text = format_misfocus_table(store_misfocus(stores["orig"], stores["swap"],
                                                read_questions(stores["questions"]), by="type"))
    assert ALL_GROUP in text and "50.00" in text and "0.667" in text


def test_store_mode_missing_qid(stores, tmp_path):
    short = PriorStore.from_arrays(tmp_path / "short", ["q0"], probs_with_answer([0.9, 0.6, 0.1, 0.1], 0)[None])
    with pytest.raises(KeyError, match=r"qid 'q1'.*field: qid"):
        store_misfocus(stores["orig"], short, read_questions(stores["questions"]))


# ---- synthetic mode --------------------------------------------------------------------------------


def test_swap_subject_tokens():
    from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig

    bench = SyntheticBenchmark(SyntheticConfig(num_subjects=3, sizes={"test": 4}))
    s0, s1, s2 = (bench.token(f"subject{i}") for i in range(3))
    cls, sep = bench.token("[CLS]"), bench.token("[SEP]")
    tokens = torch.tensor([[cls, s0, sep], [cls, s1, sep], [cls, s2, sep]])
    assert swap_subject_tokens(bench, tokens).tolist() == [[cls, s1, sep], [cls, s2, sep], [cls, s0, sep]]


def test_swap_order_tokens():
    from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig

    bench = SyntheticBenchmark(SyntheticConfig(sizes={"test": 4}))
    what, first, last, s0 = (bench.token(w) for w in ("what", "first", "last", "subject0"))
    tokens = torch.tensor([[what, s0], [first, s0], [last, s0]])
    assert swap_order_tokens(bench, tokens).tolist() == [[what, s0], [last, s0], [first, s0]]


def test_synthetic_mode_order_edit():
    """The paper's before/after swap in the benchmark's words: only temporal questions, grouped by
    their word. The teacher reads single frames, so it cannot tell first from last: its selection must
    stay where it was far more often than the true causal frames (which always move)."""
    r = synthetic_misfocus(limit=120)
    assert r["mode"] == "synthetic" and r["edit"] == ORDER_EDIT and r["by"] == "question word"
    assert r["questions"] == 120 and set(r["groups"]) == {"first", "last"}
    assert sum(g["questions"] for g in r["groups"].values()) == 120
    assert (r["reference"]["identical_rate"], r["reference"]["mean_jaccard"]) == (0.0, 0.0)
    assert r["identical_rate"] > 0.5
    rec = r["per_question"][0]
    assert {rec["group"], rec["edited"]} == {"first", "last"}
    assert "ground truth" in format_misfocus_table(r)


def test_synthetic_mode_subject_edit():
    r = synthetic_misfocus(limit=120, edit="subject")
    assert r["edit"] == SUBJECT_EDIT and r["by"] == "subject"
    assert r["questions"] == 120 and set(r["groups"]) == {"subject0", "subject1"}
    # the true causal frames (the asked subject doing the answer) always move under the edit
    assert (r["reference"]["identical_rate"], r["reference"]["mean_jaccard"]) == (0.0, 0.0)
    rec = r["per_question"][0]
    assert rec["edited"] != rec["group"]
    with pytest.raises(ValueError, match="edit must be one of"):
        synthetic_misfocus(limit=4, edit="bogus")


# ---- the command -----------------------------------------------------------------------------------


def _cli(argv):
    parser = argparse.ArgumentParser(prog="sparc")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["diagnose-misfocus", *argv])
    return args.func(args)


def test_cli_store_mode(stores, capsys):
    out = stores["tmp"] / "out.json"
    rc = _cli(["--store", stores["orig"].path, "--swapped-store", stores["swap"].path,
               "--questions", str(stores["questions"]), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "TN" in text and "TP" in text and "50.00" in text and "skipped 1" in text  # --by type by default
    saved = json.loads(out.read_text())
    assert saved["by"] == "type" and saved["identical"] == 1 and len(saved["per_question"]) == 2


def test_cli_errors(stores, tmp_path, capsys):
    short = PriorStore.from_arrays(tmp_path / "short", ["q0"], probs_with_answer([0.9, 0.6, 0.1, 0.1], 0)[None])
    rc = _cli(["--store", stores["orig"].path, "--swapped-store", short.path, "--questions", str(stores["questions"])])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("sparc diagnose-misfocus: error: qid 'q1'") and "field: qid" in err
    assert _cli(["--store", str(tmp_path / "nowhere"), "--swapped-store", short.path,
                 "--questions", str(stores["questions"])]) == 2
    assert "sparc diagnose-misfocus: error:" in capsys.readouterr().err
    assert _cli(["--store", stores["orig"].path, "--questions", str(stores["questions"])]) == 2
    assert "--swapped-store" in capsys.readouterr().err
    assert _cli([]) == 2
    assert "--synthetic" in capsys.readouterr().err


def test_cli_teacher_mode_tiny_albef(workspace, capsys, tmp_path):
    out = tmp_path / "teacher.json"
    rc = _cli(["--questions", str(workspace["questions"]), "--frames", str(workspace["frames"]),
               "--tokenizer", str(workspace["vocab"]), "--checkpoint", str(workspace["checkpoint"]),
               "--teacher-config", str(workspace["config"]), "--num-frames", "4", "--threshold", "0.2",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    saved = json.loads(out.read_text())
    assert saved["mode"] == "teacher" and saved["num_frames"] == 4 and saved["by"] == "type"
    assert saved["questions"] + saved["skipped"] == len(read_questions(workspace["questions"]))
    assert "before" in saved["edit"] and "TN" in text


def test_cli_synthetic(capsys, tmp_path):
    out = tmp_path / "synthetic.json"
    assert _cli(["--synthetic", "--limit", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "'first' <-> 'last'" in text and "ground truth" in text
    assert json.loads(out.read_text())["questions"] == 50
    assert _cli(["--synthetic", "--synthetic-edit", "subject", "--limit", "20"]) == 0
    assert "other subject" in capsys.readouterr().out
