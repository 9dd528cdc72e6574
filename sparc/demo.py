"""``sparc demo``: SpARC's ablation on the embedded synthetic benchmark, end to end.

1. generate the benchmark (teacher / train / test splits; docs/synthetic.md has its specification);
2. train the image-QA teacher on the teacher split: image-QA training on the frames that show what the
   question asks, then SpARC A.1's fine-tuning on frames sampled uniformly from each video, labelled
   with the question's answer (it never sees a train or test label);
3. extract its priors for every (frame, question) of train and test into PriorStores, and score the
   teacher's selection against the true causal frames; print the non-learned baselines;
4. train the backbone (HGA unless ``--backbone`` names another) once per (config, seed), with the same
   budget, data order and initialisation per seed (the runs are spread over worker processes, one
   thread each, plain starting while the teacher trains; every run is seeded, so results do not
   depend on which worker ran it);
5. evaluate on the held-out test split after every epoch; print the table with a verdict per row
   against plain (paired by seed); write results.json and a PNG.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import queue
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from sparc.teachers.synthetic import (FINETUNE_EPOCHS, FINETUNE_LR, PRETRAIN_EPOCHS, teacher_frames,
                                     train_synthetic_teacher)

# Every config of the ablation: a label and the techniques it wraps, each (name, keyword arguments).
# "T" is SpARC's temporal guidance (guided CE + consistency KL), "S" spatial distillation, "TGM"
# temporal-guided mixup, "mixup" vanilla mixup (SpARC Table 7's "normal"). The paper's objective is
# TemporalGuidance(); "detach" and "whole-CE" are the two variants docs/concepts.md discusses.
CONFIGS: Dict[str, Tuple[Tuple[str, dict], ...]] = {
    "plain": (),
    "+T": (("T", {}),),
    "+S": (("S", {}),),
    "+T+S": (("T", {}), ("S", {})),
    "+T+S+TGM": (("T", {}), ("S", {}), ("TGM", {})),
    "+T+S+mixup": (("T", {}), ("S", {}), ("mixup", {})),
    "+T+S detach": (("T", {"detach_guided": True}), ("S", {})),
    "+T+S whole-CE": (("T", {"whole_ce_weight": 1.0}), ("S", {})),
    "+T+S detach+whole-CE": (("T", {"detach_guided": True, "whole_ce_weight": 1.0}), ("S", {})),
}
PAPER_ROWS = ("plain", "+T", "+S", "+T+S", "+T+S+TGM")   # SpARC Table 5 (`sparc demo --configs`)
# The demo's default rows: plain, the paper's objective and the variant that did best over the five
# backbones (docs/synthetic.md). Three rows x three seeds is what fits in 5 minutes on 2 cores.
DEMO_ROWS = ("plain", "+T+S", "+T+S whole-CE")
TINY_ENV = "SPARC_DEMO_TINY"   # SPARC_DEMO_TINY=1: a seconds-long run (the README test uses it)


def run_cost(label: str, settings: Optional["DemoSettings"] = None) -> float:
    """Relative cost of one training run (measured on CPU): the most expensive are handed out first."""
    if settings is None:
        names = [name for name, _ in CONFIGS[label]]
    else:
        names = [name for name, _ in row_of(settings, label).techniques]
    cost = (1.0 + 0.9 * ("T" in names) + 0.75 * ("S" in names) + 0.2 * ("span" in names)
            + 0.5 * ("attention" in names) + 0.5 * ("contrastive" in names))
    return cost * (3.0 if "TGM" in names or "mixup" in names else 1.0)


@dataclass
class DemoSettings:
    seeds: tuple = (0, 1, 2)
    configs: tuple = DEMO_ROWS
    epochs: int = 10                     # the 5-minute budget; docs/synthetic.md has every row at 24 epochs
    batch_size: int = 256
    lr: float = 3e-3
    hidden: int = 32
    threshold: float = 0.5
    train_size: int = 3000
    test_size: int = 1000
    teacher_size: int = 2000
    teacher_pretrain_epochs: int = PRETRAIN_EPOCHS   # see sparc.teachers.synthetic
    teacher_epochs: int = FINETUNE_EPOCHS
    teacher_lr: float = FINETUNE_LR
    workers: int = 2
    quick: bool = False
    backbone: str = "hga"
    benchmark: tuple = ()                # SyntheticConfig overrides, (name, value) pairs
    rows: tuple = ()                     # rows named by --techniques / --frames (sparc.demo_rows.Row)

    @classmethod
    def make(cls, quick: bool, backbone: str = "hga", **overrides) -> "DemoSettings":
        from sparc.backbones import BACKBONES

        if os.environ.get(TINY_ENV, "") not in ("", "0"):
            settings = cls(seeds=(0,), configs=("plain", "+T+S"), epochs=1, train_size=128, test_size=64,
                           teacher_size=128, teacher_pretrain_epochs=1, teacher_epochs=1, quick=True)
        elif quick:
            settings = cls(seeds=(0,), configs=("plain", "+T+S", "+T+S whole-CE"), epochs=3, train_size=2048,
                           test_size=500, teacher_size=1000, teacher_epochs=3, quick=True)
        else:
            settings = cls()
        backbone_overrides = dict(BACKBONES.get(backbone, "demo").settings)
        if settings.quick:  # a quick run keeps its smaller budget
            backbone_overrides = {k: v for k, v in backbone_overrides.items()
                                  if k not in ("epochs", "train_size", "test_size", "seeds")}
        settings = replace(settings, backbone=backbone, **backbone_overrides)
        given = {k: v for k, v in overrides.items() if v is not None}
        techniques, frames = given.pop("techniques", None), tuple(given.pop("frames", ()))
        if frames and techniques is None:
            raise ValueError("--frames retrains a row of --techniques on other causal frames; give --techniques too")
        if "configs" in given:
            unknown = [c for c in given["configs"] if c not in CONFIGS]
            if unknown:
                raise ValueError(f"unknown demo config(s) {unknown}; choose from {list(CONFIGS)}")
            given["configs"] = tuple(dict.fromkeys(["plain", *given["configs"]]))  # plain is the reference
        if techniques is not None:
            from sparc.demo_rows import technique_rows

            rows = technique_rows(techniques, frames, settings.threshold)
            given["rows"] = rows
            given["configs"] = tuple(dict.fromkeys([*given.get("configs", ("plain",)), *(r.label for r in rows)]))
        if "seeds" in given:
            given["seeds"] = tuple(given["seeds"])
        return replace(settings, **given)

    @property
    def title(self) -> str:
        from sparc.backbones import BACKBONES

        return BACKBONES.get(self.backbone).title

    def describe(self) -> str:
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        return (f"{self.title}, {self.epochs} epochs x {self.train_size} train questions, "
                f"{self.test_size} test questions, test accuracy %, mean ± std over {seeds}")


def build_techniques(names, threshold: float):
    """The techniques of one config: ``names`` is a config label (a key of :data:`CONFIGS`) or a list
    of ``(technique, kwargs)`` pairs / technique names (:data:`sparc.technique_names.TECHNIQUES`)."""
    from sparc.demo_rows import build

    if isinstance(names, str):
        if names not in CONFIGS:
            raise ValueError(f"unknown demo config {names!r}; choose from {list(CONFIGS)}")
        names = CONFIGS[names]
    return build(names, threshold)


def row_of(settings: DemoSettings, label: str):
    """The row ``label`` of the settings (:class:`sparc.demo_rows.Row`): one named by ``--techniques`` /
    ``--frames``, else a config of :data:`CONFIGS`."""
    from sparc.demo_rows import row_of as find

    return find(settings.rows, CONFIGS, label)


def check_rows(settings: DemoSettings, bench, labels) -> None:
    """One training step of every row in ``labels`` on four train questions with uniform priors (the
    global RNG restored after), so that a row that cannot run fails before the teacher trains, with
    the row's label in the message."""
    import sparc
    from sparc.backbones import BACKBONES
    from sparc.demo_rows import build_row

    backbone = BACKBONES.get(settings.backbone, "demo")
    train = bench.dataset("train")
    batch = backbone.collate(bench, [train[i] for i in range(min(4, len(train)))])
    c = bench.config
    priors = torch.full((len(batch["qid"]), c.num_frames, c.num_candidates), 1.0 / c.num_candidates)
    with torch.random.fork_rng(devices=[]):
        for label in labels:
            try:
                techniques, frames = build_row(row_of(settings, label), settings.threshold)
                wrapped = sparc.wrap(backbone.build(bench, settings.hidden), backbone.adapter(), techniques,
                                     frames=frames)
                wrapped.train()
                wrapped(batch, priors=priors).loss.backward()
            except (ValueError, TypeError, KeyError) as e:
                raise ValueError(f"demo row {label!r} cannot train {settings.title}: {e}") from None


def against_teacher_frames(table: Dict[str, Dict], settings: DemoSettings) -> Dict[str, Dict]:
    """Per row trained on other causal frames (``--frames``): its paired difference from the row with
    the same techniques on the teacher's frames, with the verdict rule of :func:`verdict_against_plain`."""
    out = {}
    for label, row in table.items():
        spec = row_of(settings, label)
        reference = next((r.label for r in settings.rows if spec.frames != "teacher"
                          and r.techniques == spec.techniques and r.frames == "teacher"), None)
        if reference is None or reference not in table:
            continue
        verdict = verdict_against_plain(np.array(row["per_seed"]) - np.array(table[reference]["per_seed"]))
        verdict["verdict"] = verdict["verdict"].replace("plain", "teacher frames")
        out[label] = {"reference": reference, **verdict}
    return out


# ---- the teacher ------------------------------------------------------------------------------------

def train_teacher(bench, settings: DemoSettings, log):
    """The synthetic benchmark's teacher (:func:`sparc.teachers.synthetic.train_synthetic_teacher`) at the
    settings' budget."""
    return train_synthetic_teacher(bench, settings.teacher_pretrain_epochs, settings.teacher_epochs,
                                   settings.teacher_lr, log)


def extract_split_priors(bench, teacher, split_name: str, path: str):
    from sparc.priors.extract import extract_priors

    split = bench.splits[split_name]
    questions, candidates = bench.teacher_inputs(split_name)
    frames = teacher_frames(split)
    videos = ((frames[i], [split.qids[i]], questions[i:i + 1], candidates[i:i + 1]) for i in range(len(split)))
    return extract_priors(teacher, videos, path, num_frames=bench.config.num_frames,
                          num_candidates=bench.config.num_candidates,
                          metadata={"teacher": "FrameQATeacher", "split": split_name})


# ---- what the teacher and the non-learned baselines get right -------------------------------------

def question_groups(split) -> Dict[str, np.ndarray]:
    """Rows of every question, of the "what does s do?" ones and of the first / last ones."""
    return {"all": np.ones(len(split.answer), bool), "what": ~split.temporal, "first/last": split.temporal}


def selection_quality(store, split, threshold: float) -> Dict[str, Dict[str, float]]:
    """How well ``P[t, a] > threshold`` recovers the frames that truly answer each question, and how
    often the teacher's argmax is the answer on those frames and on the others; per question group."""
    import sparc

    priors = store.lookup(split.qids)
    answer = torch.from_numpy(split.answer)
    keep = sparc.select_causal_frames(priors, answer, threshold, empty="skip").numpy()
    right = (priors.argmax(-1) == answer[:, None]).numpy()
    out = {}
    for name, rows in question_groups(split).items():
        k, truth, r = keep[rows], split.causal[rows], right[rows]
        out[name] = {
            "kept_fraction": float(k.mean()),
            "precision": float((k & truth).sum() / max(k.sum(), 1)),
            "recall": float((k & truth).sum() / max(truth.sum(), 1)),
            "empty_rate": float((~k.any(1)).mean()),
            "teacher_accuracy_on_causal_frames": float(r[truth].mean()),
            "teacher_accuracy_on_other_frames": float(r[~truth].mean()),
        }
    return out


def _vote_accuracy(scores: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Per question, the chance that the argmax of ``scores [N, C]`` is the answer, ties split evenly."""
    best = scores >= scores.max(axis=1, keepdims=True) - 1e-12
    return best[np.arange(len(answer)), answer] / best.sum(axis=1)


def baselines(store, split) -> Dict[str, Dict[str, float]]:
    """Accuracy (%) of answers that learn nothing from the train split, per question group: the
    teacher's vote (its mean probability over the video's frames), and counting how many slots show
    each candidate action, on the whole video and on the true causal frames only."""
    priors = store.lookup(split.qids).numpy()
    shown = split.frame_action[:, :, :, None] == split.candidates[:, None, None, :]     # [N, T, P, C]
    rules = {
        "teacher vote over frames": _vote_accuracy(priors.mean(axis=1), split.answer),
        "counting candidates, whole video": _vote_accuracy(shown.sum((1, 2)).astype(float), split.answer),
        "counting candidates, causal frames": _vote_accuracy(
            (shown & split.causal[:, :, None, None]).sum((1, 2)).astype(float), split.answer),
    }
    return {rule: {name: float(acc[rows].mean() * 100) for name, rows in question_groups(split).items()}
            for rule, acc in rules.items()}


# ---- one training run -----------------------------------------------------------------------------

def run_config(bench, label: str, seed: int, settings: DemoSettings, priors) -> Dict:
    import sparc
    from sparc.backbones import BACKBONES
    from sparc.train import TrainConfig, train

    from sparc.demo_rows import build_row

    backbone = BACKBONES.get(settings.backbone, "demo")
    torch.manual_seed(seed)
    model = backbone.build(bench, settings.hidden)
    techniques, frames = build_row(row_of(settings, label), settings.threshold)
    wrapped = sparc.wrap(model, backbone.adapter(), techniques, frames=frames)
    train_set, test_set = bench.dataset("train"), bench.dataset("test")
    collate = partial(backbone.collate, bench)
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=seed,
                         eval_batch_size=500, log_with=None, output_dir=None, progress=False)
    result = train(wrapped, train_set, collate, config, eval_set=test_set, priors=priors)
    # Does the answer follow the asked subject? The subject swapped for the video's other one, who does
    # other actions: a model that reads the subject changes its answer, one that answers from what it
    # sees does not.
    swapped = predict(wrapped, bench.dataset("test", qa_tokens=bench.swap_asked_subject("test")), collate)
    predictions = result.predictions.numpy()
    correct = predictions == bench.splits["test"].answer
    run = {"accuracy": result.metrics["accuracy"], "curve": [h["accuracy"] for h in result.eval_history],
           "accuracy_by_group": {name: float(correct[rows].mean()) if rows.any() else float("nan")
                                 for name, rows in question_groups(bench.splits["test"]).items()},
           "answer_changes_with_subject": float((swapped != predictions).mean()),
           "final_loss": result.losses[-1]}
    if "span_logits" in getattr(wrapped.adapter, "outputs", ()):
        # Localisation, as TVQA+ scores it: the predicted answer's most likely span against the true span;
        # and on the correct answer's hypothesis (what the span loss trains), how often its start and end
        # land on the true ones, and how long its spans are.
        first, last = bench.splits["test"].span
        spans = predict_spans(wrapped, bench.dataset("test"), collate)
        (start, end), (gt_start, gt_end) = spans["predicted"], spans["correct"]
        run.update(span_iou=float(frame_span_iou(start, end, first, last).mean()),
                   span_iou_correct_answer=float(frame_span_iou(gt_start, gt_end, first, last).mean()),
                   span_start_hit=float((gt_start == first).mean()), span_end_hit=float((gt_end == last).mean()),
                   span_length=float((gt_end - gt_start + 1).mean()))
    if "attention" in getattr(wrapped.adapter, "outputs", ()):
        # Grounding: where the correct hypothesis' words have a labelled region, is the best-scored one it?
        run["attention_hit"] = attention_hit_rate(wrapped, bench.dataset("test"), collate)
    return run


@torch.no_grad()
def predict(model, dataset, collate, batch_size: int = 500) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        out.append(model(batch).logits.argmax(-1))
    model.train()
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_spans(model, dataset, collate, batch_size: int = 500) -> Dict[str, tuple]:
    """``{"predicted": (start, end), "correct": (start, end)}``, ``[N]`` frame positions (end inclusive):
    the most likely span, ``argmax_{s <= e} p_start[s] · p_end[e]`` (``find_max_pair``, TVQA+'s
    inference), of each question's predicted answer and of its correct answer."""
    from sparc.data.tvqa_inference import find_max_pair

    model.eval()
    spans = {"predicted": [], "correct": []}
    for begin in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))])
        out = model(batch)
        rows = torch.arange(out.logits.shape[0])
        for name, answer in (("predicted", out.logits.argmax(-1)), ("correct", torch.as_tensor(batch["answer"]))):
            p_start, p_end = (torch.softmax(x[rows, answer].float(), dim=-1) for x in out.span_logits)
            spans[name] += [find_max_pair(a.tolist(), b.tolist())[0] for a, b in zip(p_start, p_end)]
    model.train()
    return {name: tuple(np.array(pairs).T) for name, pairs in spans.items()}


@torch.no_grad()
def attention_hit_rate(model, dataset, collate, batch_size: int = 500) -> float:
    """Over the (question, frame, word) cells of the correct answer's hypothesis that have a labelled
    region (``att_labels``), the share whose highest attention score among the real regions
    (``vid_mask``) falls on a labelled one."""
    model.eval()
    hits = cells = 0
    for begin in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))])
        out = model(batch)
        answer = torch.as_tensor(batch["answer"])
        scores = out.attention[torch.arange(len(answer)), answer].float()            # [B, T, L, R]
        h, n = top_region_hits(scores, batch["att_labels"] > 0, batch["vid_mask"] > 0)
        hits, cells = hits + h, cells + n
    model.train()
    return hits / max(cells, 1)


def top_region_hits(scores: torch.Tensor, positive: torch.Tensor, regions: torch.Tensor) -> Tuple[int, int]:
    """``(hits, cells)``: of the ``[B, T, L]`` cells with a positive region, how many have their best
    real region (``regions [B, T, R]``) among the positives (``positive [B, T, L, R]``)."""
    masked = scores.masked_fill(~regions[:, :, None, :], float("-inf"))
    best = masked.argmax(dim=-1, keepdim=True)                                        # [B, T, L, 1]
    labelled = positive.any(dim=-1)
    hit = positive.gather(-1, best).squeeze(-1) & labelled
    return int(hit.sum()), int(labelled.sum())


def frame_span_iou(start, end, true_start, true_end) -> np.ndarray:
    """IoU of frame spans ``[start, end]`` (inclusive, frames as unit intervals), elementwise."""
    start, end, true_start, true_end = (np.asarray(x, dtype=np.int64) for x in (start, end, true_start, true_end))
    overlap = np.clip(np.minimum(end, true_end) - np.maximum(start, true_start) + 1, 0, None)
    union = np.maximum(end, true_end) - np.minimum(start, true_start) + 1
    return overlap / union


# ---- worker processes ---------------------------------------------------------------------------
_worker_bench = None


def _init_worker(bench) -> None:
    global _worker_bench
    torch.set_num_threads(1)  # one core per worker: the workers themselves use the machine's cores
    _worker_bench = bench
    # Imported here, while the teacher trains, not inside the first run (Adam's first construction
    # imports torch._dynamo, which takes seconds).
    for module in ("accelerate", "torch._dynamo", "sparc.adapters", "sparc.train"):
        importlib.import_module(module)


def _run_job(job):
    label, seed, settings, priors = job
    start, cpu = time.time(), time.process_time()
    out = run_config(_worker_bench, label, seed, settings, priors)
    return label, seed, {**out, "seconds": time.time() - start, "cpu_seconds": time.process_time() - cpu}


class _Runs:
    """The (config, seed) training runs, on the worker pool (or in this process without one). Runs can
    be submitted before the teacher's priors exist (plain needs none); results come back in the fixed
    order of the settings whatever order they finish in."""

    def __init__(self, pool, settings: DemoSettings):
        self.pool, self.settings = pool, settings
        self.waiting: List[tuple] = []         # jobs for this process (no pool)
        self.finished = queue.Queue()          # filled by the pool's result thread
        self.count = 0

    def submit(self, labels, priors) -> None:
        jobs = sorted(((label, seed, self.settings, priors) for label in labels for seed in self.settings.seeds),
                      key=lambda job: -run_cost(job[0], self.settings))
        self.count += len(jobs)
        for job in jobs:
            if self.pool is None:
                self.waiting.append(job)
            else:
                self.pool.apply_async(_run_job, (job,), callback=self.finished.put, error_callback=self.finished.put)

    def collect(self) -> Dict[str, List[Dict]]:
        from tqdm.auto import tqdm

        results = {}
        with tqdm(total=self.count, desc=f"{self.settings.title} training runs", dynamic_ncols=True) as bar:
            for _ in range(self.count):
                done = self.finished.get() if self.pool is not None else _run_job(self.waiting.pop(0))
                if isinstance(done, BaseException):
                    raise done
                label, seed, out = done
                results[label, seed] = out
                bar.set_postfix_str(f"{label} seed {seed}: {out['accuracy']:.1%}")
                bar.update(1)
        return {label: [results[label, seed] for seed in self.settings.seeds] for label in self.settings.configs}


# ---- the table and its reading ----------------------------------------------------------------------

def summarize(runs: Dict[str, List[Dict]]) -> Dict[str, Dict]:
    """Per config: accuracy mean/std over seeds, per seed, per question type, the subject-swap rate,
    and the difference from plain paired by seed (same data order and initialisation)."""
    table = {}
    plain = np.array([r["accuracy"] for r in runs["plain"]]) * 100 if "plain" in runs else None
    for label, rs in runs.items():
        acc = np.array([r["accuracy"] for r in rs]) * 100
        row = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
               "per_seed": acc.tolist(),
               "subject_swap_changes": float(np.mean([r["answer_changes_with_subject"] for r in rs]) * 100),
               "by_group": {g: float(np.mean([r["accuracy_by_group"][g] for r in rs]) * 100)
                            for g in rs[0]["accuracy_by_group"]},
               "curve": (np.mean([r["curve"] for r in rs], axis=0) * 100).tolist()}
        for name in ("span_iou", "span_iou_correct_answer", "span_start_hit", "span_end_hit", "span_length",
                     "attention_hit"):
            if name in rs[0]:
                values = np.array([r[name] for r in rs]) * (1 if name == "span_length" else 100)
                row[name] = {"mean": float(values.mean()), "per_seed": values.tolist(),
                             "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        if plain is not None and label != "plain":
            row.update(verdict_against_plain(acc - plain))
        table[label] = row
    return table


def verdict_against_plain(delta: np.ndarray) -> Dict:
    """Paired differences from plain, one per seed. A row beats (or trails) plain when every seed moves
    the same way and the mean difference exceeds the seeds' spread of the difference (its sample
    standard deviation); anything else is "no significant difference". One seed gives no verdict."""
    mean = float(delta.mean())
    spread = float(delta.std(ddof=1)) if len(delta) > 1 else float("nan")
    if len(delta) < 2:
        verdict = "one seed: no verdict"
    elif (delta > 0).all() and mean > spread:
        verdict = "beats plain"
    elif (delta < 0).all() and -mean > spread:
        verdict = "worse than plain"
    else:
        verdict = "no significant difference"
    return {"delta": mean, "delta_spread": spread, "delta_per_seed": delta.tolist(), "verdict": verdict}


def format_table(table: Dict[str, Dict], subtitle: str = "test accuracy %, mean ± std over seeds") -> str:
    width = max([22] + [len(label) + 2 for label in table])
    spans = any("span_iou" in row for row in table.values())
    lines = [f"SpARC ablation on the synthetic benchmark ({subtitle})",
             f"{'config':<{width}}{'accuracy':>15}{'vs plain':>10}{'what':>6}{'1st/last':>9}{'last epoch':>12}{'swap':>6}"
             + (f"{'span IoU':>15}" if spans else "")]
    for label, row in table.items():
        delta = f"{row['delta']:+.1f}" if "delta" in row else ""
        curve = row.get("curve") or [row["mean"]]
        gain = f"{curve[-1] - curve[-2]:+.1f}" if len(curve) > 1 else ""
        groups = row.get("by_group", {})
        iou = row.get("span_iou")
        lines.append(f"{label:<{width}}{row['mean']:>8.1f} ± {row['std']:<4.1f}{delta:>10}{groups.get('what', float('nan')):>6.1f}"
                     f"{groups.get('first/last', float('nan')):>9.1f}{gain:>12}{row['subject_swap_changes']:>6.0f}"
                     + (f"{iou['mean']:>8.1f} ± {iou['std']:<4.1f}" if iou else ""))
    lines.append("(what, 1st/last: accuracy on \"what does s do?\" and on \"what does s do first / in the end?\"; "
                 "last epoch: accuracy gained in the last epoch, mean over seeds: a row still rising has not "
                 "converged; swap: % of test answers that change when the asked subject is swapped"
                 + ("; span IoU: mean IoU % of the predicted answer's most likely span with the true span, "
                    "TVQA+'s mIoU in frames" if spans else "") + ")")
    if any("span_iou_correct_answer" in row for row in table.values()):
        lines.append("the correct answer's most likely span (what the span loss trains): IoU %, start and end on "
                     "the true span's first and last frame %, mean length in frames")
        lines += [f"  {label:<{width}}IoU {row['span_iou_correct_answer']['mean']:.1f}, start {row['span_start_hit']['mean']:.1f}, "
                  f"end {row['span_end_hit']['mean']:.1f}, length {row['span_length']['mean']:.1f}"
                  for label, row in table.items() if "span_iou_correct_answer" in row]
    if any("attention_hit" in row for row in table.values()):
        lines.append("attention: % of the correct hypothesis' labelled (frame, word) cells whose best-scored region "
                     "is a labelled one")
        lines += [f"  {label:<{width}}{row['attention_hit']['mean']:.1f} ± {row['attention_hit']['std']:.1f}"
                  for label, row in table.items() if "attention_hit" in row]
    rising = [label for label, row in table.items() if len(row.get("curve") or []) > 1
              and row["curve"][-1] - row["curve"][-2] > 1.0]
    if rising:
        lines.append(f"not converged at this budget (still gaining more than 1 point per epoch): {', '.join(rising)}")
    verdicts = [f"  {label}: {row['verdict']} ({row['delta']:+.1f} points, paired by seed: "
                + ", ".join(f"{d:+.1f}" for d in row["delta_per_seed"]) + ")"
                for label, row in table.items() if "verdict" in row]
    if verdicts:
        lines += ["against plain (beats / worse: every seed moves the same way and the mean difference exceeds "
                  "its seed spread):"] + verdicts
    return "\n".join(lines)


def format_baselines(base: Dict[str, Dict[str, float]], quality: Dict[str, Dict[str, float]], threshold: float,
                     num_candidates: int = 5) -> str:
    groups = list(next(iter(base.values())))
    lines = [f"{'non-learned baselines (test accuracy %)':<42}" + "".join(f"{g:>11}" for g in groups)]
    for rule, accs in base.items():
        lines.append(f"  {rule:<40}" + "".join(f"{accs[g]:>11.1f}" for g in groups))
    lines.append(f"  {'chance':<40}" + "".join(f"{100 / num_candidates:>11.1f}" for _ in groups))
    lines.append(f"teacher's causal frames (test, P[t, answer] > {threshold}):")
    for name, q in quality.items():
        lines.append(f"  {name:<11} precision {q['precision']:.3f}, recall {q['recall']:.3f}, "
                     f"{q['kept_fraction']:.1%} of frames kept, no frame for {q['empty_rate']:.1%} of questions; "
                     f"teacher accuracy {q['teacher_accuracy_on_causal_frames']:.1%} on the true causal frames, "
                     f"{q['teacher_accuracy_on_other_frames']:.1%} on the others")
    return "\n".join(lines)


# ---- the whole demo ---------------------------------------------------------------------------------

def run_demo(output_dir: str = "sparc-demo", quick: bool = False, log=print,
             settings: Optional[DemoSettings] = None, backbone: str = "hga") -> Dict:
    """Run the ablation with ``backbone`` and write ``results.json`` and ``sparc-demo.png`` (with
    matplotlib) to ``output_dir``. ``settings`` overrides the full / quick presets."""
    from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig
    from sparc.backbones import BACKBONES

    start = time.time()
    settings = settings or DemoSettings.make(quick, backbone)
    spec = BACKBONES.get(settings.backbone, "demo")
    os.makedirs(output_dir, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: more threads would only fight the workers for the cores
    pool = None
    if settings.quick:
        log("quick run: a smoke test of the whole pipeline at a small budget and one seed; its accuracies are "
            "not converged and say nothing about SpARC (run `sparc demo` for the ablation)")
    try:
        bench = SyntheticBenchmark(SyntheticConfig(sizes={"teacher": settings.teacher_size, "train": settings.train_size,
                                                          "test": settings.test_size}, **dict(settings.benchmark)))
        c = bench.config
        log(f"synthetic benchmark: {settings.train_size} train / {settings.test_size} test questions, "
            f"{c.num_frames} frames of two subject-action pairs, {c.num_candidates} candidates, {c.num_subjects} "
            f"subjects and {c.num_bystanders} bystanders, {c.num_actions} actions; backbone {settings.title}")
        if spec.views:
            for split in ("train", "test"):
                bench.views(split)  # drawn once here, shared by the forked workers
        if settings.rows:  # rows named by short names: each one step on a small batch, before anything trains
            check_rows(settings, bench, [r.label for r in settings.rows])
        if settings.workers > 1:
            # Started now, the workers warm up (and run plain) while this process trains the teacher. On
            # Linux they are forked and inherit the imports; safe as for DataLoader workers: each worker
            # runs one thread.
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            pool = multiprocessing.get_context(method).Pool(settings.workers, initializer=_init_worker,
                                                            initargs=(bench,))
        else:
            _init_worker(bench)
        runner = _Runs(pool, settings)
        runner.submit([label for label in settings.configs if not row_of(settings, label).techniques], priors=None)
        teacher = train_teacher(bench, settings, log)
        prior_dir = os.path.join(output_dir, "priors")
        if os.path.exists(prior_dir):
            shutil.rmtree(prior_dir)  # the demo's own output: always rebuilt from this run's teacher
        stores = {s: extract_split_priors(bench, teacher, s, os.path.join(prior_dir, s)) for s in ("train", "test")}
        for split in ("train", "test"):  # for `sparc priors-stats` / `sparc viz-priors` on the demo's stores
            with open(os.path.join(prior_dir, f"{split}-answers.json"), "w") as f:
                json.dump({q: int(a) for q, a in zip(bench.splits[split].qids, bench.splits[split].answer)}, f)
        quality = {s: selection_quality(stores[s], bench.splits[s], settings.threshold) for s in stores}
        base = baselines(stores["test"], bench.splits["test"])
        log(format_baselines(base, quality["test"], settings.threshold, bench.config.num_candidates))
        log(f"training {len(settings.configs)} configs x {len(settings.seeds)} seeds on {max(settings.workers, 1)} "
            f"process{'es' if settings.workers > 1 else ''}")
        choices = list(dict.fromkeys(["teacher"] + [r.frames for r in settings.rows]))
        frame_selection = None
        if len(choices) > 1:  # rows trained on other causal frames: what each choice selects (train split)
            from sparc.demo_rows import format_selection, selection_report

            frame_selection = selection_report(choices, stores["train"], bench.splits["train"], settings.threshold,
                                               question_groups(bench.splits["train"]))
            log(format_selection(frame_selection))
        runner.submit([label for label in settings.configs if row_of(settings, label).techniques],
                      priors=stores["train"])
        runs = runner.collect()
    except BaseException:
        if pool is not None:
            pool.terminate()  # an error or Ctrl-C: do not wait for the other runs
        raise
    finally:
        torch.set_num_threads(threads)
    if pool is not None:
        pool.close()
        pool.join()

    table = summarize(runs)
    results = {"settings": asdict(settings), "benchmark": asdict(bench.config), "teacher_selection": quality,
               "baselines": base, "accuracy": table, "runs": runs}
    log("")
    log(("QUICK SMOKE RUN (not converged, one seed): " if settings.quick else "") + format_table(table, settings.describe()))
    if frame_selection is not None:
        from sparc.demo_rows import format_against_teacher

        compared = against_teacher_frames(table, settings)
        results.update(frame_selection=frame_selection, against_teacher_frames=compared)
        if compared:
            log(format_against_teacher(compared))
    if not settings.quick and not settings.rows and any(len(r["curve"]) > 1 and r["curve"][-1] - r["curve"][-2] > 1.0
                                                        for r in table.values()):
        log("this budget fits the 5-minute demo; docs/synthetic.md has every row and all five backbones trained "
            "longer, until the rows stopped rising (HGA: `sparc demo --epochs 24`)")
    png = os.path.join(output_dir, "sparc-demo.png")
    try:
        from sparc.viz import demo_figure
        demo_figure(png, stores["test"], bench.splits["test"], table, settings.threshold, title=settings.title)
        wrote = f"{os.path.join(output_dir, 'results.json')} and {png}"
    except ImportError:
        wrote = f"{os.path.join(output_dir, 'results.json')} (pip install 'sparc-videoqa[viz]' for the figure)"
    cpu = time.process_time() + sum(r["cpu_seconds"] for rs in runs.values() for r in rs)
    results.update(seconds=time.time() - start, cpu_seconds=cpu)
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)  # insertion order: configs as in the table
    log(f"\nwrote {wrote}")
    log(f"total time {results['seconds']:.0f} s ({cpu:.0f} CPU-seconds in training runs and this process)")
    return results
