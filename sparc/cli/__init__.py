"""The ``sparc`` command line: one module per command group (demo, priors, teachers, misfocus), the
options they share (:mod:`sparc.cli.arguments`) and how errors are reported (:mod:`sparc.cli.errors`).
The argparse code of the library lives here and nowhere else."""

from __future__ import annotations

import argparse
from typing import List, Optional

from sparc.cli import demo, misfocus, priors, teachers
from sparc.cli.errors import DEBUG_ENV, fail, report_errors, user_error_message
from sparc.distributed import end_process_group

__all__ = ["DEBUG_ENV", "build_parser", "end_process_group", "fail", "main", "report_errors", "user_error_message"]


def _version() -> str:
    """The installed distribution's version; ``sparc.__version__`` when running from a source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sparc-videoqa")
    except PackageNotFoundError:
        import sparc

        return getattr(sparc, "__version__", "unknown (not installed)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparc", description="Training-time guidance for video question answering.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed sparc-videoqa version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    # Each command group registers its own subcommands; their modules import torch, transformers and
    # the models only when a command runs.
    for group in (demo, priors, teachers, misfocus):
        group.add_subcommands(sub)

    # No prefix matching anywhere (`--teacher` must not be read as `--teacher-config`), whoever built
    # the subcommand's parser.
    for p in sub.choices.values():
        p.allow_abbrev = False
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return report_errors(args.command, args.func)(args)
    finally:
        end_process_group()
