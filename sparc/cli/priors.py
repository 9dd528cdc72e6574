"""The prior-store commands: ``sparc extract-priors`` (:mod:`sparc.priors.extract`), ``sparc priors-stats``
and ``sparc viz-priors`` (:mod:`sparc.prior_tools`, :mod:`sparc.viz`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from sparc.cli.arguments import (add_frame_arguments, add_teacher_arguments, frame_id_source_from_args,
                                 positive_int, questions_from_args, teacher_from_args)
from sparc.cli.errors import fail, report_errors
from sparc.cli.output import write_json_result


def _open_priors(args):
    """(store, answers, by) for the prior tools; ``by`` defaults to "type" when every answer has one.
    Questions of the videos that extraction skipped for lack of frames (the store's ``skipped_videos``)
    are left out of the answers, with a note saying how many."""
    from sparc.prior_tools import load_answers
    from sparc.priors import PriorStore

    store = PriorStore.open(args.store)
    answers = load_answers(args.answers, store)
    skipped = {q for qids in (store.metadata.get("skipped_videos") or {}).values() for q in qids}
    left_out = {q for q in answers if q in skipped and q not in store}
    if left_out:
        answers = {q: r for q, r in answers.items() if q not in left_out}
        print(f"sparc {args.command}: note: {len(left_out)} question(s) of the videos skipped at extraction "
              f"(skipped_videos in {args.store}/store.json) are left out", file=sys.stderr)
    by = args.by
    if by is None and answers and all("type" in r.fields for r in answers.values()):
        by = "type"
    return store, answers, by


def _priors_stats(args) -> int:
    from sparc.prior_tools import format_table, prior_stats

    try:
        store, answers, by = _open_priors(args)
        stats = prior_stats(store, answers, args.thresholds, by=by)
        if args.grounding:
            from sparc.grounding import format_grounding, prior_grounding, read_nextgqa

            stats["grounding"] = prior_grounding(store, answers, read_nextgqa(args.grounding), args.thresholds, by=by)
    except (ValueError, KeyError, TypeError, OSError) as e:
        return fail("priors-stats", e)
    print(format_table(stats))
    if args.grounding:
        print(f"\ngrounding of the selected frames against {args.grounding} "
              f"({stats['grounding']['questions']} questions; percent):")
        print(format_grounding(stats["grounding"]))
    if args.json:
        write_json_result(args.json, stats)
    return 0


def _viz_priors(args) -> int:
    try:
        store, answers, by = _open_priors(args)
        from sparc.prior_tools import check_answers

        check_answers(store, answers, by)
        if args.qids:
            unknown = [q for q in args.qids if q not in answers]
            if unknown:
                raise ValueError(f"qid {unknown[0]!r}: given with --qids but not in answers file {args.answers!r} "
                                 f"(field: qid)")
            records = [answers[q] for q in dict.fromkeys(args.qids)]
        else:
            records = list(answers.values())
        if args.limit is not None:
            records = records[: args.limit]
        try:
            from sparc.viz import prior_figures

            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("viz-priors needs matplotlib: pip install 'sparc-videoqa[viz]'") from None
        names = prior_figures(args.out, store, records, threshold=args.threshold, by=by)
    except (ValueError, KeyError, TypeError, OSError) as e:
        return fail("viz-priors", e)
    print(f"wrote {len(names)} figures and {os.path.join(args.out, 'index.html')}")
    return 0


def _add_prior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", metavar="STORE", help="prior store directory (e.g. sparc-demo/priors/test)")
    p.add_argument("--answers", required=True, metavar="FILE",
                   help="JSON or CSV mapping qid -> answer index (and optional fields such as type), or the "
                        "questions file the store was extracted from")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="answers-file field to group by (default: 'type' when every question has one)")


def add_subcommands(sub) -> None:
    """Register ``sparc priors-stats``, ``sparc viz-priors`` and ``sparc extract-priors``."""
    stats = sub.add_parser("priors-stats", help="how many frames each threshold keeps in a prior store",
                           allow_abbrev=False)
    _add_prior_args(stats)
    stats.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7], metavar="T",
                       help="selection thresholds (default: 0.3 0.5 0.7)")
    stats.add_argument("--json", default=None, metavar="OUT", help="also write the statistics as JSON here")
    stats.add_argument("--grounding", default=None, metavar="FILE",
                       help="human time spans (NExT-GQA's gsub_{val,test}.json): also report how well the selected "
                            "frames ground each question (IoU/IoP per threshold and group)")
    stats.set_defaults(func=_priors_stats)

    viz = sub.add_parser("viz-priors", help="one PNG per question of P[frame, answer] and an index.html",
                         allow_abbrev=False)
    _add_prior_args(viz)
    viz.add_argument("--out", required=True, metavar="DIR", help="where the PNGs and index.html go")
    viz.add_argument("--qids", nargs="+", default=None, help="questions to draw (default: all in the answers file)")
    viz.add_argument("--limit", type=positive_int, default=None, metavar="N", help="draw at most N questions")
    viz.add_argument("--threshold", type=float, default=0.5, help="selection threshold (default: 0.5)")
    viz.set_defaults(func=_viz_priors)

    p = sub.add_parser("extract-priors", allow_abbrev=False,
                       help="score every (frame, question) of a dataset with the image-QA teacher into a prior store "
                            "(resumable; accelerate launch splits videos)")
    add_frame_arguments(p)
    add_teacher_arguments(p)
    p.add_argument("--out", required=True, metavar="STORE", help="prior store directory to write (or resume)")
    p.add_argument("--frame-ids", default=None, metavar="JSON",
                   help="frames chosen per question instead of --num-frames/--clips: {qid: [1-indexed frame numbers]} "
                        "read as <frames>/[<folder>/]<video>/00042.jpg (STAGE's 0.5-fps frames: "
                        "recipes/tvqaplus.py --write-frame-ids); the store keeps each question's frame count")
    p.add_argument("--answers-from", default=None, metavar="TRAIN_FILE",
                   help="open-ended datasets: candidates = answers occurring more than once in this train file")
    p.add_argument("--min-answer-count", type=int, default=2, metavar="N",
                   help="with --answers-from: keep answers seen at least N times (default 2, SpARC 3.1)")
    p.add_argument("--scoring", default="sum", choices=("sum", "mean", "albef_rank"),
                   help="candidate score: summed log-likelihood (default), length-normalised, or ALBEF's rank_answer")
    p.add_argument("--rank-k", type=int, default=None, metavar="K", help="albef_rank: decode only the K candidates with the most likely first token per (question, "
                        "frame), as ALBEF's rank_answer (128 there); the others get probability 0")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                   help="storage precision (default float16: half the disk, 3 significant digits)")
    p.add_argument("--videos-per-shard", type=int, default=256, metavar="N", help="videos per store shard (default 256)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N", help="frame-decoding workers (default 2)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available; per process under accelerate)")
    p.add_argument("--no-bf16", action="store_true", help="on CUDA, run the teacher in float32 instead of bf16 autocast")
    p.add_argument("--frame-chunk", type=int, default=64, metavar="N", help="frames per vision pass (memory only)")
    p.add_argument("--max-videos", type=int, default=None, metavar="N", help="stop after N videos (smoke runs)")
    p.add_argument("--skip-missing", action="store_true",
                   help="skip videos without frames under --frames (listed with their qids in the store's metadata, "
                        "skipped_videos) instead of stopping with an error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=report_errors("extract-priors", _extract))


def _device(requested: Optional[str]):
    import torch

    if requested:
        return torch.device(requested)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _extract(args) -> int:
    from sparc.data.questions import group_by_video, open_answer_set
    from sparc.priors.extract import (SKIPPED_KEY, check_no_missing, extract_dataset_priors, missing_videos,
                                      unstored_videos)

    questions = questions_from_args(args)
    answers = None
    if args.answers_from:
        answers = open_answer_set(questions_from_args(args, "--answers-from"), args.min_answer_count)
        if not answers:
            raise ValueError(f"{args.answers_from}: no answer occurs {args.min_answer_count} times (field: answer)")
    questions, frames = frame_id_source_from_args(args, questions)
    # Before the teacher is loaded (a minute for the full ALBEF): a missing video fails now.
    groups = group_by_video(questions)
    if not args.skip_missing:
        check_no_missing(missing_videos(frames, groups, unstored_videos(groups, args.out)), groups)
    kwargs = {"frame_chunk": args.frame_chunk, "device": _device(args.device)}
    if getattr(args, "teacher", "albef") == "albef":
        kwargs.update(scoring=args.scoring, rank_k=args.rank_k)
    elif args.scoring != "sum":
        kwargs["length_normalize"] = args.scoring == "mean"
    teacher = teacher_from_args(args, **kwargs)
    meta = {"teacher": getattr(args, "teacher", "albef"), "checkpoint": os.path.basename(args.checkpoint or ""),
            "scoring": args.scoring, "num_frames": args.num_frames, "clips": args.clips,
            "questions": os.path.basename(args.questions)}
    if args.frame_ids:   # the frames come from this file: --num-frames and --clips do not apply
        meta.update(num_frames=frames.num_frames, clips=None, frame_ids=os.path.basename(args.frame_ids))
    stats = extract_dataset_priors(teacher, questions, frames, args.out, answer_set=answers,
                                   num_workers=args.num_workers, videos_per_shard=args.videos_per_shard,
                                   dtype=args.dtype, metadata=meta, progress=not args.no_progress,
                                   bf16=not args.no_bf16, max_videos=args.max_videos, skip_missing=args.skip_missing)
    print(f"{stats['videos']} videos, {stats['questions']} questions, {stats['pairs']} (frame, question) pairs in "
          f"{stats['seconds']:.1f} s ({stats['videos_per_s']:.2f} videos/s, {stats['pairs_per_s']:.1f} pairs/s) "
          f"-> {args.out}")
    if stats["skipped_videos"]:
        print(f"sparc extract-priors: warning: skipped {stats['skipped_videos']} video(s) without frames under "
              f"{args.frames}; they and their qids are listed in {os.path.join(args.out, 'store.json')} "
              f"(metadata: {SKIPPED_KEY})", file=sys.stderr)
    return 0
