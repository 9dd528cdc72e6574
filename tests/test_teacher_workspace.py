"""``sparc teacher-workspace DIR``: the five commands it prints run as printed, and the docs show them."""

import shlex
from pathlib import Path

from sparc.cli import main
from sparc.priors import PriorStore
from sparc.teachers.tiny import teacher_workflow_commands

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["teacher-finetune", "extract-priors", "priors-stats", "viz-priors", "diagnose-misfocus"]


def test_printed_workflow_runs_as_printed(tmp_path, capsys):
    ws = tmp_path / "teacher-demo"
    assert main(["teacher-workspace", str(ws)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sparc ")]
    assert [shlex.split(line)[1] for line in lines] == STEPS
    for line in lines:
        argv = shlex.split(line)
        assert main(argv[1:]) == 0, line
        captured = capsys.readouterr()
        assert "error" not in captured.err, (line, captured.err)
    assert (ws / "teacher-ft" / "albef-finetuned.safetensors").is_file()
    store = PriorStore.open(ws / "priors")
    assert len(store) == 12 and store.metadata["checkpoint"] == "albef-finetuned.safetensors"
    assert (ws / "viz" / "index.html").is_file()


def test_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["teacher-workspace", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparc teacher-workspace: error: ") and str(tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_docs_and_readme_show_the_printed_commands():
    commands = teacher_workflow_commands("teacher-demo")
    for doc in ("docs/teachers.md", "README.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "sparc teacher-workspace teacher-demo" in text, doc
        for line in commands:
            assert line in text.splitlines(), f"{doc} lacks: {line}"
