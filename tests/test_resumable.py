"""sparc.resumable: atomic writes, the restored position of nested loops, complete checkpoints only.
(The jobs' exact resumes are tested with the jobs: test_train, test_teacher_finetune, test_extract_priors.)"""

import json

import pytest

from sparc.resumable import ResumableJob, atomic_path


def test_atomic_path_renames_when_complete_and_leaves_nothing_after_an_error(tmp_path):
    final = tmp_path / "weights.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(final)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("killed")
    assert final.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    with atomic_path(str(final)) as tmp:
        open(tmp, "wb").write(b"new")
    assert final.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    folder = tmp_path / "state"
    folder.mkdir()
    (folder / "stale").write_text("x")
    with atomic_path(str(folder)) as tmp:   # a folder replaces a folder
        (tmp_path / "state.tmp").mkdir()
        (tmp_path / "state.tmp" / "fresh").write_text("y")
    assert sorted(p.name for p in folder.iterdir()) == ["fresh"]


def test_each_loop_starts_at_its_restored_index_while_the_loops_around_it_are_at_theirs():
    job = ResumableJob(None, ("epoch", "pool", "batch"))
    assert job.start("epoch") == job.start("pool", 3) == job.start("batch", 3, 1) == 0   # a fresh job
    job.resumed = {"epoch": 2, "pool": 1, "batch": 4}
    assert job.start("epoch") == 2
    assert job.start("pool", 2) == 1 and job.start("pool", 3) == 0
    assert job.start("batch", 2, 1) == 4 and job.start("batch", 2, 2) == 0 and job.start("batch", 3, 1) == 0
    with pytest.raises(TypeError):
        job.start("batch", 2)


def test_only_complete_checkpoints_count_newest_last(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in (("step-00000010", True), ("step-00000002", True), ("step-00000011.tmp", False),
                           ("step-00000012", False)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "progress.json").write_text(json.dumps({"epoch": 1, "batch": 0, "global_step": 1}))
    job = ResumableJob(str(tmp_path), ("epoch", "batch"))
    assert [p.split("/")[-1] for p in job.checkpoints()] == ["step-00000002", "step-00000010"]
    assert ResumableJob(str(tmp_path / "nothing"), ("epoch",)).checkpoints() == []
