"""Building a teacher from files on disk, as the command-line jobs do (``extract-priors``,
``teacher-finetune``, ``diagnose-misfocus``). Nothing is downloaded: every path is local.

* ALBEF: ``--checkpoint`` a ``vqa.pth`` / ``ALBEF.pth`` / ``.safetensors`` (or none: random weights,
  for tests and benchmarks), ``--tokenizer`` a directory with ``vocab.txt`` (bert-base-uncased) or the
  ``vocab.txt`` itself, ``--teacher-config`` an optional JSON of :class:`ALBEF`'s constructor
  arguments (``image_res``, ``vision_width``, ``vision_depth``, ``vision_heads``, ``decoder_layers``,
  ``patch_size``, ``bert_config``: a dict or the path of ALBEF's ``config_bert.json``); defaults are
  the released model (ViT-B/16 at 384, BERT-base, 6 decoder layers).
* BLIP: ``--checkpoint`` a local ``BlipForQuestionAnswering.save_pretrained`` directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

PathLike = Union[str, Path]

TEACHER_KINDS = ("albef", "blip")
ALBEF_CONFIG_KEYS = ("image_res", "vision_width", "vision_depth", "vision_heads", "bert_config",
                     "decoder_layers", "patch_size")


def read_albef_config(config: Union[None, PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """ALBEF constructor arguments from a JSON file or a dict; ``bert_config`` may be a path."""
    if config is None:
        return {}
    where = str(config) if isinstance(config, (str, Path)) else "teacher config"
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text(encoding="utf-8"))
    config = dict(config)
    unknown = sorted(set(config) - set(ALBEF_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown ALBEF setting(s) {unknown}; known: {list(ALBEF_CONFIG_KEYS)}")
    bert = config.get("bert_config")
    if isinstance(bert, str):
        config["bert_config"] = json.loads(Path(bert).read_text(encoding="utf-8"))
    return config


def load_bert_tokenizer(path: PathLike):
    """bert-base-uncased's tokenizer from a local directory or ``vocab.txt``."""
    from transformers import BertTokenizer

    path = Path(path)
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise FileNotFoundError(f"tokenizer: no vocab.txt at {path} (give the directory of bert-base-uncased "
                                "or its vocab.txt; nothing is downloaded)")
    return BertTokenizer(str(vocab), do_lower_case=True)


def build_albef(config: Union[None, PathLike, Mapping[str, Any]] = None, checkpoint: Optional[PathLike] = None,
                trust_checkpoint: bool = False):
    """An :class:`~sparc.teachers.albef.ALBEF` from its config, with a checkpoint's weights if given."""
    from sparc.teachers.albef import ALBEF, load_albef_checkpoint

    model = ALBEF(**read_albef_config(config))
    if checkpoint is not None:
        load_albef_checkpoint(model, checkpoint, trust_checkpoint=trust_checkpoint)
    return model.eval()


def load_teacher(kind: str = "albef", checkpoint: Optional[PathLike] = None, tokenizer: Optional[PathLike] = None,
                 config: Union[None, PathLike, Mapping[str, Any]] = None, device=None, length_normalize: bool = False,
                 trust_checkpoint: bool = False, frame_chunk: int = 64, **teacher_kwargs):
    """An :class:`~sparc.teachers.base.ImageQATeacher` from local files (see the module docstring);
    ``teacher_kwargs`` go to the teacher class (e.g. ALBEF's ``scoring``, ``rank_k``, ``max_rows``)."""
    if kind == "albef":
        from sparc.teachers.albef import ALBEFTeacher

        if tokenizer is None:
            raise ValueError("the ALBEF teacher needs --tokenizer (a local bert-base-uncased directory or vocab.txt)")
        model = build_albef(config, checkpoint, trust_checkpoint)
        return ALBEFTeacher(model, load_bert_tokenizer(tokenizer), length_normalize=length_normalize,
                            frame_chunk=frame_chunk, device=device, **teacher_kwargs)
    if kind == "blip":
        from sparc.teachers.hf_vqa import BlipTeacher

        if checkpoint is None:
            raise ValueError("the BLIP teacher needs --checkpoint (a local BlipForQuestionAnswering directory)")
        tok = load_bert_tokenizer(tokenizer) if tokenizer is not None else None
        return BlipTeacher(Path(checkpoint), tokenizer=tok, length_normalize=length_normalize,
                           frame_chunk=frame_chunk, device=device, **teacher_kwargs)
    raise ValueError(f"unknown teacher {kind!r}; choose one of {TEACHER_KINDS}")


# --------------------------------------------------------------------------- command-line arguments


def add_teacher_arguments(parser, kinds=TEACHER_KINDS, tokenizer_required: bool = False) -> None:
    """The options every teacher job takes: ``--teacher --checkpoint --tokenizer --teacher-config
    --trust-checkpoint`` (read back with :func:`teacher_from_args`)."""
    if len(kinds) > 1:
        parser.add_argument("--teacher", default=kinds[0], choices=kinds, help=f"teacher kind (default: {kinds[0]})")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="teacher weights: ALBEF vqa.pth / ALBEF.pth / .safetensors, or a BLIP directory "
                             "(ALBEF without one: random weights, for smoke runs)")
    parser.add_argument("--tokenizer", required=tokenizer_required, default=None, metavar="PATH",
                        help="bert-base-uncased directory or its vocab.txt (local; nothing is downloaded)")
    parser.add_argument("--teacher-config", default=None, metavar="JSON",
                        help="ALBEF constructor arguments as JSON (default: the released ViT-B/16@384 model)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle a torch checkpoint fully (ALBEF's .pth files pickle their config)")


def teacher_from_args(args, **kwargs):
    """:func:`load_teacher` from the options of :func:`add_teacher_arguments`."""
    return load_teacher(getattr(args, "teacher", "albef"), args.checkpoint, args.tokenizer, args.teacher_config,
                        trust_checkpoint=args.trust_checkpoint, **kwargs)


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


def frame_source_from_args(args):
    from sparc.data.frames import FrameSource

    return FrameSource(args.frames, args.num_frames, clips=args.clips)
