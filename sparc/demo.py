"""``sparc demo``: SpARC's Table 5 ablation on the embedded synthetic benchmark, end to end.

1. generate the benchmark (teacher / train / test splits);
2. train the image-QA teacher on single frames of the teacher split (an image-QA dataset: frames
   that show what their question asks about);
3. extract its priors for every (frame, question) of train and test into PriorStores;
4. train the backbone (HGA unless ``--backbone`` names another) with the same budget and seeds as: plain, +T, +S, +T+S, +T+S+TGM (the runs are spread
   over worker processes, one thread each, plain starting while the teacher trains; every run is
   seeded, so results do not depend on which worker ran it);
5. evaluate on the held-out test split; print the table; write results.json and a PNG.
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
from typing import Dict, List, Optional

import numpy as np
import torch

CONFIGS = {
    "plain": [],
    "+T": ["temporal"],
    "+S": ["spatial"],
    "+T+S": ["temporal", "spatial"],
    "+T+S+TGM": ["temporal", "spatial", "tgm"],
}
# Relative cost of one training run (measured on CPU): the most expensive are handed out first.
_COST = {"plain": 1.0, "+T": 1.9, "+S": 1.75, "+T+S": 2.75, "+T+S+TGM": 6.5}


@dataclass
class DemoSettings:
    seeds: tuple = (0, 1, 2)
    configs: tuple = tuple(CONFIGS)
    epochs: int = 4
    batch_size: int = 256
    lr: float = 3e-3
    hidden: int = 32
    threshold: float = 0.5
    train_size: int = 2560
    test_size: int = 1000
    teacher_size: int = 2000
    teacher_epochs: int = 5
    workers: int = 2
    quick: bool = False
    backbone: str = "hga"

    @classmethod
    def make(cls, quick: bool, backbone: str = "hga") -> "DemoSettings":
        from sparc.demo_backbones import get_backbone

        settings = cls(seeds=(0,), epochs=3, train_size=2048, test_size=500, quick=True) if quick else cls()
        overrides = dict(get_backbone(backbone).settings)
        if quick:  # a quick run keeps its smaller budget
            overrides = {k: v for k, v in overrides.items() if k not in ("epochs", "train_size", "test_size", "seeds")}
        return replace(settings, backbone=backbone, **overrides)

    @property
    def title(self) -> str:
        from sparc.demo_backbones import get_backbone

        return get_backbone(self.backbone).title

    def describe(self) -> str:
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        return (f"{'quick run: ' if self.quick else ''}{self.title}, {self.epochs} epochs x {self.train_size} train "
                f"questions, test accuracy %, mean ± std over {seeds}")


def build_techniques(names: List[str], threshold: float):
    import sparc

    made = []
    for name in names:
        if name == "temporal":
            made.append(sparc.TemporalGuidance(threshold=threshold, consistency_weight=1.0))
        elif name == "spatial":
            made.append(sparc.SpatialDistillation(weight=1.0))
        elif name == "tgm":
            made.append(sparc.TemporalGuidedMixup(alpha=0.1, beta=0.1))
    return made


def train_teacher(bench, settings: DemoSettings, log):
    from sparc.teachers.frame_qa import FrameQATeacher, train_frame_teacher

    split = bench.splits["teacher"]
    questions, candidates = bench.teacher_inputs("teacher")
    torch.manual_seed(0)
    teacher = FrameQATeacher(bench.config.feature_dim, bench.config.word_dim)
    history = train_frame_teacher(teacher, torch.from_numpy(split.vid_feats), questions, candidates,
                                  torch.from_numpy(split.answer), frame_mask=torch.from_numpy(split.causal),
                                  epochs=settings.teacher_epochs)
    log(f"teacher trained on {int(split.causal.sum())} single frames of {len(split)} teacher-split videos "
        f"(loss {history[0]:.3f} -> {history[-1]:.3f})")
    return teacher


def extract_split_priors(bench, teacher, split_name: str, path: str):
    from sparc.priors.extract import extract_priors

    split = bench.splits[split_name]
    questions, candidates = bench.teacher_inputs(split_name)
    frames = torch.from_numpy(split.vid_feats)
    videos = ((frames[i], [split.qids[i]], questions[i:i + 1], candidates[i:i + 1]) for i in range(len(split)))
    return extract_priors(teacher, videos, path, num_frames=bench.config.num_frames,
                          num_candidates=bench.config.num_candidates,
                          metadata={"teacher": "FrameQATeacher", "split": split_name})


def selection_quality(store, split, threshold: float) -> Dict[str, float]:
    """How well ``P[t, a] > threshold`` recovers the frames that truly answer each question, and how
    often the teacher answers right on those frames."""
    import sparc

    priors = store.lookup(split.qids)
    answer = torch.from_numpy(split.answer)
    keep = sparc.select_causal_frames(priors, answer, threshold, empty="skip").numpy()
    truth = split.causal
    right = (priors.argmax(-1) == answer[:, None]).numpy()
    return {
        "kept_fraction": float(keep.mean()),
        "precision": float((keep & truth).sum() / max(keep.sum(), 1)),
        "recall": float((keep & truth).sum() / truth.sum()),
        "empty_rate": float((~keep.any(1)).mean()),
        "teacher_accuracy_on_causal_frames": float(right[truth].mean()),
    }


def run_config(bench, names: List[str], seed: int, settings: DemoSettings, priors) -> Dict:
    import sparc
    from sparc.demo_backbones import get_backbone
    from sparc.train import TrainConfig, train

    backbone = get_backbone(settings.backbone)
    torch.manual_seed(seed)
    model = backbone.build(bench, settings.hidden)
    wrapped = sparc.wrap(model, backbone.adapter(), build_techniques(names, settings.threshold))
    train_set, test_set = bench.dataset("train"), bench.dataset("test")
    config = TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, seed=seed,
                         eval_batch_size=500, log_with=None, output_dir=None, progress=False)
    result = train(wrapped, train_set, partial(backbone.collate, bench), config, eval_set=test_set, priors=priors)
    return {"accuracy": result.metrics["accuracy"], "curve": [h["accuracy"] for h in result.eval_history],
            "final_loss": result.losses[-1]}


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
    out = run_config(_worker_bench, CONFIGS[label], seed, settings, priors)
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
                      key=lambda job: -_COST[job[0]])
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


def run_demo(output_dir: str = "sparc-demo", quick: bool = False, log=print,
             settings: Optional[DemoSettings] = None, backbone: str = "hga") -> Dict:
    """Run the ablation with ``backbone`` and write ``results.json`` and ``sparc-demo.png`` (with
    matplotlib) to ``output_dir``. ``settings`` overrides the full / quick presets."""
    from sparc.data.synthetic import SyntheticBenchmark, SyntheticConfig
    from sparc.demo_backbones import get_backbone

    start = time.time()
    settings = settings or DemoSettings.make(quick, backbone)
    spec = get_backbone(settings.backbone)
    os.makedirs(output_dir, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: more threads would only fight the workers for the cores
    pool = None
    try:
        bench = SyntheticBenchmark(SyntheticConfig(sizes={"teacher": settings.teacher_size,
                                                          "train": settings.train_size, "test": settings.test_size}))
        log(f"synthetic benchmark: {settings.train_size} train / {settings.test_size} test questions, "
            f"{bench.config.num_frames} frames, {bench.config.num_candidates} candidates, "
            f"{bench.config.num_subjects} subjects, {bench.config.num_actions} actions; backbone {spec.title}")
        if spec.views:
            for split in ("train", "test"):
                bench.views(split)  # drawn once here, shared by the forked workers
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
        runner.submit([label for label in settings.configs if not CONFIGS[label]], priors=None)
        teacher = train_teacher(bench, settings, log)
        prior_dir = os.path.join(output_dir, "priors")
        if os.path.exists(prior_dir):
            shutil.rmtree(prior_dir)  # the demo's own output: always rebuilt from this run's teacher
        stores = {s: extract_split_priors(bench, teacher, s, os.path.join(prior_dir, s)) for s in ("train", "test")}
        for split in ("train", "test"):  # for `sparc priors-stats` / `sparc viz-priors` on the demo's stores
            with open(os.path.join(prior_dir, f"{split}-answers.json"), "w") as f:
                json.dump({q: int(a) for q, a in zip(bench.splits[split].qids, bench.splits[split].answer)}, f)
        quality = {s: selection_quality(stores[s], bench.splits[s], settings.threshold) for s in stores}
        q = quality["train"]
        log(f"causal frames from the teacher (train, threshold {settings.threshold}): kept {q['kept_fraction']:.1%} "
            f"of frames, precision {q['precision']:.2f}, recall {q['recall']:.2f}, no frame above threshold for "
            f"{q['empty_rate']:.1%} of questions; teacher accuracy on the causal frames "
            f"{q['teacher_accuracy_on_causal_frames']:.1%}")
        log(f"training {len(settings.configs)} configs x {len(settings.seeds)} seeds on {max(settings.workers, 1)} "
            f"process{'es' if settings.workers > 1 else ''}")
        runner.submit([label for label in settings.configs if CONFIGS[label]], priors=stores["train"])
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

    table = {label: {"mean": float(np.mean([r["accuracy"] for r in rs]) * 100),
                     "std": float(np.std([r["accuracy"] for r in rs]) * 100),
                     "per_seed": [r["accuracy"] * 100 for r in rs]} for label, rs in runs.items()}
    results = {"settings": asdict(settings), "benchmark": asdict(bench.config), "teacher_selection": quality,
               "accuracy": table, "runs": runs}
    log("")
    log(format_table(table, settings.describe()))
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


def format_table(table: Dict[str, Dict], subtitle: str = "test accuracy %, mean ± std over seeds") -> str:
    lines = [f"SpARC ablation on the synthetic benchmark ({subtitle})",
             f"{'config':<12}{'T':^4}{'S':^4}{'TGM':^5}{'accuracy':>16}"]
    base = table["plain"]["mean"] if "plain" in table else None
    for label, row in table.items():
        parts = label.split("+")
        mark = lambda key: "✓" if key in parts else ""
        delta = "" if base is None or label == "plain" else f" ({row['mean'] - base:+.1f})"
        lines.append(f"{label:<12}{mark('T'):^4}{mark('S'):^4}{mark('TGM'):^5}{row['mean']:>9.1f} ± {row['std']:.1f}{delta}")
    return "\n".join(lines)
