"""Training-step overhead of SpARC on every backbone at its paper size, measured as ratios in one run.

``--backbone`` picks the model: hga (NExT-QA, 16 frames), vgt (8 clips x 4 frames), stage (TVQA+,
up to 50 frames at 0.5 fps), memory (memory-attention, 35 frames for TGIF-QA; ``--frames 20`` for
MSVD-QA) or hme. Each is built by ``benchmarks/backbones/<name>.py: paper_size(batch_size)``,
which documents its sizes; features and priors are random.

A *plain* step is the wrapped model with no techniques (the task loss on the whole video) +
backward + Adam. A *SpARC* step is the same with ``[TemporalGuidance(), SpatialDistillation()]``:
the whole video, the causal frames and one single frame, each forwarded once. Optionally
(``--mixup``) a third row adds ``TemporalGuidedMixup`` (concat mode: every view then scores 2C
candidates).

All variants run interleaved in one process (the order rotates every repeat) and the reported
figure is the median of the per-repeat time ratios, after warm-up. Absolute times are printed for
orientation only: machines shared with other jobs make them meaningless across runs.

Reported next to the measured ratio:

* the frame bound ``(T + mean kept + 1) / T``: the step's work if every cost scaled with frames;
* the counted FLOP ratio (``torch.utils.flop_counter`` on the CPU, forward + backward), which also
  counts the frame-independent work (question encoders, fusions, once per candidate per view);
* the cost of the causal view in the adapter's own subset mode (mask or lengths) against bucket
  mode (one physically sliced forward per kept-frame count), as a ratio, where the adapter has both.

Times are per step and only their ratios mean anything. On the CPU the default is one torch
thread: on a machine shared with other jobs, a descheduled worker thread stalls every parallel op
and the ratios fall apart (``--threads 0`` keeps torch's default). The commands behind the numbers
in docs/benchmarks.md are listed there.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import sparc
from sparc.frames import select_causal_frames

from common import add_common_arguments, apply_threads  # benchmarks/ is the script's folder

from backbones import paper_backbones  # each benchmarks/backbones/<name>.py registers its paper size

BACKBONES = paper_backbones()


# ---------------------------------------------------------------------------------------- setup

def load_backbone(args):
    """(model, adapter, batch) at the backbone's paper size, registered by benchmarks/backbones/<name>.py."""
    from sparc.backbones import BACKBONES as registry

    kwargs = {"frames": args.frames} if args.frames else {}
    return registry.get(args.backbone, "paper")(args.batch_size, seed=args.seed, **kwargs)


def make_priors(answer: torch.Tensor, T: int, C: int, kept: float, gen: torch.Generator) -> torch.Tensor:
    """Random teacher priors ``[B, T, C]`` whose answer column exceeds 0.5 on a random subset of
    frames: each frame independently with probability kept/T, at least one frame per row."""
    B = answer.shape[0]
    keep = torch.rand(B, T, generator=gen) < (kept / T)
    none = ~keep.any(dim=1)
    if none.any():
        pick = torch.randint(0, T, (B,), generator=gen)
        keep[none, pick[none]] = True
    p_ans = torch.where(keep, 0.55 + 0.4 * torch.rand(B, T, generator=gen), 0.45 * torch.rand(B, T, generator=gen))
    rest = torch.rand(B, T, C, generator=gen)
    rest.scatter_(2, answer[:, None, None].expand(B, T, 1), 0.0)
    rest = rest / rest.sum(dim=2, keepdim=True) * (1.0 - p_ans)[..., None]
    return rest.scatter(2, answer[:, None, None].expand(B, T, 1), p_ans[..., None])


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- runs

class Variant:
    def __init__(self, name: str, base, adapter, techniques, uses_priors: bool, lr: float, device,
                 share_text: bool = True):
        self.name = name
        self.model = copy.deepcopy(base).to(device).train()
        self.wrapped = sparc.wrap(self.model, adapter, techniques, share_text=share_text).to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.uses_priors = uses_priors
        self.times: List[float] = []
        self.peaks: List[int] = []
        self.keep_mean: Optional[float] = None
        self.candidates: Optional[int] = None

    def step(self, batch: dict, priors: torch.Tensor):
        self.opt.zero_grad(set_to_none=True)
        out = self.wrapped(batch, priors=priors if self.uses_priors else None)
        out.loss.backward()
        self.opt.step()
        return out


def timed(fn: Callable, device, track_memory: bool):
    if track_memory:
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if track_memory else None
    return elapsed, peak, result


def run_steps(variants: List[Variant], batch, priors, args, device, track_memory) -> None:
    for _ in range(args.warmup):
        for v in variants:
            v.step(batch, priors)
    for r in range(args.repeats):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:  # rotate the order: no variant always runs first
            elapsed, peak, out = timed(lambda: v.step(batch, priors), device, track_memory)
            v.times.append(elapsed)
            if peak is not None:
                v.peaks.append(peak)
            if out.keep is not None:
                v.keep_mean = float(out.keep.sum(dim=1).float().mean())
            v.candidates = int(out.logits.shape[1])
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(f"{v.name} {v.times[-1]:.2f}s" for v in variants),
              file=sys.stderr, flush=True)


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def view_costs(base, adapter, batch, priors, args, device, count: bool) -> Dict[str, dict]:
    """Forward + backward of each view alone, interleaved: whole, causal (the adapter's own mode),
    causal (bucket, when the own mode is another), single. With ``count`` (CPU only: cuDNN's fused
    GRU hides from the counter), also their FLOPs."""
    model = copy.deepcopy(base).to(device).train()
    own_mode = adapter.mode_for(model)
    own, bucket = adapter.with_subset_mode(own_mode), adapter.with_subset_mode("bucket")
    keep = select_causal_frames(priors, batch[adapter.answer_field], 0.5, "all")
    valid = adapter.valid_frames(batch).to(keep.device)
    partial = keep.any(dim=1) & (keep != valid).any(dim=1)
    rows = torch.nonzero(partial).squeeze(1)
    sub, sub_keep = adapter.select_batch(batch, rows), keep[rows]
    T = adapter.num_frames(batch)
    gen = torch.Generator().manual_seed(args.seed + 7)
    single = torch.nn.functional.one_hot(torch.randint(0, T, (keep.shape[0],), generator=gen), T).bool().to(device)

    def fb(fn):
        def go():
            model.zero_grad(set_to_none=True)
            _logits(fn()).sum().backward()
        return go

    views = {
        "whole": fb(lambda: adapter.forward(model, batch)),
        f"causal_{own_mode}": fb(lambda: own.forward_subset(model, sub, sub_keep)),
    }
    if own_mode != "bucket":
        views["causal_bucket"] = fb(lambda: bucket.forward_subset(model, sub, sub_keep))
    views["single"] = fb(lambda: adapter.forward_subset(model, batch, single))
    names = list(views)
    flops = {}
    if count:
        from torch.utils.flop_counter import FlopCounterMode

        for n in names:
            with FlopCounterMode(display=False) as counter:
                views[n]()
            flops[n] = int(counter.get_total_flops())
    times = {n: [] for n in names}
    for _ in range(0 if flops else max(1, args.warmup)):  # a counted pass already warmed every view
        for n in names:
            views[n]()
    for r in range(args.view_repeats):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            elapsed, _, _ = timed(views[n], device, False)
            times[n].append(elapsed)
    counts = sub_keep.sum(dim=1)
    return {
        "own_mode": own_mode,
        "times": times,
        "flops": flops,
        "causal_rows": int(rows.numel()),
        "causal_buckets": int(torch.unique(counts).numel()),
        "causal_padded_width": int(counts.max()),
    }


def count_flops(variants: List[Variant], batch, priors) -> Dict[str, int]:
    """Forward + backward FLOPs of one step per variant, counted on the CPU (cuDNN's fused GRU
    would hide from the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    cpu_batch, cpu_priors = to_device(batch, "cpu"), priors.cpu()
    flops = {}
    for v in variants:
        wrapped = copy.deepcopy(v.wrapped).cpu().train()
        with FlopCounterMode(display=False) as counter:
            out = wrapped(cpu_batch, priors=cpu_priors if v.uses_priors else None)
            out.loss.backward()
        flops[v.name] = int(counter.get_total_flops())
        del wrapped
    return flops


# ---------------------------------------------------------------------------------------- main

def median_ratio(num: List[float], den: List[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 256 on cuda, 64 on cpu")
    p.add_argument("--backbone", default="hga", choices=BACKBONES)
    p.add_argument("--frames", type=int, default=None, help="length of the temporal axis (default: the paper's)")
    p.add_argument("--kept", type=float, default=0.25,
                   help="mean causal frames per row the priors select: a count, or a fraction of T if below 1")
    p.add_argument("--mixup", action="store_true", help="add a TemporalGuidance+SpatialDistillation+TemporalGuidedMixup row")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per variant (interleaved)")
    p.add_argument("--view-repeats", type=int, default=3, help="timed passes per single view (interleaved)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    p.add_argument("--no-views", action="store_true", help="skip the per-view and own-mode-vs-bucket timing")
    p.add_argument("--as-original", action="store_true",
                   help="drive the model as the adapter drives its original class (the reference's capability "
                        "flags off: bucket mode, the original's guards, no split of the forward): the cost "
                        "structure of a wrapped original, on the reference's arithmetic")
    add_common_arguments(p)
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 256 if args.device == "cuda" else 64
    apply_threads(args)
    device = torch.device(args.device)
    track_memory = device.type == "cuda"

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    base, adapter, batch_cpu = load_backbone(args)
    if args.as_original:  # what tells each adapter it drives the reference, not the original class
        for flag in ("supports_vid_lengths", "honours_video_mask", "supports_frame_mask"):
            if getattr(base, flag, False):
                setattr(base, flag, False)
        if args.backbone == "hme":  # the original scores one candidate at a time (tests/cases/case_hme.py)
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from cases.case_hme import OriginalLikeHME

            base.__class__ = OriginalLikeHME
    T = adapter.num_frames(batch_cpu)
    with torch.no_grad():  # the width of the logits: candidates, or the open-ended answer set
        C = _logits(adapter.forward(base.eval(), adapter.select_batch(batch_cpu, torch.arange(2)))).shape[1]
    kept = args.kept * T if args.kept < 1 else args.kept
    priors_cpu = make_priors(torch.as_tensor(batch_cpu[adapter.answer_field]), T, C, kept, gen)
    batch, priors = to_device(batch_cpu, device), priors_cpu.to(device)

    splits = adapter.encode_text(base, adapter.select_batch(batch_cpu, torch.arange(2))) is not None
    variants = [
        Variant("plain", base, adapter, [], False, 1e-4, device),
        Variant("sparc", base, adapter, [sparc.TemporalGuidance(), sparc.SpatialDistillation()], True, 1e-4, device),
    ]
    if splits:  # the same step re-encoding the question and candidates in every view: what sharing saves
        variants.append(Variant("sparc, text per view", base, adapter,
                                [sparc.TemporalGuidance(), sparc.SpatialDistillation()], True, 1e-4, device,
                                share_text=False))
    if args.mixup:
        variants.append(Variant("sparc+mixup", base, adapter, [sparc.TemporalGuidance(), sparc.SpatialDistillation(),
                                                               sparc.TemporalGuidedMixup()], True, 1e-4, device))
    params = sum(p.numel() for p in base.parameters())
    print(f"{args.backbone} B={args.batch_size} T={T} C={C} {params / 1e6:.1f}M parameters, subset mode "
          f"{adapter.mode_for(base)}, on {device}, {torch.get_num_threads()} threads", file=sys.stderr, flush=True)

    run_steps(variants, batch, priors, args, device, track_memory)
    plain = variants[0]
    results = {"config": vars(args), "machine": {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor(), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}
    rows = []
    for v in variants:
        row = {"variant": v.name, "median_step_s": statistics.median(v.times), "times_s": v.times,
               "candidates_scored": v.candidates, "mean_kept": v.keep_mean,
               "time_ratio": median_ratio(v.times, plain.times),
               "time_ratio_range": [min(a / b for a, b in zip(v.times, plain.times)),
                                    max(a / b for a, b in zip(v.times, plain.times))]}
        if v.keep_mean is not None:
            # Concat-mode mixup scores 2C candidates in every view: scale by the candidate count.
            row["frame_bound"] = (T + v.keep_mean + 1) / T * v.candidates / plain.candidates
        if track_memory:
            row["peak_bytes"] = max(v.peaks)
            row["peak_ratio"] = max(v.peaks) / max(plain.peaks)
        rows.append(row)
    results["steps"] = rows

    if not args.no_flops:
        print("  counting FLOPs on the CPU", file=sys.stderr, flush=True)
        flops = count_flops(variants, batch, priors)
        for row in rows:
            row["flops"] = flops[row["variant"]]
            row["flop_ratio"] = flops[row["variant"]] / flops["plain"]

    if not args.no_views:
        print("  timing single views", file=sys.stderr, flush=True)
        views = view_costs(base, adapter, batch, priors, args, device,
                           count=not args.no_flops and device.type == "cpu")
        t = views["times"]
        views["ratio_to_whole"] = {n: median_ratio(t[n], t["whole"]) for n in t}
        views["flop_ratio_to_whole"] = {n: f / views["flops"]["whole"] for n, f in views["flops"].items()}
        own = f"causal_{views['own_mode']}"
        if own != "causal_bucket":
            views["bucket_over_own"] = median_ratio(t["causal_bucket"], t[own])
        results["views"] = views

    # ---- report -------------------------------------------------------------------------------
    mem = "peak memory ratio" if track_memory else None
    head = ["variant", "candidates", "mean kept frames", "median step (s)", "time ratio (median)",
            "per-repeat range",
            "frame bound (T+k+1)/T", "counted FLOP ratio"] + ([mem] if mem else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["variant"], str(row["candidates_scored"]),
                 "-" if row["mean_kept"] is None else f"{row['mean_kept']:.2f}",
                 f"{row['median_step_s']:.2f}", f"{row['time_ratio']:.2f}",
                 "-" if row is rows[0] else "{:.2f}-{:.2f}".format(*row["time_ratio_range"]),
                 f"{row['frame_bound']:.2f}" if "frame_bound" in row else "-",
                 f"{row['flop_ratio']:.2f}" if "flop_ratio" in row else "-"]
        if mem:
            cells.append(f"{row['peak_ratio']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if "views" in results:
        v = results["views"]
        lines += ["", f"Single views, forward + backward, relative to the whole video "
                      f"(causal: {v['causal_rows']} rows, {v['causal_buckets']} kept-count buckets, "
                      f"up to {v['causal_padded_width']} kept frames):", "",
                  "| view | median (s) | time ratio to whole | counted FLOP ratio to whole |", "|---|---|---|---|"]
        for n, ts in v["times"].items():
            fr = v["flop_ratio_to_whole"].get(n)
            lines.append(f"| {n} | {statistics.median(ts):.2f} | {v['ratio_to_whole'][n]:.2f} | "
                         f"{'-' if fr is None else f'{fr:.2f}'} |")
        if "bucket_over_own" in v:
            lines += ["", f"Causal view, bucket mode / {v['own_mode']} mode: {v['bucket_over_own']:.2f}"]
    if any(r["candidates_scored"] != plain.candidates for r in rows):
        lines += ["", "Rows scoring more candidates than plain (concat-mode mixup) have their frame bound "
                      "multiplied by the candidate ratio."]
    if not track_memory:
        lines += ["", "Peak memory: not measured on the CPU."]
    report = "\n".join(lines)
    driven = " (driven as its original class)" if args.as_original else ""
    print(f"{args.backbone}{driven}, batch {args.batch_size}, T = {T}, {C} answer scores\n")
    print(report)
    results["table"] = report
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
