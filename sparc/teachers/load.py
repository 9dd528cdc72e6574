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
                 trust_checkpoint: bool = False, frame_chunk: int = 64):
    """An :class:`~sparc.teachers.base.ImageQATeacher` from local files (see the module docstring)."""
    if kind == "albef":
        from sparc.teachers.albef import ALBEFTeacher

        if tokenizer is None:
            raise ValueError("the ALBEF teacher needs --tokenizer (a local bert-base-uncased directory or vocab.txt)")
        model = build_albef(config, checkpoint, trust_checkpoint)
        return ALBEFTeacher(model, load_bert_tokenizer(tokenizer), length_normalize=length_normalize,
                            frame_chunk=frame_chunk, device=device)
    if kind == "blip":
        from sparc.teachers.hf_vqa import BlipTeacher

        if checkpoint is None:
            raise ValueError("the BLIP teacher needs --checkpoint (a local BlipForQuestionAnswering directory)")
        tok = load_bert_tokenizer(tokenizer) if tokenizer is not None else None
        return BlipTeacher(Path(checkpoint), tokenizer=tok, length_normalize=length_normalize,
                           frame_chunk=frame_chunk, device=device)
    raise ValueError(f"unknown teacher {kind!r}; choose one of {TEACHER_KINDS}")
