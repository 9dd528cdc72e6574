"""A pretraining stage before a recipe's main stage: its own resumable run folder ``OUTPUT/pretrain/``,
its final weights handed to the main stage's fresh model (paper 002, Kim et al. AAAI 2021, 3.2: the
question-prediction stage "with a better parameter initialization"; the transform is
:mod:`sparc.data.question_prediction`).

- :func:`pretrain` trains the plain answer loss (no technique, no priors) on the stage's train set
  with :func:`sparc.train.train` into ``OUTPUT/pretrain/`` (checkpoints, so a killed stage resumes),
  then the main process writes ``weights.pt`` (the backbone's state dict) and, last, ``summary.json``.
  A run that finds ``summary.json`` reuses the weights and trains nothing; a run whose main stage has
  already checkpointed (``OUTPUT/checkpoints/``) skips the stage (the main stage resumes on its own).
- :func:`start_main_stage` loads those weights into the main stage's fresh backbone (before it is
  wrapped) unless the main stage has a checkpoint, which it then resumes from instead;
  ``OUTPUT/main_stage_start.json`` records where the main stage started (and survives a resume).

Both records carry :func:`weights_digest` of the weights (the stage's final, the main stage's initial)
so a report shows the main stage started from the pretrained weights.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch

__all__ = ["Pretraining", "pretrain", "start_main_stage", "stage_config", "weights_digest", "PRETRAIN_DIR"]

PRETRAIN_DIR = "pretrain"
WEIGHTS, SUMMARY, START = "weights.pt", "summary.json", "main_stage_start.json"


def _is_main() -> bool:
    # The launcher's RANK: no accelerate state is created before the main stage's Accelerator.
    return int(os.environ.get("RANK", "0")) == 0


def weights_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and values (in name order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def stage_config(main, epochs: int, lr: float, output: str):
    """The pretraining stage's ``TrainConfig``: the main stage's (batch sizes, weight decay, clipping,
    seed, workers) with the stage's epochs and learning rate, its own folder, no early stopping, no
    best model, no step cap (``--max-steps`` stops the main stage)."""
    return dataclasses.replace(main, epochs=int(epochs), lr=float(lr), output_dir=str(output),
                               early_stopping_patience=None, keep_best=False, max_steps=None)


def _main_checkpoints(output) -> list:
    from sparc.resumable import ResumableJob

    return ResumableJob(str(output), ("epoch", "batch")).checkpoints()


@dataclass
class Pretraining:
    """The stage's record (``summary``, for results.json) and its final weights (None: none to load)."""

    summary: dict
    weights: Optional[Dict[str, torch.Tensor]] = None


def pretrain(output, build: Callable[[], torch.nn.Module], adapter, make_sets: Callable[[], Tuple[object, object]],
             collate_fn: Callable, config, *, epochs: int, lr: float, describe: Optional[dict] = None) -> Pretraining:
    """Run (or reuse) the pretraining stage of the run in ``output``.

    ``build()`` makes the backbone as the main stage makes it (same seed); ``make_sets()`` gives
    ``(train set, eval set or None)``, built only when the stage trains; ``config`` is the main stage's
    ``TrainConfig`` (:func:`stage_config` derives the stage's). ``describe``: extra fields for the
    summary (e.g. the transform's). ``epochs`` 0: no stage."""
    folder = Path(output) / PRETRAIN_DIR
    asked = {"epochs": int(epochs), "lr": float(lr)}
    if epochs <= 0:
        return Pretraining({"epochs": 0, "note": "no pretraining stage (--pretrain-epochs 0)"})
    if (folder / SUMMARY).exists():
        summary = json.loads((folder / SUMMARY).read_text())
        if {k: summary.get(k) for k in asked} != asked:
            raise ValueError(f"{folder / SUMMARY}: this run's pretraining finished with {summary.get('epochs')} epochs "
                             f"at lr {summary.get('lr')}, the configuration now asks for {epochs} at {lr}; give another "
                             f"--output or remove {folder} (field: pretrain)")
        if not (folder / WEIGHTS).exists():
            raise ValueError(f"{folder / WEIGHTS}: the pretraining's weights are missing beside its summary; remove "
                             f"{folder} to pretrain again (field: weights)")
        weights = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        return Pretraining(dict(summary, reused=True), weights)
    if _main_checkpoints(output):
        return Pretraining({**asked, "skipped": f"the main stage in {output} had already started without a finished "
                                                f"pretraining stage; it resumes from its own checkpoint"})

    from sparc.train import train
    from sparc.wrap import wrap

    train_set, eval_set = make_sets()
    model = wrap(build(), adapter, [])
    result = train(model, train_set, collate_fn, stage_config(config, epochs, lr, str(folder)), eval_set=eval_set,
                   description="pretrain")
    weights = {k: v.detach().cpu().clone() for k, v in model.model.state_dict().items()}
    losses = result.losses
    summary = {**asked, "batch_size": config.batch_size, "steps": result.global_step,
               "final_loss": losses[-1] if losses else None,
               "mean_loss": sum(losses) / len(losses) if losses else None,
               "steps_this_run": len(losses), "eval": result.metrics, "eval_history": result.eval_history,
               "loss": "the plain answer loss over the question candidates (no technique, no priors)",
               "weights": str(folder / WEIGHTS), "weights_digest": weights_digest(weights), **(describe or {})}
    if _is_main():
        tmp = folder / (WEIGHTS + ".tmp")
        torch.save(weights, tmp)
        os.replace(tmp, folder / WEIGHTS)
        (folder / (SUMMARY + ".tmp")).write_text(json.dumps(summary, indent=1))
        os.replace(folder / (SUMMARY + ".tmp"), folder / SUMMARY)     # last: the stage is finished
    del model, result
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return Pretraining(summary, weights)


def start_main_stage(output, backbone: torch.nn.Module, stage: Pretraining) -> dict:
    """Put the pretrained weights into the main stage's fresh ``backbone`` (before wrapping), unless
    the main stage has a checkpoint in ``output`` (then :func:`sparc.train.train` resumes from it and
    nothing is loaded). Returns the main stage's start record (kept in ``OUTPUT/main_stage_start.json``)."""
    path = Path(output) / START
    found = _main_checkpoints(output)
    if found:
        record = json.loads(path.read_text()) if path.exists() else {}
        return {**record, "resumed_from": found[-1]}
    if stage.weights is not None:
        try:
            backbone.load_state_dict(stage.weights)
        except RuntimeError as e:
            raise ValueError(f"{Path(output) / PRETRAIN_DIR / WEIGHTS}: the pretrained weights do not fit the main "
                             f"stage's model ({e}) (field: weights)") from None
    record = {"from": "the pretraining stage's final weights" if stage.weights is not None else "initialisation",
              "initial_weights_digest": weights_digest(backbone.state_dict())}
    if _is_main():
        Path(output).mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
    return record
