"""Teacher-prior extraction (``sparc extract-priors``) against a naive per-(frame, question) loop, at
NExT-QA's shape, measured as ratios in one run.

Shape: ``--frames`` 16 frames per video, ``--questions-per-video`` questions per video (NExT-QA has
about 9: 47.7k questions over 5.4k videos), 5 candidate strings per question. Frames are random uint8
``[F, 240, 320, 3]`` tensors held in memory and handed to both paths as they are, so decoding is not
measured (the job's DataLoader runs with ``num_workers=0``).

The model is :class:`sparc.teachers.albef.ALBEF` with random weights (``torch.manual_seed``) and the
released VQA model's *shapes of work*: 384 px images in 16 px patches (577 image tokens), a 12-layer
ViT, a 12-layer text encoder whose layers 6-11 cross-attend to the image and a 6-layer answer decoder.
Only the widths are narrow by default so that it runs on a CPU: ``--width`` 128 with ``--heads`` 2 and
MLP / intermediate width 4 x width (512), for the ViT, the text encoder and the decoder alike; the
vocabulary shrinks with the width (30522 x 128 / 768 = 5087 words) so that every matmul, the decoder's
vocabulary projection included, is scaled by the same factor and the work keeps the real model's
proportions. ``--vocab 30522`` keeps bert-base-uncased's full vocabulary at narrow width (then the
projection is six times heavier, relative to the rest, than in the real model).
``--full-size`` uses the real widths (ViT-B/16: 768, 12 heads, 3072; BERT-base: 768, 12 heads, 3072).
The tokenizer is a ``transformers.BertTokenizer`` over a vocab.txt written on the fly in
bert-base-uncased's layout ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then words);
questions are about 10 words, candidates 1 to 4 words.

Two paths over the same frames, questions and weights:

* **optimised**: ``extract_dataset_priors(ALBEFTeacher(model, tokenizer), questions, source, tmpdir,
  dtype="float32", num_workers=0, progress=False)`` (each frame encoded once, every question and
  candidate of a video scored in batched passes) and then ``PriorStore.open(tmpdir).lookup(qids)``;
* **loop**: for every video, frame and question: ``teacher.preprocess`` of that one frame,
  ``model.encode_image``, ``model.encode_question`` (``[CLS] q``, no ``[SEP]``), ``model.cand_loglik``
  over the question's 5 candidates (``[CLS] a [SEP]``, zero-padded), softmax; ``torch.no_grad()``,
  model in eval.

For every ``--questions-per-video`` value the two paths run interleaved ``--repeats`` times (the order
alternates), after a warm-up on one video; reported: seconds of each (median), loop / optimised (median
of the per-repeat ratios), the largest absolute difference between their probabilities (must be at most
1e-4 in float32), videos/s and (frame, question) pairs/s. With ``--profile`` the optimised path's work
on one video is split into its stages with manual timers (vision, fusion keys/values, question
encoding, decoder) and the decoder's vocabulary projection is separated with ``torch.profiler``
(every op that has a 30522-wide operand). The loop's own stages are always timed.

``--device cuda`` runs the job as ``sparc extract-priors`` does there (bf16 autocast unless
``--no-bf16``; the loop stays float32, so the difference is then only reported, not checked) and
extrapolates both paths to NExT-QA: 87k frames (5,440 videos x 16) and 763k (frame, question) pairs
(47.7k questions x 16), against the 12 h that "Improving Video Understanding through Reliable
Question-Relevant Frame Localization and Spatial Guidance" reports for ALBEF on an RTX 3090.

On the CPU the default is one torch thread (``--threads``): on a shared machine a descheduled worker
thread stalls every parallel op. Absolute times are for orientation only; the commands behind the
numbers in docs/benchmarks.md are listed there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from sparc.data.questions import VideoQuestion
from sparc.priors.extract import extract_dataset_priors
from sparc.priors.store import PriorStore
from sparc.teachers.albef import ALBEF, ALBEFTeacher

from common import add_common_arguments, apply_threads  # benchmarks/ is the script's folder

VOCAB_SIZE = 30522            # bert-base-uncased
NEXTQA_VIDEOS = 5440
NEXTQA_FRAMES = 87_040        # 5,440 videos x 16 frames
NEXTQA_PAIRS = 763_072        # 47,692 questions x 16 frames
PAPER_HOURS = 12.0            # ALBEF on NExT-QA, RTX 3090 (SpARC paper)

WORDS = ("what does did the man woman boy girl baby dog cat lady people person child he she it they why how "
         "is are was were holding sits stands runs walks sit stand run walk wave jump eat drink play push pull "
         "with ball cup toy bike car chair table floor grass water down up a to on in at near after before "
         "while when where who left right front behind look looks looking smile laugh talk move moves turn "
         "hand hands head camera stick rope slide swing door room red blue green white black small big "
         "first then again end beginning video middle").split()


# ---------------------------------------------------------------------------------------- setup

def vocab_size(args) -> int:
    """The real vocabulary at full size. Narrow models scale it with the width by default: every matmul
    of the model then shrinks by the same factor (width^2), the vocabulary projection (width x vocab)
    included, so the tiny model spends its time in the same proportions as the real one."""
    if args.vocab:
        return args.vocab
    return VOCAB_SIZE if args.full_size else round(VOCAB_SIZE * args.width / 768)


def model_config(args) -> dict:
    if args.full_size:
        width, heads, inter = 768, 12, 3072
    else:
        width, heads, inter = args.width, args.heads, 4 * args.width
    return {
        "image_res": 384, "patch_size": 16, "vision_width": width, "vision_depth": 12, "vision_heads": heads,
        "decoder_layers": 6,
        "bert_config": {"hidden_size": width, "intermediate_size": inter, "num_attention_heads": heads,
                        "num_hidden_layers": 12, "fusion_layer": 6, "encoder_width": width,
                        "vocab_size": vocab_size(args)},
    }


def make_tokenizer(folder: Path):
    from transformers import BertTokenizer

    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(WORDS)
    path = folder / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizer(str(path))


class MemoryFrames:
    """``video id -> uint8 [F, H, W, 3]`` from a dict, with the attributes the job reads."""

    def __init__(self, frames: Dict[str, torch.Tensor], num_frames: int):
        self.frames, self.num_frames, self.clips = frames, num_frames, None

    def __call__(self, video: str) -> torch.Tensor:
        return self.frames[video]


def make_data(args, gen: torch.Generator):
    """(frames by video, questions by video: the full ``max(questions_per_video)`` lists)."""
    q_max = max(args.questions_per_video)
    frames, questions = {}, {}

    def words(n):
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=gen))

    for v in range(args.videos):
        video = f"video{v:04d}"
        frames[video] = torch.randint(0, 256, (args.frames, 240, 320, 3), generator=gen, dtype=torch.uint8)
        qs = []
        for q in range(q_max):
            n_words = int(torch.randint(8, 13, (1,), generator=gen))            # ~10 words
            cands = tuple(words(int(torch.randint(1, 5, (1,), generator=gen))) for _ in range(args.candidates))
            qs.append(VideoQuestion(qid=f"{video}_{q}", video=video, question=words(n_words) + " ?",
                                    candidates=cands, answer=int(torch.randint(args.candidates, (1,), generator=gen))))
        questions[video] = qs
    return frames, questions


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- the two paths

def run_optimised(teacher, questions: List[VideoQuestion], source, bf16: bool, device):
    qids = [q.qid for q in questions]
    with tempfile.TemporaryDirectory() as tmp:
        sync(device)
        t0 = time.perf_counter()
        stats = extract_dataset_priors(teacher, questions, source, Path(tmp) / "priors", dtype="float32",
                                       num_workers=0, progress=False, bf16=bf16)
        probs = PriorStore.open(Path(tmp) / "priors").lookup(qids)
        sync(device)
        seconds = time.perf_counter() - t0
    return seconds, probs, stats


@torch.no_grad()
def run_loop(teacher, questions: List[VideoQuestion], source, device, stage_times: Dict[str, float]):
    """Every (video, frame, question) through the whole teacher; -> (seconds, probs [Q, F, C])."""
    model, tok = teacher.model.eval(), teacher.tokenizer
    pad = model.pad_token_id
    by_video: Dict[str, List[VideoQuestion]] = defaultdict(list)
    for q in questions:
        by_video[q.video].append(q)
    out = {}

    def tick(name, t):
        sync(device)
        now = time.perf_counter()
        stage_times[name] += now - t
        return now

    sync(device)
    start = time.perf_counter()
    for video, qs in by_video.items():
        frames = source(video)
        per_q = {q.qid: [] for q in qs}
        for f in range(frames.shape[0]):
            for q in qs:
                t = time.perf_counter()
                image = teacher.preprocess(frames[f:f + 1]).to(device)
                t = tick("preprocess", t)
                embeds = model.encode_image(image)
                t = tick("vision", t)
                q_ids = torch.tensor([[tok.cls_token_id] + tok.encode(q.question, add_special_tokens=False)],
                                     device=device)
                q_mask = torch.ones_like(q_ids)
                states = model.encode_question(embeds, q_ids, q_mask)
                t = tick("question encoder", t)
                seqs = [[tok.cls_token_id] + tok.encode(c, add_special_tokens=False) + [tok.sep_token_id]
                        for c in q.candidates]
                L = max(map(len, seqs))
                a_ids = torch.tensor([s + [pad] * (L - len(s)) for s in seqs], device=device)
                a_mask = (torch.arange(L, device=device)[None] < torch.tensor([len(s) for s in seqs],
                                                                              device=device)[:, None]).long()
                ll = model.cand_loglik(states, q_mask, a_ids, a_mask)          # [1, C]
                per_q[q.qid].append(ll[0].float().softmax(-1).cpu())
                tick("decoder + vocabulary", t)
        for qid, rows in per_q.items():
            out[qid] = torch.stack(rows)
    sync(device)
    seconds = time.perf_counter() - start
    return seconds, torch.stack([out[q.qid] for q in questions])


# ---------------------------------------------------------------------------------------- profile

@torch.no_grad()
def profile_optimised(teacher, qs: List[VideoQuestion], frames: torch.Tensor, device, repeats: int,
                      bf16: bool = False) -> dict:
    """The optimised path's work on one video, by stage (median seconds over ``repeats``); under bf16
    autocast where the job uses it."""
    from torch.profiler import ProfilerActivity, profile

    from sparc.teachers.albef_batched import decoder_loglik, encode_questions, fusion_kv

    model = teacher.model
    q_ids, q_mask = teacher._stack([teacher._question(q.question) for q in qs])
    q_ids, q_mask = q_ids[:, 0].to(device), q_mask[:, 0].to(device)
    a_ids, a_mask = teacher._stack([teacher._candidates(list(q.candidates)) for q in qs])
    a_ids, a_mask = a_ids.to(device), a_mask.to(device)
    times = defaultdict(list)
    vocab = []
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else (lambda: torch.autocast("cpu", enabled=False))
    for r in range(repeats):
        def stage(name, fn):
            sync(device)
            t0 = time.perf_counter()
            with ctx():
                res = fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            return res

        x = stage("preprocess", lambda: teacher.preprocess(frames).to(device))
        embeds = stage("vision (ViT)", lambda: torch.cat([model.encode_image(c) for c in x.split(teacher.frame_chunk)]))
        kv = stage("fusion keys/values", lambda: fusion_kv(model, embeds))
        states = stage("question encoder", lambda: encode_questions(model, kv, q_ids, q_mask))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities, record_shapes=True) as prof:
            stage("decoder (all)", lambda: decoder_loglik(model, states, q_mask, a_ids, a_mask))
        # Self time of every op with an operand as wide as the vocabulary (the projection matmul, its bias,
        # the logsumexp over it, the gather of the scored tokens' rows).
        attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        total_us, vocab_us = 0.0, 0.0
        for ev in prof.key_averages(group_by_input_shape=True):
            if not ev.key.startswith("aten::"):   # kernels are also listed under their launching op
                continue
            us = getattr(ev, attr, 0.0)
            total_us += us
            if any(model.text_decoder.config.vocab_size in tuple(s) for s in (ev.input_shapes or [])
                   if isinstance(s, (list, tuple))):
                vocab_us += us
        vocab.append(vocab_us / max(total_us, 1e-9))
    med = {k: statistics.median(v) for k, v in times.items()}
    share = statistics.median(vocab)
    med["  of which vocabulary projection"] = med["decoder (all)"] * share
    med["  of which decoder layers etc."] = med["decoder (all)"] * (1 - share)
    return med


# ---------------------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=3, help="videos per configuration (default 3)")
    p.add_argument("--questions-per-video", type=int, nargs="+", default=[9], metavar="Q",
                   help="one or more values, e.g. 1 3 9 (default 9, NExT-QA's); the Q=1 set is the first "
                        "question of each video of the Q=9 set, and so on")
    p.add_argument("--frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--candidates", type=int, default=5)
    p.add_argument("--width", type=int, default=128, help="model width (ViT, text encoder, decoder); MLP 4x")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=None,
                   help="decoder vocabulary (default: 30522 at full size; narrow: 30522 x width / 768, so that the "
                        "vocabulary projection keeps its real share of the work)")
    p.add_argument("--full-size", action="store_true", help="ViT-B/16@384 and BERT-base widths (768, 12 heads, 3072)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of both paths per configuration")
    p.add_argument("--no-loop", action="store_true", help="time only the optimised path (no ratio, no check)")
    p.add_argument("--profile", action="store_true", help="split the optimised path's work on one video by stage")
    p.add_argument("--no-bf16", action="store_true", help="on cuda, run the job in float32 (as --no-bf16 of the CLI)")
    add_common_arguments(p)
    args = p.parse_args(argv)
    apply_threads(args)
    device = torch.device(args.device)
    bf16 = device.type == "cuda" and not args.no_bf16
    t_start = time.perf_counter()

    torch.manual_seed(args.seed)
    cfg = model_config(args)
    model = ALBEF(**cfg).eval().to(device)
    work = tempfile.TemporaryDirectory()
    tokenizer = make_tokenizer(Path(work.name))
    teacher = ALBEFTeacher(model, tokenizer, device=device)
    gen = torch.Generator().manual_seed(args.seed)
    frames, questions = make_data(args, gen)
    source = MemoryFrames(frames, args.frames)
    params = sum(p.numel() for p in model.parameters())
    width = cfg["vision_width"]
    print(f"ALBEF {'full size' if args.full_size else 'narrow'}: width {width}, {cfg['vision_heads']} heads, MLP "
          f"{cfg['bert_config']['intermediate_size']}, vocabulary {cfg['bert_config']['vocab_size']}, "
          f"{params / 1e6:.1f}M parameters; {args.videos} videos x "
          f"{args.frames} frames, {args.candidates} candidates; on {device}"
          f"{' (bf16 autocast for the job)' if bf16 else ''}, {torch.get_num_threads()} threads",
          file=sys.stderr, flush=True)

    # Warm-up: both paths on one video, one question, two frames.
    first = next(iter(frames))
    warm_source = MemoryFrames({first: frames[first][:2]}, 2)
    run_optimised(teacher, questions[first][:1], warm_source, bf16, device)
    if not args.no_loop:
        run_loop(teacher, questions[first][:1], warm_source, device, defaultdict(float))

    rows = []
    for qpv in args.questions_per_video:
        qs = [q for v in frames for q in questions[v][:qpv]]
        pairs = len(qs) * args.frames
        opt_t, loop_t, ratios, diffs = [], [], [], []
        loop_stages: Dict[str, float] = defaultdict(float)
        print(f"  {qpv} questions per video: {len(qs)} questions, {pairs} (frame, question) pairs",
              file=sys.stderr, flush=True)
        for r in range(args.repeats):
            order = ("opt", "loop") if r % 2 == 0 else ("loop", "opt")
            got = {}
            for which in order:
                if which == "opt":
                    s, probs, _ = run_optimised(teacher, qs, source, bf16, device)
                    opt_t.append(s)
                    got["opt"] = probs
                elif args.no_loop:
                    continue
                else:
                    s, probs = run_loop(teacher, qs, source, device, loop_stages)
                    loop_t.append(s)
                    got["loop"] = probs
                print(f"    repeat {r}: {which} {s:.2f} s", file=sys.stderr, flush=True)
            if not args.no_loop:
                ratios.append(loop_t[-1] / opt_t[-1])
                diffs.append(float((got["opt"] - got["loop"]).abs().max()))
        o = statistics.median(opt_t)
        row = {"questions_per_video": qpv, "videos": args.videos, "questions": len(qs), "pairs": pairs,
               "optimised_s": o, "optimised_times_s": opt_t,
               "optimised_videos_per_s": args.videos / o, "optimised_pairs_per_s": pairs / o,
               "optimised_frames_per_s": args.videos * args.frames / o}
        if not args.no_loop:
            lo = statistics.median(loop_t)
            row.update(loop_s=lo, loop_times_s=loop_t, loop_videos_per_s=args.videos / lo, loop_pairs_per_s=pairs / lo,
                       ratio=statistics.median(ratios), ratios=ratios, max_abs_diff=max(diffs),
                       loop_stage_share={k: v / sum(loop_stages.values()) for k, v in loop_stages.items()})
        # NExT-QA: the job's time scales with frames (vision) and pairs (text); at this questions-per-video
        # both give the same number when qpv is NExT-QA's ~8.8.
        row["nextqa_hours_optimised"] = NEXTQA_PAIRS / row["optimised_pairs_per_s"] / 3600
        if "loop_pairs_per_s" in row:
            row["nextqa_hours_loop"] = NEXTQA_PAIRS / row["loop_pairs_per_s"] / 3600
        rows.append(row)

    results = {"config": vars(args), "model": cfg, "parameters": params, "machine": {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor(), "threads": torch.get_num_threads(), "bf16": bf16,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}, "rows": rows}
    if args.profile:
        print("  profiling the optimised path on one video", file=sys.stderr, flush=True)
        qpv = max(args.questions_per_video)
        results["profile"] = {"questions_per_video": qpv, "seconds": profile_optimised(
            teacher, questions[first][:qpv], frames[first], device, repeats=3, bf16=bf16)}

    # ---- report -------------------------------------------------------------------------------
    head = ["questions / video", "pairs", "optimised (s)", "loop (s)", "loop / optimised", "max abs diff",
            "videos/s (opt, loop)", "pairs/s (opt, loop)", "NExT-QA hours (opt, loop)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        loop = "loop_s" in r
        rng = f" ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})" if loop and len(r["ratios"]) > 1 else ""
        lines.append("| " + " | ".join([
            str(r["questions_per_video"]), str(r["pairs"]), f"{r['optimised_s']:.2f}",
            f"{r['loop_s']:.2f}" if loop else "-", f"**{r['ratio']:.2f}**{rng}" if loop else "-",
            f"{r['max_abs_diff']:.1e}" if loop else "-",
            f"{r['optimised_videos_per_s']:.3f}, " + (f"{r['loop_videos_per_s']:.4f}" if loop else "-"),
            f"{r['optimised_pairs_per_s']:.1f}, " + (f"{r['loop_pairs_per_s']:.2f}" if loop else "-"),
            f"{r['nextqa_hours_optimised']:.1f}, " + (f"{r['nextqa_hours_loop']:.0f}" if loop else "-"),
        ]) + " |")
    if rows and "loop_stage_share" in rows[-1]:
        share = rows[-1]["loop_stage_share"]
        lines += ["", f"Loop, share of its time by stage ({rows[-1]['questions_per_video']} questions / video): "
                  + ", ".join(f"{k} {v:.0%}" for k, v in share.items())]
    if "profile" in results:
        prof = results["profile"]["seconds"]
        total = sum(v for k, v in prof.items() if not k.startswith("  "))
        lines += ["", f"Optimised path on one video ({args.frames} frames, {results['profile']['questions_per_video']} "
                      f"questions), median of 3:", "", "| stage | seconds | share |", "|---|---|---|"]
        for k, v in prof.items():
            lines.append(f"| {k.strip()} | {v:.3f} | {v / total:.0%} |")
        lines.append(f"| total | {total:.3f} | 100% |")
    checked = not bf16 and not args.no_loop
    if checked:
        worst = max(r["max_abs_diff"] for r in rows)
        lines += ["", f"Largest probability difference: {worst:.2e} ({'within' if worst <= 1e-4 else 'ABOVE'} 1e-4)."]
    lines += ["", f"NExT-QA extrapolation: {NEXTQA_PAIRS:,} pairs / measured pairs per second "
                  f"(ALBEF in the SpARC paper: {PAPER_HOURS:.0f} h on an RTX 3090)."]
    results["seconds_total"] = time.perf_counter() - t_start
    lines.append(f"Benchmark wall time: {results['seconds_total']:.0f} s.")
    report = "\n".join(lines)
    print(report)
    results["table"] = report
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    work.cleanup()
    if checked and worst > 1e-4:
        print("error: the optimised probabilities differ from the loop's by more than 1e-4", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
