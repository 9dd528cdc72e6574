"""The ``sparc`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional

def _demo(args) -> int:
    from sparc.demo import DemoSettings, run_demo

    settings = DemoSettings.make(args.quick, args.backbone, configs=args.configs, seeds=args.seeds, epochs=args.epochs)
    run_demo(output_dir=args.output_dir, settings=settings)
    return 0


# ---- errors: expected user errors are one line, bugs keep their traceback ----------------------------

DEBUG_ENV = "SPARC_DEBUG"   # SPARC_DEBUG=1: tracebacks for user errors too


def user_error_message(err: BaseException) -> Optional[str]:
    """The one-line message of an expected user error, ``None`` for anything else (a bug: it keeps its
    traceback). Expected: an OSError (a missing file, a full disk), a ValueError (sparc's checks of the
    input raise them, wording the message for the user), a KeyError naming a qid (the store's lookups)."""
    if isinstance(err, KeyError):
        msg = str(err.args[0]) if err.args else ""
        return msg if "qid" in msg else None
    if isinstance(err, (ValueError, OSError)):
        return " ".join(str(err).split("\n")) or type(err).__name__
    return None


def _fail(command: str, err: Exception) -> int:
    """Print ``sparc <command>: error: <message>`` and return exit status 2 (re-raise under SPARC_DEBUG)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise err
    msg = user_error_message(err)
    if msg is None:  # a TypeError and the like from the prior tools' own checks
        msg = str(err)
    print(f"sparc {command}: error: {msg}", file=sys.stderr)
    return 2


def report_errors(command: str, run: Callable) -> Callable:
    """``run(args) -> int`` with the expected user errors (:func:`user_error_message`) reported as one
    line on stderr and exit status 2 instead of a traceback; other exceptions propagate."""
    def wrapped(args) -> int:
        try:
            return run(args)
        except (ValueError, KeyError, OSError) as e:
            if user_error_message(e) is None:
                raise
            return _fail(command, e)

    return wrapped


def _version() -> str:
    """The installed distribution's version; ``sparc.__version__`` when running from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sparc-videoqa")
    except PackageNotFoundError:
        import sparc

        return getattr(sparc, "__version__", "unknown (not installed)")


def _teacher_workspace(args) -> int:
    from pathlib import Path

    from sparc.teachers.tiny import teacher_workflow_commands, write_tiny_teacher_workspace

    root = Path(args.dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{args.dir!r} already exists and is not an empty directory; give a new folder")
    write_tiny_teacher_workspace(root, checkpoint=True)
    print(f"wrote a tiny ALBEF teacher workspace in {args.dir} (random frames and weights: it shows the workflow, "
          "its numbers mean nothing)")
    print("the teacher workflow on it (fine-tune, extract priors, inspect them, diagnose misfocus):")
    for line in teacher_workflow_commands(args.dir):
        print(line)
    return 0


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
    import json

    from sparc.prior_tools import format_table, prior_stats

    try:
        store, answers, by = _open_priors(args)
        stats = prior_stats(store, answers, args.thresholds, by=by)
    except (ValueError, KeyError, TypeError, OSError) as e:
        return _fail("priors-stats", e)
    print(format_table(stats))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
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
        return _fail("viz-priors", e)
    import os

    print(f"wrote {len(names)} figures and {os.path.join(args.out, 'index.html')}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def _add_prior_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", metavar="STORE", help="prior store directory (e.g. sparc-demo/priors/test)")
    p.add_argument("--answers", required=True, metavar="FILE",
                   help="JSON or CSV mapping qid -> answer index (and optional fields such as type), or the "
                        "questions file the store was extracted from")
    p.add_argument("--by", default=None, metavar="FIELD",
                   help="answers-file field to group by (default: 'type' when every question has one)")


def build_parser() -> argparse.ArgumentParser:
    from sparc.backbones import BACKBONES  # imports no model code

    parser = argparse.ArgumentParser(prog="sparc", description="Training-time guidance for video question answering.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed sparc-videoqa version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run SpARC's ablation on the embedded synthetic benchmark")
    demo.add_argument("--output-dir", default="sparc-demo", help="where results.json and the figure go (default: ./sparc-demo)")
    demo.add_argument("--quick", action="store_true",
                      help="a smoke run of the whole pipeline (one seed, small budget): its numbers say nothing about SpARC")
    demo.add_argument("--configs", nargs="+", default=None, metavar="CONFIG",
                      help="configs to train besides plain (default: '+T+S' '+T+S whole-CE'; the others: '+T' '+S' "
                           "'+T+S+TGM' '+T+S+mixup' '+T+S detach' '+T+S detach+whole-CE')")
    demo.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED", help="seeds (default: 0 1 2)")
    demo.add_argument("--epochs", type=_positive_int, default=None, metavar="N", help="training epochs (default: 10; VGT 8)")
    demo.add_argument("--backbone", default="hga", choices=BACKBONES.names("demo"),
                      help="the video-QA model to train (default: hga)")
    demo.set_defaults(func=_demo)

    stats = sub.add_parser("priors-stats", help="how many frames each threshold keeps in a prior store",
                           allow_abbrev=False)
    _add_prior_args(stats)
    stats.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5, 0.7], metavar="T",
                       help="selection thresholds (default: 0.3 0.5 0.7)")
    stats.add_argument("--json", default=None, metavar="OUT", help="also write the statistics as JSON here")
    stats.set_defaults(func=_priors_stats)

    viz = sub.add_parser("viz-priors", help="one PNG per question of P[frame, answer] and an index.html",
                         allow_abbrev=False)
    _add_prior_args(viz)
    viz.add_argument("--out", required=True, metavar="DIR", help="where the PNGs and index.html go")
    viz.add_argument("--qids", nargs="+", default=None, help="questions to draw (default: all in the answers file)")
    viz.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="draw at most N questions")
    viz.add_argument("--threshold", type=float, default=0.5, help="selection threshold (default: 0.5)")
    viz.set_defaults(func=_viz_priors)

    # The teacher jobs register themselves; their modules import torch/transformers only when run.
    from sparc.misfocus import add_subcommand as add_misfocus
    from sparc.priors.extract import add_subcommand as add_extract
    from sparc.teachers.finetune import add_subcommand as add_finetune

    add_extract(sub)
    add_finetune(sub)
    add_misfocus(sub)

    ws = sub.add_parser("teacher-workspace", allow_abbrev=False,
                        help="write a tiny ALBEF teacher workspace and print the teacher workflow's commands on it")
    ws.add_argument("dir", metavar="DIR", help="folder to create (new or empty), e.g. teacher-demo")
    ws.set_defaults(func=report_errors("teacher-workspace", _teacher_workspace))

    # No prefix matching anywhere (`--teacher` must not be read as `--teacher-config`), also for the
    # subcommands whose parsers are built elsewhere.
    for p in sub.choices.values():
        p.allow_abbrev = False
    return parser


def end_process_group() -> None:
    """Shut a multi-process run's process group down before the interpreter exits: left to exit, gloo's
    threads can be torn down while still joinable and abort the process (SIGABRT after a finished run)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return report_errors(args.command, args.func)(args)
    finally:
        end_process_group()


if __name__ == "__main__":
    sys.exit(main())
