"""The ``sparc`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

# Kept here (not imported from sparc.demo_backbones) so that --help stays instant.
BACKBONE_NAMES = ("hga", "vgt", "stage", "memory", "hme")


def _demo(args) -> int:
    from sparc.demo import run_demo

    run_demo(output_dir=args.output_dir, quick=args.quick, backbone=args.backbone)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparc", description="Training-time guidance for video question answering.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run SpARC's ablation on the embedded synthetic benchmark")
    demo.add_argument("--output-dir", default="sparc-demo", help="where results.json and the figure go (default: ./sparc-demo)")
    demo.add_argument("--quick", action="store_true", help="a smaller run, about a minute")
    demo.add_argument("--backbone", default="hga", choices=BACKBONE_NAMES,
                      help="the video-QA model to train (default: hga)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
