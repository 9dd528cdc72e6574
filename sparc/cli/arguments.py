"""The options the teacher jobs share (``extract-priors``, ``teacher-finetune``, ``diagnose-misfocus``),
and the argument types of every command.

A path that does not exist is a ``FileNotFoundError`` naming it and its option, raised before any
loader (torch, transformers) sees it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Union

from sparc.teachers.load import TEACHER_KINDS, build_albef, load_teacher

PathLike = Union[str, Path]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def existing_path(path: PathLike, option: str, kind: str = "file") -> Path:
    """``path`` (from ``option``, e.g. ``"--checkpoint"``) when it exists as ``kind`` (``"file"``,
    ``"dir"`` or ``"any"``); else ``FileNotFoundError`` / ``IsADirectoryError`` / ``NotADirectoryError``
    naming the path and the option, before any loader gets to misreport it."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{option} {str(p)!r}: no such file or directory")
    if kind == "file" and p.is_dir():
        raise IsADirectoryError(f"{option} {str(p)!r} is a directory; a file is expected")
    if kind == "dir" and not p.is_dir():
        raise NotADirectoryError(f"{option} {str(p)!r} is a file; a directory is expected")
    return p


def add_teacher_arguments(parser, kinds=TEACHER_KINDS, tokenizer_required: bool = False) -> None:
    """The options every teacher job takes: ``--teacher --checkpoint --random-init --tokenizer
    --teacher-config --trust-checkpoint`` (read back with :func:`teacher_from_args`)."""
    if len(kinds) > 1:
        parser.add_argument("--teacher", default=kinds[0], choices=kinds, help=f"teacher kind (default: {kinds[0]})")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="teacher weights: ALBEF vqa.pth / ALBEF.pth / .safetensors, or a BLIP directory")
    parser.add_argument("--random-init", action="store_true",
                        help="ALBEF without --checkpoint: untrained random weights (meaningless scores; smoke runs "
                             "and benchmarks only)")
    parser.add_argument("--tokenizer", required=tokenizer_required, default=None, metavar="PATH",
                        help="bert-base-uncased directory or its vocab.txt (local; nothing is downloaded)")
    parser.add_argument("--teacher-config", default=None, metavar="JSON",
                        help="ALBEF constructor arguments as JSON, the sizes the checkpoint was trained with "
                             "(default: the released ViT-B/16@384 model)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle a torch checkpoint fully (ALBEF's .pth files pickle their config)")


def _command(args) -> str:
    return f"sparc {args.command}" if getattr(args, "command", None) else "sparc"


def check_teacher_args(args) -> None:
    """The teacher options' files exist (errors name the option) and random weights are asked for:
    ALBEF without ``--checkpoint`` needs ``--random-init``, which then prints a warning line."""
    import sys

    kind = getattr(args, "teacher", "albef")
    random_init = getattr(args, "random_init", False)
    if kind == "albef":
        if args.checkpoint is None and not random_init:
            raise ValueError("no --checkpoint given: the ALBEF teacher would score with random, untrained weights; "
                             "pass --checkpoint PATH (vqa.pth, ALBEF.pth or .safetensors) or, for a smoke run, "
                             "--random-init")
        if args.checkpoint is not None and random_init:
            raise ValueError("--random-init and --checkpoint exclude each other")
        if args.checkpoint is not None:
            existing_path(args.checkpoint, "--checkpoint", "file")
        if args.teacher_config is not None:
            existing_path(args.teacher_config, "--teacher-config", "file")
    else:
        if random_init:
            raise ValueError(f"--random-init is for the ALBEF teacher only; --teacher {kind} needs --checkpoint DIR")
        if args.checkpoint is None:
            raise ValueError(f"--teacher {kind} needs --checkpoint DIR (a local save_pretrained directory)")
        existing_path(args.checkpoint, "--checkpoint", "dir")
    if args.tokenizer is not None:
        tok = existing_path(args.tokenizer, "--tokenizer", "any")
        if tok.is_dir() and not (tok / "vocab.txt").is_file():
            raise FileNotFoundError(f"--tokenizer {str(tok)!r}: the directory has no vocab.txt")
    if random_init:
        print(f"{_command(args)}: warning: --random-init: the teacher has untrained random weights, so its scores "
              "mean nothing (a smoke run only)", file=sys.stderr)


def albef_from_args(args):
    """:func:`build_albef` from the options of :func:`add_teacher_arguments` (checked first)."""
    check_teacher_args(args)
    return build_albef(args.teacher_config, args.checkpoint, trust_checkpoint=args.trust_checkpoint,
                       random_init=getattr(args, "random_init", False))


def teacher_from_args(args, **kwargs):
    """:func:`load_teacher` from the options of :func:`add_teacher_arguments` (checked first)."""
    check_teacher_args(args)
    return load_teacher(getattr(args, "teacher", "albef"), args.checkpoint, args.tokenizer, args.teacher_config,
                        trust_checkpoint=args.trust_checkpoint, random_init=getattr(args, "random_init", False),
                        **kwargs)


def add_frame_arguments(parser, required: bool = True, num_frames: int = 16) -> None:
    """``--questions --frames --num-frames --clips``: which questions, and which frames of their videos."""
    parser.add_argument("--questions", required=required, default=None, metavar="FILE",
                        help="annotation file: NExT-QA/ATP-hard CSV, TGIF-QA TSV, TVQA+ JSON, or JSON/JSONL records")
    parser.add_argument("--frames", required=required, default=None, metavar="ROOT",
                        help="a frame folder or a video file (.mp4, .webm, ...) per video id under ROOT")
    parser.add_argument("--num-frames", type=int, default=num_frames, metavar="N",
                        help=f"frames sampled uniformly per video (default {num_frames}; SpARC: 16 NExT-QA, 8 AGQA)")
    parser.add_argument("--clips", type=int, default=None, metavar="K",
                        help="clip backbones (VGT): N frames in K clips, the first frame of each clip is scored")


def questions_from_args(args, option: str = "--questions"):
    """:func:`~sparc.data.questions.read_questions` of the file given with ``option``."""
    from sparc.data.questions import read_questions

    value = getattr(args, option.lstrip("-").replace("-", "_"))
    return read_questions(existing_path(value, option, "file"))


def frame_source_from_args(args):
    from sparc.data.frames import FrameSource

    return FrameSource(existing_path(args.frames, "--frames", "dir"), args.num_frames, clips=args.clips)


def frame_id_source_from_args(args, questions):
    """With ``--frame-ids``: ``(questions regrouped by the frames they read, FrameIdSource)`` (frames chosen
    per question, e.g. STAGE's); the questions unchanged and ``frame_source_from_args`` otherwise."""
    if not getattr(args, "frame_ids", None):
        return questions, frame_source_from_args(args)
    from sparc.data.frames import FrameIdSource, frame_id_groups, read_frame_ids

    path = existing_path(args.frame_ids, "--frame-ids", "file")
    questions, groups = frame_id_groups(questions, read_frame_ids(path), source=str(path))
    return questions, FrameIdSource(existing_path(args.frames, "--frames", "dir"), groups)

