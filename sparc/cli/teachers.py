"""The teacher commands: ``sparc teacher-finetune`` (:mod:`sparc.teachers.finetune`) and
``sparc teacher-workspace`` (:mod:`sparc.teachers.tiny`)."""

from __future__ import annotations

from sparc.cli.arguments import (add_frame_arguments, add_teacher_arguments, albef_from_args, frame_source_from_args,
                                 questions_from_args)
from sparc.cli.errors import report_errors


def add_subcommands(sub) -> None:
    """Register ``sparc teacher-finetune`` and ``sparc teacher-workspace``."""
    p = sub.add_parser("teacher-finetune", allow_abbrev=False,
                       help="fine-tune the ALBEF teacher on a video dataset's frames (SpARC A.1)")
    add_frame_arguments(p)
    add_teacher_arguments(p, kinds=("albef",), tokenizer_required=True)
    p.add_argument("--output-dir", required=True, metavar="DIR", help="checkpoints and albef-finetuned.safetensors")
    p.add_argument("--epochs", type=int, default=5, metavar="N", help="passes over the dataset (default 5, SpARC A.4)")
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate, constant (default 2e-5, SpARC A.4)")
    p.add_argument("--weight-decay", type=float, default=0.01,
                   help="weight decay on weight matrices (default 0.01, SpARC A.4)")
    p.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default="adamw",
                   help="adamw: ALBEF's (default); adam: torch.optim.Adam with L2; sgd: plain SGD (for checks)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="(frame, question) pairs per step and process (default 32)")
    p.add_argument("--pool-videos", type=int, default=8, metavar="N",
                   help="videos decoded together and shuffled within (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and dropout (default 0)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop after N optimizer steps (writes the weights; a rerun resumes)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                   help="accelerate's mixed precision (default: no)")
    p.add_argument("--num-workers", type=int, default=2, metavar="N", help="frame-decoding workers (default 2)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="steps between checkpoints (0: every epoch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=report_errors("teacher-finetune", _finetune))

    ws = sub.add_parser("teacher-workspace", allow_abbrev=False,
                        help="write a tiny ALBEF teacher workspace and print the teacher workflow's commands on it")
    ws.add_argument("dir", metavar="DIR", help="folder to create (new or empty), e.g. teacher-demo")
    ws.set_defaults(func=report_errors("teacher-workspace", _workspace))


def _finetune(args) -> int:
    from sparc.teachers.finetune import finetune_teacher
    from sparc.teachers.load import load_bert_tokenizer

    questions = questions_from_args(args)
    frames = frame_source_from_args(args)
    model = albef_from_args(args)   # checks --tokenizer too
    tokenizer = load_bert_tokenizer(args.tokenizer)
    result = finetune_teacher(
        model, tokenizer, questions, frames, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
        optimizer=args.optimizer, batch_size=args.batch_size, pool_videos=args.pool_videos, seed=args.seed,
        output_dir=args.output_dir, checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
        mixed_precision=args.mixed_precision, num_workers=args.num_workers, progress=not args.no_progress)
    if result.output_path:
        state = "done" if result.completed else f"stopped at step {result.global_step}"
        print(f"{state}: {result.global_step} steps, last loss {result.losses[-1] if result.losses else float('nan'):.4f}; "
              f"weights in {result.output_path}")
    return 0


def _workspace(args) -> int:
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
