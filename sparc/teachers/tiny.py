"""A tiny ALBEF and a small video-QA dataset on disk, for tests, benchmarks and trying the teacher jobs
(``extract-priors``, ``teacher-finetune``, ``diagnose-misfocus``) without any download.

:func:`write_tiny_teacher_workspace` writes, under one folder:

* ``teacher-config.json``: :class:`~sparc.teachers.albef.ALBEF` arguments of a tiny model (32 px
  images, 8 px patches, 2+2 text layers, 2 decoder layers, width 32) and ``vocab.txt``, a BERT
  vocabulary of the words the questions use (``[CLS]`` = 101, ``[SEP]`` = 102 as bert-base-uncased);
* ``frames/<video>/<n>.png``: frame folders (random images);
* ``questions.jsonl``: multiple-choice questions, several per video, half of them with "before" or
  "after" (what ``diagnose-misfocus`` swaps).

The model's weights are random unless ``checkpoint=True`` (then ``albef.safetensors`` in ALBEF's key
layout, loadable by :func:`~sparc.teachers.albef.load_albef_checkpoint`).

:func:`teacher_workflow_commands` gives the teacher workflow's five ``sparc`` commands on such a
workspace (``sparc teacher-workspace DIR`` writes one and prints them).
"""

from __future__ import annotations

import json
import os
import shlex
import warnings
from pathlib import Path
from typing import Any, Dict, List, Union

import torch

__all__ = ["TINY_ALBEF_CONFIG", "TINY_WORDS", "write_tiny_teacher_workspace", "teacher_workflow_commands"]

TINY_WORDS = ["what", "does", "did", "the", "man", "woman", "boy", "girl", "dog", "do", "before", "after", "he",
              "she", "it", "sits", "stands", "runs", "why", "how", "is", "holding", "sit", "stand", "run", "wave",
              "jump", "eat", "drink", "play", "with", "ball", "cup", "down", "up", "a", "to", "on", "in", "?"]

SUBJECTS = ["man", "woman", "boy", "girl", "dog"]
ACTIONS = ["sit down", "stand up", "run", "wave", "jump", "eat", "drink", "play with the ball", "drink a cup"]

TINY_ALBEF_CONFIG: Dict[str, Any] = {
    "image_res": 32, "patch_size": 8, "vision_width": 32, "vision_depth": 2, "vision_heads": 2, "decoder_layers": 2,
    "bert_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 4,
                    "fusion_layer": 2, "encoder_width": 32, "vocab_size": 104 + len(TINY_WORDS),
                    "max_position_embeddings": 40},
}


def _vocab() -> list:
    # bert-base-uncased's layout: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
    return ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


def write_tiny_teacher_workspace(root: Union[str, Path], num_videos: int = 4, questions_per_video: int = 3,
                                 frames_per_video: int = 6, image_size: int = 40, seed: int = 0,
                                 checkpoint: bool = False) -> Dict[str, Path]:
    """Write the workspace (see the module docstring); returns the paths by name: ``root``,
    ``config``, ``vocab``, ``frames``, ``questions`` and, with ``checkpoint``, ``checkpoint``."""
    from torchvision.io import write_png

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = {"root": root, "config": root / "teacher-config.json", "vocab": root / "vocab.txt",
             "frames": root / "frames", "questions": root / "questions.jsonl"}
    paths["config"].write_text(json.dumps(TINY_ALBEF_CONFIG, indent=1) + "\n")
    paths["vocab"].write_text("\n".join(_vocab()) + "\n")
    lines = []
    for v in range(num_videos):
        video = f"video{v:03d}"
        folder = paths["frames"] / video
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(frames_per_video):
            img = torch.randint(0, 256, (3, image_size, image_size), generator=g, dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision >= 0.29 deprecates io's image codecs
                warnings.simplefilter("ignore", DeprecationWarning)
                write_png(img, str(folder / f"{f + 1:05d}.png"))
        for q in range(questions_per_video):
            pick = lambda seq: seq[int(torch.randint(len(seq), (1,), generator=g))]
            subject, action = pick(SUBJECTS), pick(ACTIONS)
            if q % 2 == 0:
                question = f"what does the {subject} do {'before' if q % 4 == 0 else 'after'} he {pick(['sits', 'stands', 'runs'])} ?"
            else:
                question = f"why did the {subject} {action} ?"
            order = torch.randperm(len(ACTIONS), generator=g)[:5].tolist()
            cands = [ACTIONS[i] for i in order]
            lines.append(json.dumps({"qid": f"{video}_{q}", "video": video, "question": question, "candidates": cands,
                                     "answer": int(torch.randint(5, (1,), generator=g)), "type": "TN" if q % 2 == 0 else "CW"}))
    paths["questions"].write_text("\n".join(lines) + "\n")
    if checkpoint:
        from safetensors.torch import save_file

        from sparc.teachers.albef import ALBEF

        torch.manual_seed(seed)
        model = ALBEF(**TINY_ALBEF_CONFIG)
        sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
        paths["checkpoint"] = root / "albef.safetensors"
        save_file(sd, str(paths["checkpoint"]))
    return paths


def teacher_workflow_commands(root: Union[str, Path], num_frames: int = 4) -> List[str]:
    """The teacher workflow on a workspace written with ``checkpoint=True`` at ``root``, one shell line
    per step: ``teacher-finetune`` (from ``albef.safetensors``, one epoch) -> ``extract-priors`` (with
    the fine-tuned weights) -> ``priors-stats`` -> ``viz-priors`` -> ``diagnose-misfocus``. Paths are
    ``root`` joined as given (a relative ``root`` gives commands to run from the same folder), quoted
    for the shell; outputs go to ``teacher-ft/``, ``priors/`` and ``viz/`` inside ``root``."""
    def path(*parts: str) -> str:
        return shlex.quote(os.path.join(os.fspath(root), *parts))

    data = f"--questions {path('questions.jsonl')} --frames {path('frames')} --num-frames {int(num_frames)}"
    teacher = f"--teacher-config {path('teacher-config.json')} --tokenizer {path('vocab.txt')}"
    finetuned = path("teacher-ft", "albef-finetuned.safetensors")
    quick = "--num-workers 0 --no-progress"   # a handful of tiny videos: worker processes cost more than they save
    return [
        f"sparc teacher-finetune {data} {teacher} --checkpoint {path('albef.safetensors')} "
        f"--output-dir {path('teacher-ft')} --epochs 1 --batch-size 8 {quick}",
        f"sparc extract-priors {data} {teacher} --checkpoint {finetuned} --out {path('priors')} {quick}",
        f"sparc priors-stats {path('priors')} --answers {path('questions.jsonl')}",
        f"sparc viz-priors {path('priors')} --answers {path('questions.jsonl')} --out {path('viz')}",
        f"sparc diagnose-misfocus {data} {teacher} --checkpoint {finetuned}",
    ]
