"""The Accelerate training loop the recipes and the demo share.

One process or many (``accelerate launch``): ``prepare``, gradient accumulation, the mixed-precision
flag, step-granular ``save_state``/``load_state`` resume (:class:`sparc.resumable.ResumableJob`; the
techniques' generators travel in the model's state), tqdm on the main process, evaluation with ``gather_for_metrics``, and logging through
accelerate's trackers. This is the only module of the library that builds an ``Accelerator``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Sampler


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64              # per process
    eval_batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"       # "no" | "fp16" | "bf16"
    max_grad_norm: Optional[float] = None
    seed: int = 0
    output_dir: Optional[str] = None  # checkpoints and logs; None keeps nothing on disk
    checkpoint_every: int = 0         # optimizer steps between checkpoints (0: at each epoch end)
    keep_checkpoints: int = 2
    resume: bool = True               # continue from the newest checkpoint in output_dir
    num_workers: int = 0
    progress: bool = True
    log_with: Optional[str] = "auto"  # "auto": tensorboard when installed and output_dir is set
    max_steps: Optional[int] = None   # stop after this many optimizer steps (tests, smoke runs)
    # Early stopping and the best epoch, on the eval set's ``best_metric`` (needs an eval set):
    early_stopping_patience: Optional[int] = None   # stop after this many evaluations without improvement
    keep_best: bool = False           # end with the best evaluation's weights and predictions
    best_metric: str = "accuracy"
    best_mode: str = "max"            # "max" or "min"


@dataclass
class TrainResult:
    losses: List[float] = field(default_factory=list)           # per optimizer step, this process
    terms: List[Dict[str, float]] = field(default_factory=list)
    eval_history: List[Dict[str, float]] = field(default_factory=list)
    metrics: Dict[str, float] = field(default_factory=dict)     # last evaluation
    predictions: Optional[torch.Tensor] = None                  # [N] predicted index per eval example
    global_step: int = 0
    best_epoch: Optional[int] = None                            # the best evaluation's epoch
    stopped_early: bool = False


class EpochShuffleSampler(Sampler):
    """A shuffle that depends only on (seed, epoch): a resumed run sees exactly the same order."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


def _resolve_priors(priors, batch: dict, qid_field: str):
    if priors is None:
        return None
    if callable(priors) and not hasattr(priors, "lookup"):
        return priors(batch)
    return priors.lookup(batch[qid_field])


def _tracker(config: TrainConfig):
    if config.log_with != "auto":
        return config.log_with
    if not config.output_dir:
        return None
    try:
        import tensorboard  # noqa: F401
        return "tensorboard"
    except ImportError:
        return None


def make_accelerator(config: TrainConfig, ddp_kwargs: Optional[dict] = None):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    handlers = [DistributedDataParallelKwargs(**ddp_kwargs)] if ddp_kwargs else []
    project = ProjectConfiguration(project_dir=config.output_dir or ".", automatic_checkpoint_naming=False)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=_tracker(config),
        project_config=project,
        kwargs_handlers=handlers,
    )


def predict_answer(output) -> torch.Tensor:
    """The default prediction of an eval forward: the highest-scoring candidate or answer."""
    return output.logits.argmax(dim=-1)


@torch.no_grad()
def evaluate(accelerator, model, loader, answer_field: str = "answer", index_field: str = "index",
             predict: Callable = predict_answer):
    """Accuracy over the whole eval set, gathered per example across processes (no duplicates).
    ``predict`` maps an eval forward's output to one row per example (default: the argmax answer; a
    count regression gives its value, a recipe may return several columns, e.g. answer and span);
    accuracy is counted where a prediction has the answer's shape."""
    model.eval()
    indices, preds, answers = [], [], []
    for batch in loader:
        pred = predict(model(batch))
        idx = batch[index_field] if index_field in batch else torch.arange(pred.shape[0], device=pred.device)
        idx, pred, ans = accelerator.gather_for_metrics((idx.to(pred.device), pred, batch[answer_field].to(pred.device)))
        indices.append(idx.cpu()); preds.append(pred.cpu()); answers.append(ans.cpu())
    model.train()
    idx, pred, ans = torch.cat(indices), torch.cat(preds), torch.cat(answers)
    order = torch.argsort(idx)
    metrics = {"num_examples": int(idx.numel())}
    if pred.shape == ans.shape:
        metrics = {"accuracy": float((pred == ans).float().mean()), **metrics}
    return metrics, pred[order]


def probe_ddp_kwargs(model, train_set, collate_fn, config: TrainConfig, priors, qid_field: str) -> Optional[dict]:
    """DistributedDataParallel's kwargs for a multi-process run: a wrapped model's probe step on the
    first training batch finds the parameters a step leaves without gradient (it leaves no trace)."""
    if not hasattr(model, "ddp_kwargs"):
        return None
    # The launcher's WORLD_SIZE, not accelerate's PartialState: creating that state before the
    # Accelerator changes how the Accelerator sets itself up (a 2-process CPU run then trains differently).
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return model.ddp_kwargs()
    device = next(iter(model.parameters()), torch.empty(0)).device   # where the user put the model
    batch = collate_fn([train_set[i] for i in range(min(config.batch_size, len(train_set)))])
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    found = _resolve_priors(priors, batch, qid_field)
    return model.ddp_kwargs(batch, None if found is None else torch.as_tensor(found).to(device))


def train(
    model,
    train_set,
    collate_fn: Callable,
    config: TrainConfig,
    *,
    eval_set=None,
    priors=None,
    optimizer=None,
    qid_field: Optional[str] = None,
    answer_field: Optional[str] = None,
    accelerator=None,
    description: str = "train",
    predict: Callable = predict_answer,
) -> TrainResult:
    """Train a wrapped model (``sparc.wrap``) or any module whose training forward returns ``.loss``.

    ``priors``: a PriorStore (looked up by ``batch[qid_field]``), a function ``batch -> [B, T, C]``,
    or None. Evaluation runs after every epoch on ``eval_set`` when given. ``qid_field`` and
    ``answer_field`` default to the wrapped model's adapter's (else "qid", "answer"). ``predict``
    turns an eval output into the per-example predictions (:func:`evaluate`).
    """
    adapter = getattr(model, "adapter", None)
    qid_field = qid_field or getattr(adapter, "qid_field", "qid")
    answer_field = answer_field or getattr(adapter, "answer_field", "answer")
    from accelerate import skip_first_batches
    from accelerate.utils import set_seed

    from sparc.early_stopping import EvalRecord
    from sparc.resumable import ResumableJob, progress_bar

    if accelerator is None:
        accelerator = make_accelerator(config, probe_ddp_kwargs(model, train_set, collate_fn, config, priors, qid_field))
    set_seed(config.seed, device_specific=True)  # dropout differs per process, reproducibly
    if hasattr(model, "reseed"):
        model.reseed(config.seed + accelerator.process_index)

    sampler = EpochShuffleSampler(len(train_set), config.seed)
    # The loader gets its own generator: creating an iterator would otherwise draw from the global
    # RNG, and a resumed run (which creates one more iterator) would see different dropout masks.
    train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_fn,
                              num_workers=config.num_workers, drop_last=False,
                              generator=torch.Generator().manual_seed(config.seed))
    eval_loader = None
    if eval_set is not None:
        eval_loader = DataLoader(eval_set, batch_size=config.eval_batch_size, shuffle=False, collate_fn=collate_fn,
                                 num_workers=config.num_workers, generator=torch.Generator().manual_seed(config.seed))
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if eval_loader is not None:
        model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)

    result = TrainResult()
    job = ResumableJob(config.output_dir, ("epoch", "batch"), keep=config.keep_checkpoints)
    if config.resume:
        job.restore(accelerator)
    result.global_step = job.global_step
    if (config.early_stopping_patience or config.keep_best) and eval_loader is None:
        raise ValueError("early stopping and keep_best compare evaluations: pass eval_set")
    record = EvalRecord(config.output_dir, config.best_metric, config.best_mode, config.early_stopping_patience,
                        keep_weights=config.keep_best)
    record.restore(job.start("epoch"))
    result.eval_history = list(record.history)
    unwrapped = lambda: accelerator.unwrap_model(model).state_dict()
    if accelerator.trackers == [] and _tracker(config):
        accelerator.init_trackers("sparc", config={k: v for k, v in asdict(config).items() if isinstance(v, (int, float, str, bool))})

    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total = steps_per_epoch * config.epochs
    bar = progress_bar(total, result.global_step, description, config.progress and accelerator.is_local_main_process)
    model.train()
    done = record.should_stop()          # a resumed run whose patience was already spent
    result.stopped_early = done
    for epoch in range(job.start("epoch"), config.epochs if not done else 0):
        skip_batches = job.start("batch", epoch)
        loader = skip_first_batches(train_loader, skip_batches) if skip_batches else train_loader
        # Accelerate's loaders re-set the sampler's epoch from their own iteration counter at every
        # __iter__; a fresh (resumed or skipping) loader would restart at 0, so tell it the epoch.
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):     # a dataset whose items depend on the epoch, on every process
            train_set.set_epoch(epoch)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch_in_epoch, batch in enumerate(loader, start=skip_batches):
            with accelerator.accumulate(model):
                out = model(batch, priors=_resolve_priors(priors, batch, qid_field))
                accelerator.backward(out.loss)
                if config.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            result.global_step += 1
            loss = float(out.loss.detach())
            result.losses.append(loss)
            result.terms.append({k: float(v.detach()) for k, v in getattr(out, "terms", {}).items()})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch)
            if accelerator.trackers:
                accelerator.log({"train/loss": loss, **{f"train/{k}": v for k, v in result.terms[-1].items()}}, step=result.global_step)
            if config.output_dir and config.checkpoint_every and result.global_step % config.checkpoint_every == 0:
                job.save(accelerator, result.global_step, epoch=epoch, batch=batch_in_epoch + 1)
            if config.max_steps and result.global_step >= config.max_steps:
                done = True
                break
        if eval_loader is not None and not done:
            metrics, result.predictions = evaluate(accelerator, model, eval_loader, answer_field, predict=predict)
            result.metrics = metrics
            record.add(epoch, metrics, unwrapped, accelerator.is_main_process)
            result.eval_history = list(record.history)
            if accelerator.trackers:
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=result.global_step)
        if config.output_dir and not config.checkpoint_every and not done:
            job.save(accelerator, result.global_step, epoch=epoch + 1, batch=0)
        if done:
            break
        if record.should_stop():
            result.stopped_early = done = True
            break
    bar.close()
    result.best_epoch = record.best_epoch
    last = record.history[-1]["epoch"] if record.history else None
    if config.keep_best and record.best_epoch is not None and (record.best_epoch != last or result.predictions is None):
        accelerator.wait_for_everyone()               # the main process has written the best weights
        accelerator.unwrap_model(model).load_state_dict(record.best_weights())
        result.metrics, result.predictions = evaluate(accelerator, model, eval_loader, answer_field, predict=predict)
    elif eval_loader is not None and ((done and not result.stopped_early) or result.predictions is None):
        result.metrics, result.predictions = evaluate(accelerator, model, eval_loader, answer_field, predict=predict)
    if accelerator.trackers:
        accelerator.end_training()
    return result
