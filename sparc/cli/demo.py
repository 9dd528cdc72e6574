"""``sparc demo``: SpARC's ablation on the embedded synthetic benchmark (:mod:`sparc.demo`)."""

from __future__ import annotations

from sparc.cli.arguments import positive_int


def _run(args) -> int:
    from sparc.demo import DemoSettings, run_demo

    settings = DemoSettings.make(args.quick, args.backbone, configs=args.configs, seeds=args.seeds, epochs=args.epochs,
                                 techniques=args.techniques, frames=args.frames)
    run_demo(output_dir=args.output_dir, settings=settings)
    return 0


def add_subcommands(sub) -> None:
    """Register ``sparc demo``."""
    from sparc.backbones import BACKBONES  # imports no model code

    demo = sub.add_parser("demo", help="run SpARC's ablation on the embedded synthetic benchmark")
    demo.add_argument("--output-dir", default="sparc-demo", help="where results.json and the figure go (default: ./sparc-demo)")
    demo.add_argument("--quick", action="store_true",
                      help="a smoke run of the whole pipeline (one seed, small budget): its numbers say nothing about SpARC")
    demo.add_argument("--configs", nargs="+", default=None, metavar="CONFIG",
                      help="configs to train besides plain (default: '+T+S' '+T+S whole-CE'; the others: '+T' '+S' "
                           "'+T+S+TGM' '+T+S+mixup' '+T+S detach' '+T+S detach+whole-CE')")
    demo.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED", help="seeds (default: 0 1 2)")
    demo.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="training epochs (default: 10; VGT 8)")
    demo.add_argument("--backbone", default="hga", choices=BACKBONES.names("demo"),
                      help="the video-QA model to train (default: hga)")
    demo.add_argument("--techniques", default=None, metavar="A,B,...",
                      help="rows from technique short names, added one at a time: plain, +A, +A+B, ... (e.g. "
                           "sparc,span,attention,contrastive; sparc = T and S; the others: T S TGM mixup span "
                           "attention contrastive); span, attention and contrastive need --backbone stage")
    demo.add_argument("--frames", nargs="+", default=None, metavar="CHOICE",
                      choices=("teacher", "gt", "teacher&gt", "teacher|gt"),
                      help="with --techniques: retrain its first row that reads causal frames on each choice: "
                           "gt the ground-truth span, teacher&gt / teacher|gt its intersection / union with the "
                           "teacher's frames (quote them in a shell); --backbone stage")
    demo.set_defaults(func=_run)
