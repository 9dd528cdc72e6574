"""``sparc diagnose-misfocus`` (:mod:`sparc.misfocus`): its three modes, teacher, stores and synthetic."""

from __future__ import annotations

from typing import Any, Dict

from sparc.misfocus import (SYNTHETIC_EDITS, default_group, format_misfocus_table, store_misfocus, synthetic_misfocus,
                            teacher_misfocus)
from sparc.cli.arguments import (add_frame_arguments, add_teacher_arguments, frame_source_from_args, positive_int,
                                 questions_from_args, teacher_from_args)
from sparc.cli.errors import report_errors
from sparc.cli.output import write_json_result


def add_subcommands(sub) -> None:
    """Register ``sparc diagnose-misfocus``."""
    p = sub.add_parser(
        "diagnose-misfocus", allow_abbrev=False,
        help="how often the selected causal frames survive swapping 'before'/'after' (SpARC 4.1.1)",
        description="Swap 'before' and 'after' in the questions that contain them and report how often the "
                    "selected causal frames stay identical (SpARC 4.1.1). Modes: teacher (--questions --frames "
                    "--checkpoint --tokenizer), stores (--questions --store --swapped-store), --synthetic (the embedded "
                    "benchmark; there the edit swaps 'first' and 'last', or with --synthetic-edit subject the asked "
                    "subject).")
    add_frame_arguments(p, required=False)   # teacher and store modes; --synthetic needs none
    add_teacher_arguments(p)
    p.add_argument("--store", default=None, metavar="DIR", help="store mode: priors of the original questions")
    p.add_argument("--swapped-store", default=None, metavar="DIR",
                   help="store mode: priors of the swapped questions, same qids")
    p.add_argument("--synthetic", action="store_true",
                   help="the embedded synthetic benchmark with the demo's teacher")
    p.add_argument("--synthetic-edit", default="order", choices=SYNTHETIC_EDITS,
                   help="--synthetic: swap 'first' and 'last' in the temporal questions (default), or the asked "
                        "subject for the video's other one in every question")
    p.add_argument("--threshold", type=float, default=None,
                   help="keep frames with P[t, answer] > threshold (default: 0.5)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="keep the K frames with the highest P[t, answer] instead of thresholding")
    p.add_argument("--empty", default="all", choices=("all", "top1", "skip"),
                   help="a question with no frame above the threshold keeps: all frames (default, as training), "
                        "its best frame, or none")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="question field to group by (default: 'type' when every question has one)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="use the first N questions only")
    p.add_argument("--progress", action="store_true", help="show a progress bar (teacher mode)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the result (with per-question records) here")
    p.set_defaults(func=report_errors("diagnose-misfocus", _run))


def _run(args) -> int:
    # Expected errors (a missing file, a bad value) become one line through report_errors (add_subcommands).
    result = _dispatch(args)
    print(format_misfocus_table(result))
    if args.json:
        write_json_result(args.json, result)
    return 0


def _dispatch(args) -> Dict[str, Any]:
    common = {"empty": args.empty, "top_k": args.top_k}
    if args.synthetic:
        if args.store or args.swapped_store or args.questions or args.frames:
            raise ValueError("--synthetic takes none of --questions, --frames, --store, --swapped-store")
        return synthetic_misfocus(threshold=args.threshold, limit=args.limit, edit=args.synthetic_edit, **common)
    if args.questions is None:
        raise ValueError("give --questions FILE (with --frames, --checkpoint and --tokenizer, or with --store and "
                         "--swapped-store), or --synthetic")
    questions = questions_from_args(args)
    if args.limit is not None:
        questions = questions[:args.limit]
    threshold = 0.5 if args.threshold is None else args.threshold
    if args.store or args.swapped_store:
        if not (args.store and args.swapped_store):
            raise ValueError("store mode needs both --store and --swapped-store")
        if args.frames:
            raise ValueError("give either --frames (teacher mode) or --store/--swapped-store (store mode), not both")
        from sparc.priors import PriorStore

        by = args.by or default_group(questions)
        return store_misfocus(PriorStore.open(args.store), PriorStore.open(args.swapped_store), questions,
                              threshold, by=by, **common)
    if args.frames is None:
        raise ValueError("teacher mode needs --frames ROOT (or give --store and --swapped-store)")
    by = args.by or default_group(questions)
    source = frame_source_from_args(args)
    teacher = teacher_from_args(args)
    return teacher_misfocus(teacher, source, questions, threshold, by=by, progress=args.progress, **common)
