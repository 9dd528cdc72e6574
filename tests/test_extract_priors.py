"""``sparc extract-priors``: the dataset-scale job equals scoring every (frame, question) one pair at a
time, resumes byte-identically after a kill, handles open-ended answer sets and names bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sparc.cli import main
from sparc.data.frames import FrameSource
from sparc.data.questions import VideoQuestion, open_answer_set, read_questions
from sparc.priors import PriorStore
from sparc.priors import extract as extract_module
from sparc.priors.extract import extract_dataset_priors
from sparc.teachers.load import load_teacher
from sparc.teachers.tiny import write_tiny_teacher_workspace

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return write_tiny_teacher_workspace(tmp_path_factory.mktemp("ws"), num_videos=5, questions_per_video=3,
                                        checkpoint=True)


@pytest.fixture(scope="module")
def teacher(ws):
    return load_teacher("albef", ws["checkpoint"], ws["vocab"], ws["config"])


def _run(teacher, ws, out, **kw):
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    kw.setdefault("videos_per_shard", 2)
    return extract_dataset_priors(teacher, read_questions(ws["questions"]), FrameSource(ws["frames"], NUM_FRAMES),
                                  out, **kw)


def _files(path):
    return {name: (Path(path) / name).read_bytes() for name in sorted(os.listdir(path))}


@torch.no_grad()
def test_store_equals_the_per_pair_loop(ws, teacher, tmp_path):
    stats = _run(teacher, ws, tmp_path / "store")
    assert (stats["videos"], stats["questions"], stats["pairs"]) == (5, 15, 60)
    store = PriorStore.open(tmp_path / "store")
    questions = read_questions(ws["questions"])
    got = store.lookup([q.qid for q in questions])
    model, frames = teacher.model, FrameSource(ws["frames"], NUM_FRAMES)
    worst = 0.0
    for n, q in enumerate(questions):
        video = teacher.preprocess(frames(q.video))
        for t in range(NUM_FRAMES):   # the full teacher for this one (frame, question) pair
            image = model.encode_image(video[t:t + 1])
            q_ids, q_mask = teacher._question(q.question)
            a_ids, a_mask = teacher._candidates(list(q.candidates))
            states = model.encode_question(image, q_ids, q_mask)
            probs = model.cand_loglik(states, q_mask, a_ids, a_mask)[0].softmax(-1)
            worst = max(worst, (probs - got[n, t]).abs().max().item())
    assert worst <= 1e-4
    assert store.metadata["teacher"] == "ALBEFTeacher"
    assert len(store) == 15 and store.num_frames == NUM_FRAMES and store.num_candidates == 5


class KilledAfter:
    """A frame source that dies after ``n`` videos, like a job killed mid-run."""

    def __init__(self, source, n):
        self.source, self.n, self.num_frames, self.clips = source, n, source.num_frames, None

    def __call__(self, video):
        if self.n == 0:
            raise KeyboardInterrupt
        self.n -= 1
        return self.source(video)


def test_killed_and_resumed_store_is_byte_identical(ws, teacher, tmp_path):
    _run(teacher, ws, tmp_path / "whole")
    questions = read_questions(ws["questions"])
    source = FrameSource(ws["frames"], NUM_FRAMES)
    # 1) interrupted in the middle of the second shard (video 3 of 5; shards hold 2 videos)
    with pytest.raises(KeyboardInterrupt):
        extract_dataset_priors(teacher, questions, KilledAfter(source, 3), tmp_path / "resumed", num_workers=0,
                               progress=False, videos_per_shard=2)
    partial = PriorStore.open(tmp_path / "resumed")
    assert len(partial) == 6   # the first shard only: the open one is dropped, not written short
    # 2) what a hard kill leaves: a temp file and a shard whose qids file never arrived
    (tmp_path / "resumed" / ".tmp-shard-00001.npy").write_bytes(b"half")
    (tmp_path / "resumed" / "shard-00001.npy").write_bytes(b"half")
    stats = _run(teacher, ws, tmp_path / "resumed")
    assert stats["videos"] == 3   # finished videos are not redone
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")
    # 3) a stop after N videos (--max-videos), resumed, is the same store too
    _run(teacher, ws, tmp_path / "steps", max_videos=3)
    _run(teacher, ws, tmp_path / "steps", max_videos=1)
    _run(teacher, ws, tmp_path / "steps")
    assert _files(tmp_path / "steps") == _files(tmp_path / "whole")


def test_resume_refuses_other_settings(ws, teacher, tmp_path):
    _run(teacher, ws, tmp_path / "s", max_videos=2, metadata={"scoring": "sum"})
    with pytest.raises(ValueError, match="metadata"):
        _run(teacher, ws, tmp_path / "s", metadata={"scoring": "mean"})


def test_open_ended_answer_set(ws, teacher, tmp_path):
    train = [VideoQuestion(f"t{i}", "v", "q", None, a) for i, a in enumerate(["run", "run", "wave", "eat", "eat", "jump"])]
    answers = open_answer_set(train)
    assert answers == ("eat", "run")   # more than once, most frequent first, ties alphabetical
    test = [VideoQuestion("video000_a", "video000", "what does the man do ?", None, "run"),
            VideoQuestion("video000_b", "video000", "what does the dog do ?", None, "jump"),
            VideoQuestion("video001_a", "video001", "what does the boy do ?", None, "eat")]
    extract_dataset_priors(teacher, test, FrameSource(ws["frames"], NUM_FRAMES), tmp_path / "oe", answer_set=answers,
                           num_workers=0, progress=False)
    store = PriorStore.open(tmp_path / "oe")
    assert store.num_candidates == 2 and store.metadata["answers"] == ["eat", "run"]
    state = teacher.encode_images(FrameSource(ws["frames"], NUM_FRAMES)("video000"))
    expected = teacher.score(state, ["what does the dog do ?"], shared_candidates=list(answers))[0]
    assert torch.allclose(store.lookup(["video000_b"])[0], expected, atol=1e-6)


def test_bad_input_names_qid_and_field(ws, teacher, tmp_path):
    source = FrameSource(ws["frames"], NUM_FRAMES)
    missing = [VideoQuestion("q-missing", "no-such-video", "why ?", ("a", "b"), 0)]
    with pytest.raises(ValueError, match=r"qid 'q-missing'.*field: video"):
        extract_dataset_priors(teacher, missing, source, tmp_path / "a", num_workers=0, progress=False)
    mixed = [VideoQuestion("q1", "video000", "why ?", ("a", "b"), 0), VideoQuestion("q2", "video000", "how ?", ("a",), 0)]
    with pytest.raises(ValueError, match=r"qid 'q2'.*field: candidates"):
        extract_dataset_priors(teacher, mixed, source, tmp_path / "b", num_workers=0, progress=False)
    open_ended = [VideoQuestion("q3", "video000", "what ?", None, "run")]
    with pytest.raises(ValueError, match=r"qid 'q3'.*answer_set"):
        extract_dataset_priors(teacher, open_ended, source, tmp_path / "c", num_workers=0, progress=False)


def test_two_processes_write_parts_and_merge(ws, teacher, tmp_path, monkeypatch):
    """Under accelerate each process takes every other video into its own part store; the main
    process moves the parts' shards into the final store (here both ranks run in turn)."""
    _run(teacher, ws, tmp_path / "single")
    out = tmp_path / "multi"
    monkeypatch.setattr(extract_module, "_process_info", lambda: (0, 2, lambda: None))
    _run(teacher, ws, out)                       # rank 0: videos 0, 2, 4; merges its part
    monkeypatch.setattr(extract_module, "_process_info", lambda: (1, 2, lambda: None))
    _run(teacher, ws, out)                       # rank 1: videos 1, 3 (its part waits for the merge)
    assert os.path.isdir(out / ".part-001-of-002")
    monkeypatch.setattr(extract_module, "_process_info", lambda: (0, 2, lambda: None))
    stats = _run(teacher, ws, out)               # a rerun of rank 0 has nothing to do but merge
    assert stats["videos"] == 0 and not any(n.startswith(".part") for n in os.listdir(out))
    single, multi = PriorStore.open(tmp_path / "single"), PriorStore.open(out)
    qids = list(single.qids)
    assert sorted(multi.qids) == sorted(qids)
    assert np.array_equal(single.lookup(qids).numpy(), multi.lookup(qids).numpy())


def test_cli_extracts_and_the_prior_tools_read_the_store(ws, tmp_path, capsys):
    out = tmp_path / "cli-store"
    args = ["extract-priors", "--questions", str(ws["questions"]), "--frames", str(ws["frames"]),
            "--num-frames", str(NUM_FRAMES), "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]),
            "--checkpoint", str(ws["checkpoint"]), "--out", str(out), "--num-workers", "1", "--no-progress"]
    assert main(args) == 0
    assert "5 videos, 15 questions, 60 (frame, question) pairs" in capsys.readouterr().out
    store = PriorStore.open(out)
    assert store.dtype == "float16" and store.metadata["scoring"] == "sum" and len(store) == 15
    assert main(args) == 0 and "0 videos" in capsys.readouterr().out   # resumed: nothing left
    # priors-stats reads the questions file as its answers (types TN / CW from the file)
    assert main(["priors-stats", str(out), "--answers", str(ws["questions"])]) == 0
    table = capsys.readouterr().out
    assert "TN" in table and "CW" in table
    assert main(args[:-3] + ["--out", str(tmp_path / "x"), "--frames", str(tmp_path)]) == 2
    assert "field: video" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(ws, tmp_path):
    """The real launcher: two CPU processes (gloo) split the videos; the store has the single-process
    probabilities for every question."""
    import subprocess
    import sys

    args = ["extract-priors", "--questions", str(ws["questions"]), "--frames", str(ws["frames"]),
            "--num-frames", str(NUM_FRAMES), "--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"]),
            "--checkpoint", str(ws["checkpoint"]), "--num-workers", "0", "--no-progress", "--dtype", "float32",
            "--videos-per-shard", "1"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    from helpers import free_port  # tests/helpers.py

    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "sparc"]
    subprocess.run(launch + args + ["--out", str(tmp_path / "two")], env=env, check=True, timeout=300,
                   capture_output=True)
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    one, two = PriorStore.open(tmp_path / "one"), PriorStore.open(tmp_path / "two")
    qids = list(one.qids)
    assert sorted(two.qids) == sorted(qids) and len(qids) == 15
    assert (one.lookup(qids) - two.lookup(qids)).abs().max().item() <= 1e-6
    assert not any(n.startswith(".part") for n in os.listdir(tmp_path / "two"))


def test_cli_with_a_blip_teacher_directory(ws, tmp_path, capsys):
    """--teacher blip: a local BlipForQuestionAnswering directory (saved with its tokenizer); each video's
    questions are scored as the teacher scores them one by one."""
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering

    from sparc.teachers.hf_vqa import BlipTeacher

    n_words = len(ws["vocab"].read_text().split())
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16, initializer_range=0.2)
    text = dict(vocab_size=n_words + 1, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64, bos_token_id=n_words,
                sep_token_id=102, pad_token_id=0, initializer_range=0.1)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval()
    model.save_pretrained(tmp_path / "blip")
    BertTokenizer(str(ws["vocab"])).save_pretrained(tmp_path / "blip")
    out = tmp_path / "blip-store"
    assert main(["extract-priors", "--teacher", "blip", "--checkpoint", str(tmp_path / "blip"), "--questions",
                 str(ws["questions"]), "--frames", str(ws["frames"]), "--num-frames", str(NUM_FRAMES), "--out", str(out),
                 "--dtype", "float32", "--num-workers", "0", "--no-progress"]) == 0
    store = PriorStore.open(out)
    assert store.metadata["teacher"] == "blip" and len(store) == 15
    teacher = BlipTeacher.from_pretrained(tmp_path / "blip")
    q = read_questions(ws["questions"])[4]
    expected = teacher.score(teacher.encode_images(FrameSource(ws["frames"], NUM_FRAMES)(q.video)), q.question,
                             list(q.candidates))
    assert torch.allclose(store.lookup([q.qid])[0], expected, atol=1e-6)


def test_clip_backbones_score_one_frame_per_clip(ws, teacher, tmp_path):
    """--clips K: the store has K frames per question, the first sampled frame of each clip."""
    source = FrameSource(ws["frames"], NUM_FRAMES, clips=2)
    extract_dataset_priors(teacher, read_questions(ws["questions"]), source, tmp_path / "clips", num_workers=0,
                           progress=False)
    store = PriorStore.open(tmp_path / "clips")
    assert store.num_frames == 2
    q = read_questions(ws["questions"])[0]
    every = FrameSource(ws["frames"], NUM_FRAMES)(q.video)
    first_of_clips = every[[0, 2]]          # 4 sampled frames in 2 clips of 2
    expected = teacher.score(teacher.encode_images(first_of_clips), q.question, list(q.candidates))
    assert torch.allclose(store.lookup([q.qid])[0], expected, atol=1e-6)
