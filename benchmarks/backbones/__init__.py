"""Each module builds one backbone at its paper's size: ``paper_size(batch_size, ...) -> (model,
adapter, batch)`` with random features, and registers it as that backbone's ``paper`` size in
``sparc.backbones.BACKBONES``; ``benchmarks/step_overhead.py --backbone`` offers every one of them."""

import importlib
import pkgutil
from typing import Tuple

import torch


def paper_backbones() -> Tuple[str, ...]:
    """Import every module of this folder (each registers its paper size); the backbones that have one."""
    from sparc.backbones import BACKBONES

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")
    return BACKBONES.names("paper")


def random_qa_batch(batch_size: int, frames: int, vid_dim: int, max_len: int, min_len: int, gen: torch.Generator,
                    candidates: int = 5) -> dict:
    """The HGA-style batch (HGA, HME, memory-attention): ``vid_feats (B, frames, vid_dim)``, ``qas (B, C,
    max_len, 768)`` BERT-like token features zero past each ``qas_lengths (B, C)`` (min_len..max_len; the
    first is max_len so the padded width is the full length), ``answer``, ``qid``."""
    B, C, L = batch_size, candidates, max_len
    qas_lengths = torch.randint(min_len, L + 1, (B, C), generator=gen)
    qas_lengths[0, 0] = L
    qas = torch.randn(B, C, L, 768, generator=gen)
    qas = qas.masked_fill((torch.arange(L)[None, None, :] >= qas_lengths[..., None])[..., None], 0.0)
    return {
        "qid": [f"q{i}" for i in range(B)],
        "vid_feats": torch.randn(B, frames, vid_dim, generator=gen),
        "qas": qas,
        "qas_lengths": qas_lengths,
        "answer": torch.randint(0, C, (B,), generator=gen),
    }
