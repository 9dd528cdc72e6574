"""The evaluations of a training run, the best of them and its weights: what early stopping and
keeping the best epoch need, kept beside the checkpoints so that a resumed run counts on.

``OUTPUT/best/history.json`` holds every epoch's metrics; ``OUTPUT/best/model.pt`` the weights of the
best epoch so far (when the run keeps them). A run killed after an evaluation but before that epoch's
checkpoint repeats the epoch on resume; the history drops the entries of epochs it will repeat.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional

import torch


def improved(value: float, best: Optional[float], mode: str) -> bool:
    """``value`` is better than ``best`` (None: nothing yet) in ``mode`` "max" or "min"; ties do not improve."""
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def epochs_since_best(history: List[Dict[str, float]], metric: str, mode: str) -> int:
    """Evaluations after the best one (the first best, where several tie)."""
    best, since = None, 0
    for entry in history:
        if metric not in entry:
            continue
        if improved(entry[metric], best, mode):
            best, since = entry[metric], 0
        else:
            since += 1
    return since


class EvalRecord:
    """The run's evaluations, the best one's epoch, its weights (``keep_weights``), and whether the
    ``patience`` (evaluations without improvement) is spent."""

    def __init__(self, output_dir: Optional[str], metric: str = "accuracy", mode: str = "max",
                 patience: Optional[int] = None, keep_weights: bool = False):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be >= 1 evaluation, got {patience}")
        self.folder = None if output_dir is None else os.path.join(output_dir, "best")
        self.metric, self.mode, self.patience, self.keep_weights = metric, mode, patience, keep_weights
        self.history: List[Dict[str, float]] = []
        self.best_epoch: Optional[int] = None
        self._weights: Optional[dict] = None        # in memory when there is no output folder

    @property
    def best(self) -> Optional[float]:
        entries = [e for e in self.history if e["epoch"] == self.best_epoch]
        return entries[0][self.metric] if entries else None

    def restore(self, start_epoch: int) -> None:
        """Read the history of a run resumed at ``start_epoch`` (entries of later epochs are dropped)."""
        if self.folder is None or not os.path.exists(os.path.join(self.folder, "history.json")):
            return
        with open(os.path.join(self.folder, "history.json")) as f:
            saved = json.load(f)
        self.history = [e for e in saved["history"] if e["epoch"] < start_epoch]
        best_epoch = saved.get("best_epoch")
        self.best_epoch = best_epoch if best_epoch is not None and best_epoch < start_epoch else None
        if self.best_epoch is None and self.history:    # the saved best was an epoch that will be repeated
            self.best_epoch = self._best_of_history()

    def _best_of_history(self) -> Optional[int]:
        best, epoch = None, None
        for e in self.history:
            if self.metric in e and improved(e[self.metric], best, self.mode):
                best, epoch = e[self.metric], e["epoch"]
        return epoch

    def add(self, epoch: int, metrics: Dict[str, float], state_dict: Callable[[], dict], is_main: bool) -> bool:
        """Record ``epoch``'s evaluation; on improvement keep the weights (``state_dict()``). Returns
        whether it improved. Only the main process writes files."""
        self.history.append({"epoch": epoch, **metrics})
        if self.metric not in metrics:
            if self.patience is not None or self.keep_weights:
                raise ValueError(f"early stopping and keep_best watch {self.metric!r}, which the evaluation does not "
                                 f"report (it reports {sorted(metrics)}; TrainConfig.best_metric)")
            return False
        better = improved(metrics[self.metric], self.best, self.mode)
        if better:
            self.best_epoch = epoch
            if self.keep_weights:
                weights = {k: v.detach().cpu().clone() for k, v in state_dict().items()}
                if self.folder is None:
                    self._weights = weights
                elif is_main:
                    os.makedirs(self.folder, exist_ok=True)
                    torch.save(weights, os.path.join(self.folder, "model.pt.tmp"))
                    os.replace(os.path.join(self.folder, "model.pt.tmp"), os.path.join(self.folder, "model.pt"))
        if self.folder is not None and is_main:
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, "history.json.tmp"), "w") as f:
                json.dump({"metric": self.metric, "mode": self.mode, "best_epoch": self.best_epoch,
                           "history": self.history}, f, indent=1)
            os.replace(os.path.join(self.folder, "history.json.tmp"), os.path.join(self.folder, "history.json"))
        return better

    def should_stop(self) -> bool:
        return self.patience is not None and epochs_since_best(self.history, self.metric, self.mode) >= self.patience

    def best_weights(self) -> Optional[dict]:
        if self._weights is not None:
            return self._weights
        if self.folder is not None and os.path.exists(os.path.join(self.folder, "model.pt")):
            return torch.load(os.path.join(self.folder, "model.pt"), map_location="cpu", weights_only=True)
        return None


__all__ = ["EvalRecord", "improved", "epochs_since_best"]
