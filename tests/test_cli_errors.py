"""What a newcomer gets wrong on the teacher side, and the one-line answer each mistake gets.

Every case here used to be silent (random weights, an abbreviated option read as another one) or
misleading (a missing file reported as an unpickling problem, a missing video as a 25-line traceback,
a config mismatch as a 187-line state_dict error). The CLI is driven through ``sparc.cli.main``.
"""

import argparse
import json
import re
import shutil
import socket
from importlib.metadata import version
from pathlib import Path

import pytest

from sparc.cli import build_parser, main, report_errors
from sparc.priors import PriorStore
from sparc.teachers.tiny import write_tiny_teacher_workspace

NUM_FRAMES = 4


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return write_tiny_teacher_workspace(tmp_path_factory.mktemp("tiny"), checkpoint=True)


def _data(ws, frames=None):
    return ["--questions", str(ws["questions"]), "--frames", str(frames or ws["frames"]), "--num-frames",
            str(NUM_FRAMES)]


def _teacher(ws, checkpoint=True):
    args = ["--tokenizer", str(ws["vocab"]), "--teacher-config", str(ws["config"])]
    return args + (["--checkpoint", str(ws["checkpoint"])] if checkpoint else [])


def _extract(ws, out, *extra, frames=None, checkpoint=True):
    return ["extract-priors", *_data(ws, frames), *_teacher(ws, checkpoint), "--out", str(out), "--num-workers", "0",
            "--no-progress", *extra]


def _one_line_error(err: str, command: str) -> str:
    """The error line; fails unless stderr is exactly one ``sparc <command>: error:`` line, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"sparc {command}: error: "), err
    return lines[0]


# ---- 1. no silent random weights -------------------------------------------------------------------


def test_extract_priors_without_checkpoint_refuses_unless_random_init(ws, tmp_path, capsys):
    assert main(_extract(ws, tmp_path / "p", checkpoint=False)) == 2
    line = _one_line_error(capsys.readouterr().err, "extract-priors")
    assert "--checkpoint" in line and "--random-init" in line and "random" in line
    assert not (tmp_path / "p").exists()   # refused before anything was written

    assert main(_extract(ws, tmp_path / "p", "--random-init", checkpoint=False)) == 0
    err = capsys.readouterr().err
    assert "sparc extract-priors: warning: --random-init" in err and "untrained" in err
    assert len(PriorStore.open(tmp_path / "p")) == 12

    assert main(_extract(ws, tmp_path / "q", "--random-init")) == 2   # both: a contradiction, not a choice
    assert "exclude each other" in _one_line_error(capsys.readouterr().err, "extract-priors")


@pytest.mark.parametrize("command", ["teacher-finetune", "diagnose-misfocus"])
def test_other_teacher_commands_refuse_random_weights(ws, tmp_path, capsys, command):
    extra = ["--output-dir", str(tmp_path / "ft")] if command == "teacher-finetune" else []
    assert main([command, *_data(ws), *_teacher(ws, checkpoint=False), *extra]) == 2
    line = _one_line_error(capsys.readouterr().err, command)
    assert "--checkpoint" in line and "--random-init" in line


def test_library_build_albef_needs_checkpoint_or_random_init(ws):
    from sparc.teachers.load import build_albef

    with pytest.raises(ValueError, match="random_init"):
        build_albef(ws["config"])
    assert build_albef(ws["config"], random_init=True) is not None


# ---- 2. no prefix matching ---------------------------------------------------------------------------


def test_abbreviated_options_are_errors(ws, tmp_path, capsys):
    # teacher-finetune has no --teacher (ALBEF only): it used to be read as --teacher-config blip
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["teacher-finetune", *_data(ws), "--tokenizer", str(ws["vocab"]), "--teacher", "blip",
                                   "--output-dir", str(tmp_path)])
    assert e.value.code == 2 and "unrecognized arguments: --teacher blip" in capsys.readouterr().err
    for argv in (["extract-priors", *_data(ws), "--tokenizer", "v", "--out", "o", "--checkp", "c"],
                 ["diagnose-misfocus", "--synth"],
                 ["priors-stats", "store", "--answ", "a.json"],
                 ["--vers"]):
        with pytest.raises(SystemExit) as e:   # each parsed as its full option before
            build_parser().parse_args(argv)
        assert e.value.code == 2 and "error:" in capsys.readouterr().err


def test_every_parser_disallows_abbreviations():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert parser.allow_abbrev is False
    assert {name for name, p in sub.choices.items() if p.allow_abbrev} == set()


# ---- 3. missing paths name the path and the option -----------------------------------------------------


@pytest.mark.parametrize("option", ["--checkpoint", "--tokenizer", "--teacher-config", "--questions", "--frames"])
def test_missing_path_names_path_and_option(ws, tmp_path, capsys, option):
    argv = _extract(ws, tmp_path / "p")
    missing = str(tmp_path / "no-such-thing")
    argv[argv.index(option) + 1] = missing
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err, "extract-priors")
    assert option in line and missing in line and "trust_checkpoint" not in line


def test_directory_as_checkpoint_is_named_as_such(ws, tmp_path, capsys):
    argv = _extract(ws, tmp_path / "p")
    argv[argv.index("--checkpoint") + 1] = str(tmp_path)
    assert main(argv) == 2
    line = _one_line_error(capsys.readouterr().err, "extract-priors")
    assert "--checkpoint" in line and "is a directory" in line and "trust_checkpoint" not in line


def test_library_loaders_raise_file_errors(ws, tmp_path):
    from sparc.data.questions import read_questions
    from sparc.teachers.albef import read_albef_checkpoint
    from sparc.teachers.load import read_albef_config

    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_albef_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(IsADirectoryError):
        read_albef_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_questions(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_albef_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 1\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 1"):
        read_questions(bad)


def test_a_relative_bert_config_is_found_next_to_the_teacher_config_then_in_the_working_directory(tmp_path, monkeypatch):
    import json

    from sparc.teachers.load import read_albef_config

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config_bert.json").write_text(json.dumps({"hidden_size": 8}))
    (folder / "teacher.json").write_text(json.dumps({"image_res": 32, "bert_config": "config_bert.json"}))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "configs").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert read_albef_config(folder / "teacher.json")["bert_config"] == {"hidden_size": 8}
    # ALBEF's own layout: the path is relative to the repository root, the working directory
    (elsewhere / "configs" / "config_bert.json").write_text(json.dumps({"hidden_size": 4}))
    (folder / "albef.json").write_text(json.dumps({"bert_config": "configs/config_bert.json"}))
    assert read_albef_config(folder / "albef.json")["bert_config"] == {"hidden_size": 4}
    (folder / "lost.json").write_text(json.dumps({"bert_config": "missing.json"}))
    with pytest.raises(FileNotFoundError, match="lost.json: bert_config 'missing.json' is neither at .*teacher"):
        read_albef_config(folder / "lost.json")


# ---- 4. BLIP: a missing folder never reaches the hub -----------------------------------------------------


def test_missing_blip_folder_is_file_not_found_without_network(ws, tmp_path, monkeypatch, capsys):
    from sparc.teachers.hf_vqa import BlipTeacher
    from sparc.teachers.load import load_teacher

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)   # "Salesforce/blip-vqa-base" is then neither a folder here nor to be downloaded
    for name in ("Salesforce/blip-vqa-base", str(tmp_path / "blip")):
        with pytest.raises(FileNotFoundError, match=re.escape(name)):
            BlipTeacher(name)
        with pytest.raises(FileNotFoundError, match=re.escape(name)):
            load_teacher("blip", name)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        BlipTeacher(tmp_path / "file")
    assert main(["extract-priors", "--teacher", "blip", "--checkpoint", "Salesforce/blip-vqa-base", *_data(ws),
                 "--out", str(tmp_path / "p")]) == 2
    line = _one_line_error(capsys.readouterr().err, "extract-priors")
    assert "--checkpoint" in line and "Salesforce/blip-vqa-base" in line


def test_every_from_pretrained_in_the_loading_code_is_local_only():
    import ast

    root = Path(__file__).resolve().parents[1]
    calls = 0
    for path in [*(root / "sparc").rglob("*.py"), *(root / "adapters").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                continue
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "Embedding":   # nn.Embedding: a tensor, no files
                continue
            local = [k for k in node.keywords if k.arg == "local_files_only"]
            assert local and getattr(local[0].value, "value", None) is True, f"{path.name}:{node.lineno}"
            calls += 1
    assert calls >= 3   # BLIP's model and tokenizer, VGT's BERT


# ---- 5. missing videos: one line, or skipped and recorded ------------------------------------------------


@pytest.fixture
def frames_without_video1(ws, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(ws["frames"], frames)
    shutil.rmtree(frames / "video001")
    return frames


def test_missing_video_is_one_line_naming_video_qids_and_paths(ws, tmp_path, frames_without_video1, capsys):
    assert main(_extract(ws, tmp_path / "p", frames=frames_without_video1)) == 2
    line = _one_line_error(capsys.readouterr().err, "extract-priors")
    assert "'video001'" in line and "'video001_0'" in line and "--skip-missing" in line
    assert str(frames_without_video1 / "video001") in line and "video001.mp4" in line   # the paths tried
    assert not (tmp_path / "p").exists()


def test_skip_missing_records_skipped_videos_and_resumes(ws, tmp_path, frames_without_video1, capsys):
    out = tmp_path / "p"
    argv = _extract(ws, out, "--skip-missing", frames=frames_without_video1)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "3 videos, 9 questions" in captured.out and "skipped 1 video(s)" in captured.err
    store = PriorStore.open(out)
    assert store.metadata["skipped_videos"] == {"video001": ["video001_0", "video001_1", "video001_2"]}
    assert len(store) == 9 and "video001_0" not in store
    # the prior tools read the questions file as answers: the skipped videos' questions are left out, said so
    assert main(["priors-stats", str(out), "--answers", str(ws["questions"])]) == 0
    assert "note: 3 question(s) of the videos skipped" in capsys.readouterr().err

    assert main(argv) == 0   # a rerun: nothing recomputed, the metadata check still passes
    assert "0 videos" in capsys.readouterr().out
    assert PriorStore.open(out).metadata["skipped_videos"] == {"video001": ["video001_0", "video001_1", "video001_2"]}

    shutil.copytree(ws["frames"] / "video001", frames_without_video1 / "video001")   # the video arrives
    assert main(argv) == 0 and "1 videos, 3 questions" in capsys.readouterr().out
    resumed = PriorStore.open(out)
    assert "skipped_videos" not in resumed.metadata and len(resumed) == 12
    assert main(_extract(ws, tmp_path / "fresh")) == 0
    fresh = PriorStore.open(tmp_path / "fresh")
    qids = sorted(fresh.qids)
    assert (resumed.lookup(qids) == fresh.lookup(qids)).all()
    assert resumed.metadata == fresh.metadata


def test_library_missing_video_fails_before_writing(ws, tmp_path, frames_without_video1):
    from sparc.data.frames import FrameSource
    from sparc.data.questions import read_questions
    from sparc.priors.extract import extract_dataset_priors

    class Unused:   # never asked: the check comes first
        def encode_images(self, frames):
            raise AssertionError("scored before the missing video was reported")

    with pytest.raises(FileNotFoundError, match="video001"):
        extract_dataset_priors(Unused(), read_questions(ws["questions"]), FrameSource(frames_without_video1, 4),
                               tmp_path / "p", num_workers=0, progress=False)
    assert not (tmp_path / "p").exists()


def test_skip_missing_across_processes(ws, tmp_path, frames_without_video1, monkeypatch):
    """Each process skips its own missing videos; the main process records them all after the merge."""
    from sparc.data.frames import FrameSource
    from sparc.data.questions import read_questions
    from sparc.priors import extract as extract_module
    from sparc.teachers.load import load_teacher

    teacher = load_teacher("albef", ws["checkpoint"], ws["vocab"], ws["config"])
    source = FrameSource(frames_without_video1, NUM_FRAMES)

    def run(rank):
        monkeypatch.setattr(extract_module, "_process_info", lambda: (rank, 2, lambda: None))
        return extract_module.extract_dataset_priors(teacher, read_questions(ws["questions"]), source, tmp_path / "p",
                                                     num_workers=0, progress=False, skip_missing=True)

    run(0)                                 # videos 0, 2
    assert run(1)["skipped_videos"] == 1   # videos 1 (missing), 3: its part waits for the merge
    run(0)                                 # merges; the stored metadata still matches
    store = PriorStore.open(tmp_path / "p")
    assert len(store) == 9 and store.metadata["skipped_videos"] == {"video001": ["video001_0", "video001_1",
                                                                                 "video001_2"]}


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    import numpy as np

    from sparc.cli import user_error_message
    from sparc.data.questions import read_questions

    def command(run):
        return report_errors("x", lambda args: run())

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "a", "video": "v"}\n')
    assert command(lambda: read_questions(bad))(None) == 2   # sparc's own check: the user's message
    assert "field 'question'" in _one_line_error(capsys.readouterr().err, "x")
    store = PriorStore.from_arrays(tmp_path / "s", ["a"], np.ones((1, 1, 1), dtype=np.float32))
    assert command(lambda: store.lookup(["q7"]))(None) == 2
    assert "'q7'" in _one_line_error(capsys.readouterr().err, "x")
    assert user_error_message(ValueError("qid 'a': bad\nthing (field: answer)")) == "qid 'a': bad thing (field: answer)"

    with pytest.raises(KeyError):                       # a KeyError that names no qid is a bug
        command(lambda: {}["num_frames"])(None)
    with pytest.raises(RuntimeError):
        command(lambda: torch_like_failure())(None)
    monkeypatch.setenv("SPARC_DEBUG", "1")              # and on request every traceback
    with pytest.raises(ValueError):
        command(lambda: read_questions(bad))(None)


def torch_like_failure():
    raise RuntimeError("an internal error")


# ---- 6. a checkpoint of another size: one error naming the config -----------------------------------------


def test_checkpoint_without_its_config_is_one_clear_error(ws, tmp_path, capsys):
    from sparc.teachers.load import build_albef

    with pytest.raises(ValueError) as e:
        build_albef(None, ws["checkpoint"])   # the tiny checkpoint, the default (full-size) config
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 1200
    assert "default config (full-size ALBEF" in msg and "pass --teacher-config <the config the checkpoint" in msg
    assert re.search(r"visual_encoder\.\S+: checkpoint \[[\d, ]+\], model \[[\d, ]+\]", msg), msg

    other = json.loads(Path(ws["config"]).read_text())
    other["decoder_layers"] = 3
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "other.json"))) as e:
        build_albef(tmp_path / "other.json", ws["checkpoint"])
    assert "missing from the checkpoint, e.g. text_decoder.bert.encoder.layer.2." in str(e.value)

    argv = _extract(ws, tmp_path / "p")
    i = argv.index("--teacher-config")
    del argv[i:i + 2]
    assert main(argv) == 2
    assert "pass --teacher-config" in _one_line_error(capsys.readouterr().err, "extract-priors")


# ---- 8. --version and help everywhere --------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sparc {version('sparc-videoqa')}"


def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    empty = [f"{name} {'/'.join(a.option_strings) or a.dest}"
             for name, p in [("sparc", parser), *sub.choices.items()] for a in p._actions
             if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    assert empty == []
