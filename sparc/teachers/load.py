"""Building a teacher from files on disk, as the command-line jobs do (``extract-priors``,
``teacher-finetune``, ``diagnose-misfocus``). Nothing is downloaded: every path is local.

* ALBEF: ``--checkpoint`` a ``vqa.pth`` / ``ALBEF.pth`` / ``.safetensors`` (or, asked for with
  ``--random-init``, random weights for smoke runs and benchmarks), ``--tokenizer`` a directory with
  ``vocab.txt`` (bert-base-uncased) or the ``vocab.txt`` itself, ``--teacher-config`` an optional
  JSON of :class:`ALBEF`'s constructor arguments (``image_res``, ``vision_width``, ``vision_depth``,
  ``vision_heads``, ``decoder_layers``, ``patch_size``, ``bert_config``: a dict or the path of
  ALBEF's ``config_bert.json``); defaults are the released model (ViT-B/16 at 384, BERT-base,
  6 decoder layers). A checkpoint of another size is one error naming the config to pass.
* BLIP: ``--checkpoint`` a local ``BlipForQuestionAnswering.save_pretrained`` directory.

The command-line options that lead here are in :mod:`sparc.cli.arguments`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

PathLike = Union[str, Path]

TEACHER_KINDS = ("albef", "blip")
ALBEF_CONFIG_KEYS = ("image_res", "vision_width", "vision_depth", "vision_heads", "bert_config",
                     "decoder_layers", "patch_size")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist" if not path.exists()
                                else f"{what} {str(path)!r} is a directory; a JSON file is expected")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


def read_albef_config(config: Union[None, PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """ALBEF constructor arguments from a JSON file or a dict; ``bert_config`` may be a path."""
    if config is None:
        return {}
    where = str(config) if isinstance(config, (str, Path)) else "teacher config"
    folder = Path(config).parent if isinstance(config, (str, Path)) else None
    if isinstance(config, (str, Path)):
        config = _read_json(Path(config), "teacher config")
        if not isinstance(config, dict):
            raise ValueError(f"teacher config {where!r}: expected a JSON object of ALBEF settings")
    config = dict(config)
    unknown = sorted(set(config) - set(ALBEF_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown ALBEF setting(s) {unknown}; known: {list(ALBEF_CONFIG_KEYS)}")
    bert = config.get("bert_config")
    if isinstance(bert, str):
        config["bert_config"] = _read_json(_bert_config_path(Path(bert), folder, where), f"{where}: bert_config")
    return config


def _bert_config_path(path: Path, folder: Optional[Path], where: str) -> Path:
    """A relative ``bert_config`` is looked for next to the teacher config first (a JSON beside its
    config_bert.json names it by file name), then in the working directory (ALBEF's own configs name
    ``configs/config_bert.json`` from the repository root)."""
    if path.is_absolute() or folder is None:
        return path
    tried = [folder / path, path]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{where}: bert_config {str(path)!r} is neither at {str(tried[0])!r} (next to the "
                            f"teacher config) nor at {str(Path.cwd() / path)!r} (the working directory)")


def load_bert_tokenizer(path: PathLike):
    """bert-base-uncased's tokenizer from a local directory or ``vocab.txt``."""
    from transformers import BertTokenizer

    path = Path(path)
    vocab = path / "vocab.txt" if path.is_dir() else path
    if not vocab.is_file():
        raise FileNotFoundError(f"tokenizer: no vocab.txt at {str(path)!r} (give the directory of bert-base-uncased "
                                "or its vocab.txt; nothing is downloaded)")
    return BertTokenizer(str(vocab), do_lower_case=True)


DEFAULT_CONFIG_NAME = "the default config (full-size ALBEF: ViT-B/16 at 384, BERT-base, 6 decoder layers)"


def _config_name(config) -> str:
    if config is None:
        return DEFAULT_CONFIG_NAME
    if isinstance(config, (str, Path)):
        return f"the config {str(config)!r}"
    return "the given config dict"


def build_albef(config: Union[None, PathLike, Mapping[str, Any]] = None, checkpoint: Optional[PathLike] = None,
                trust_checkpoint: bool = False, random_init: bool = False):
    """An :class:`~sparc.teachers.albef.ALBEF` from its config, with a checkpoint's weights.

    Without ``checkpoint`` the weights are random, which must be asked for with ``random_init=True``
    (a teacher with random weights produces meaningless priors; never a silent default). A checkpoint
    of another size than the config is one ``ValueError`` naming the config, example keys with both
    shapes and what to pass; it is found on a meta-device model, before the real one is built."""
    import torch

    from sparc.teachers.albef import (ALBEF, CheckpointMismatchError, albef_checkpoint_mismatch, load_albef_checkpoint,
                                      read_albef_checkpoint)

    if checkpoint is None and not random_init:
        raise ValueError("no ALBEF checkpoint given: the teacher would have random, untrained weights; pass "
                         "checkpoint= (--checkpoint) or, for a smoke run, random_init=True (--random-init)")
    if checkpoint is not None and random_init:
        raise ValueError("random_init (--random-init) and a checkpoint (--checkpoint) exclude each other")
    settings = read_albef_config(config)
    if checkpoint is None:
        return ALBEF(**settings).eval()
    sd = read_albef_checkpoint(checkpoint, trust_checkpoint)
    with torch.device("meta"):
        skeleton = ALBEF(**settings)
    problem = albef_checkpoint_mismatch(skeleton, sd)
    if problem:
        raise CheckpointMismatchError(f"checkpoint {str(checkpoint)!r} does not fit the ALBEF built from "
                                      f"{_config_name(config)}: {problem}; pass --teacher-config <the config the "
                                      "checkpoint was trained with>")
    model = ALBEF(**settings)
    load_albef_checkpoint(model, sd)
    return model.eval()


def load_teacher(kind: str = "albef", checkpoint: Optional[PathLike] = None, tokenizer: Optional[PathLike] = None,
                 config: Union[None, PathLike, Mapping[str, Any]] = None, device=None, length_normalize: bool = False,
                 trust_checkpoint: bool = False, frame_chunk: int = 64, random_init: bool = False, **teacher_kwargs):
    """An :class:`~sparc.teachers.base.ImageQATeacher` from local files (see the module docstring);
    ``teacher_kwargs`` go to the teacher class (e.g. ALBEF's ``scoring``, ``rank_k``, ``max_rows``).
    ALBEF without ``checkpoint`` needs ``random_init=True`` (see :func:`build_albef`)."""
    if kind == "albef":
        from sparc.teachers.albef import ALBEFTeacher

        if tokenizer is None:
            raise ValueError("the ALBEF teacher needs --tokenizer (a local bert-base-uncased directory or vocab.txt)")
        tok = load_bert_tokenizer(tokenizer)
        model = build_albef(config, checkpoint, trust_checkpoint, random_init=random_init)
        return ALBEFTeacher(model, tok, length_normalize=length_normalize,
                            frame_chunk=frame_chunk, device=device, **teacher_kwargs)
    if kind == "blip":
        from sparc.teachers.hf_vqa import BlipTeacher

        if random_init:
            raise ValueError("random_init (--random-init) is for ALBEF only; BLIP needs --checkpoint DIR")
        if config is not None:
            raise ValueError("a teacher config (--teacher-config) sets ALBEF's sizes; BLIP reads its own config.json "
                             "from the --checkpoint directory")
        if checkpoint is None:
            raise ValueError("the BLIP teacher needs --checkpoint (a local BlipForQuestionAnswering directory)")
        tok = load_bert_tokenizer(tokenizer) if tokenizer is not None else None
        return BlipTeacher(Path(checkpoint), tokenizer=tok, length_normalize=length_normalize,
                           frame_chunk=frame_chunk, device=device, **teacher_kwargs)
    raise ValueError(f"unknown teacher {kind!r}; choose one of {TEACHER_KINDS}")
