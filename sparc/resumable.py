"""What the long jobs share to stop at any point and resume exactly: training (:func:`sparc.train.train`),
the teacher's fine-tuning (:func:`sparc.teachers.finetune.finetune_teacher`) and prior extraction
(:func:`sparc.priors.extract.extract_dataset_priors`).

* :func:`atomic_path` - write a file or a folder under a temporary name and rename it when complete,
  so a kill never leaves half of one under the real name;
* :class:`ResumableJob` - a job of nested loops (``("epoch", "batch")``) whose checkpoints are
  accelerate's state in ``output_dir/checkpoints/step-NNNNNNNN/`` with the loop position in
  ``progress.json`` (a folder is complete when its ``progress.json`` exists); a resumed run restores
  the newest one and starts every loop at the step after it;
* :func:`progress_bar` - the job's bar, on the local main process, starting at the work already done.

Extraction checkpoints through its store instead: a shard is its unit of work, written atomically,
and a rerun skips the videos whose questions are stored (:mod:`sparc.priors.extract`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Dict, Iterator, List, Optional, Sequence

__all__ = ["ResumableJob", "atomic_path", "progress_bar", "replace_path"]

CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"


def replace_path(tmp: str, final: str) -> None:
    """Move the finished ``tmp`` (a file or a folder) to ``final``, replacing what is there."""
    if os.path.isdir(final) and not os.path.islink(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str, tmp: Optional[str] = None) -> Iterator[str]:
    """``with atomic_path(final) as tmp:`` write to ``tmp`` (default ``final + ".tmp"``; give one that the
    readers of the folder ignore); at the end of the block it becomes ``final``, after an error it is
    removed."""
    tmp = tmp or final + ".tmp"
    try:
        yield tmp
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise
    replace_path(tmp, final)


def progress_bar(total: int, done: int = 0, desc: Optional[str] = None, enabled: bool = True, **tqdm_kwargs):
    """A tqdm bar over ``total`` units of which ``done`` are behind (a resumed job); off unless ``enabled``."""
    from tqdm.auto import tqdm

    options = {"leave": False, "dynamic_ncols": True, **tqdm_kwargs}
    return tqdm(total=total, initial=min(done, total), desc=desc, disable=not enabled, **options)


class ResumableJob:
    """The checkpoints and the position of one job of nested loops.

    ``levels`` names the loops, outermost first; a checkpoint records the index each loop resumes at
    (``{"epoch": 2, "batch": 4}``) and ``global_step``, the steps done. Without ``output_dir`` nothing is
    saved or restored. Every process of a multi-process run makes the same calls (they synchronise)."""

    def __init__(self, output_dir: Optional[str], levels: Sequence[str], keep: int = 2):
        self.output_dir, self.levels, self.keep = output_dir, tuple(levels), keep
        self.resumed: Optional[Dict[str, int]] = None   # the restored position, None for a fresh start
        self.global_step = 0

    @property
    def root(self) -> str:
        return os.path.join(self.output_dir, CHECKPOINT_DIR)

    def checkpoints(self) -> List[str]:
        """The complete checkpoint folders, oldest first."""
        if not self.output_dir or not os.path.isdir(self.root):
            return []
        done = [d for d in os.listdir(self.root)
                if d.startswith("step-") and os.path.exists(os.path.join(self.root, d, PROGRESS_FILE))]
        return [os.path.join(self.root, d) for d in sorted(done, key=lambda d: int(d.split("-")[1]))]

    def restore(self, accelerator) -> bool:
        """Load the newest checkpoint into ``accelerator`` (model, optimizer, RNG and registered state) and
        take its position; ``False`` when there is none."""
        found = self.checkpoints()
        if not found:
            return False
        latest = found[-1]
        accelerator.load_state(latest)
        with open(os.path.join(latest, PROGRESS_FILE)) as f:
            progress = json.load(f)
        self.global_step = progress["global_step"]
        self.resumed = {level: progress[level] for level in self.levels}
        where = ", ".join(f"{level} {index}" for level, index in self.resumed.items())
        accelerator.print(f"resuming from {latest} ({where})")
        return True

    def start(self, level: str, *outer: int) -> int:
        """Where the loop ``level`` starts, given the indices of the loops around it: at the restored index
        while every outer loop is at its restored index, at 0 after that (and in a fresh job)."""
        depth = self.levels.index(level)
        if len(outer) != depth:
            raise TypeError(f"start({level!r}) takes the indices of {self.levels[:depth]}, got {outer}")
        if self.resumed is None or any(self.resumed[self.levels[i]] != index for i, index in enumerate(outer)):
            return 0
        return self.resumed[level]

    def save(self, accelerator, global_step: int, **position: int) -> None:
        """Checkpoint ``accelerator``'s state at ``position`` (the index each loop resumes at): written to a
        temporary folder, renamed when complete; the oldest beyond ``keep`` are removed."""
        if set(position) != set(self.levels):
            raise TypeError(f"save() takes the position of every loop {self.levels}, got {sorted(position)}")
        self.global_step = global_step
        final = os.path.join(self.root, f"step-{global_step:08d}")
        tmp = final + ".tmp"
        accelerator.wait_for_everyone()
        if accelerator.is_main_process and os.path.exists(tmp):
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(tmp, safe_serialization=False)   # every process writes its part
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with open(os.path.join(tmp, PROGRESS_FILE), "w") as f:
                json.dump({**position, "global_step": global_step}, f, sort_keys=True)
            replace_path(tmp, final)
            for old in self.checkpoints()[:-self.keep]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()
