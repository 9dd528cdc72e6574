"""The backbones ``sparc demo --backbone`` can train: how to build each at demo size and how to
turn synthetic benchmark items into its batches.

Every backbone sees the same videos and questions (``sparc.data.synthetic``); only the modalities
differ: HGA frame features; HME and memory-attention appearance | motion; VGT regions, boxes and
frame features per clip (its clip axis is the benchmark's time axis); STAGE regions and subtitles.
The teacher's priors are per time step, so one PriorStore serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np
import torch


@dataclass(frozen=True)
class DemoBackbone:
    name: str
    title: str                                   # as printed in tables ("HGA")
    build: Callable[["object", int], torch.nn.Module]   # (benchmark, hidden) -> model
    adapter: Callable[[], "object"]
    collate: Callable[["object", List[dict]], dict]     # (benchmark, items) -> batch
    settings: tuple = ()                         # DemoSettings overrides, (name, value) pairs
    views: bool = True                           # reads SyntheticBenchmark.views (drawn before forking)


# ---- shared pieces -------------------------------------------------------------------------------

def qa_batch(bench, items: List[dict]) -> dict:
    """The HGA-style batch: ``vid_feats``, ``qas`` (BERT-like token features), ``qas_lengths``."""
    from sparc.data.synthetic import SyntheticDataset

    return SyntheticDataset.collate(SyntheticDataset(bench, bench.splits[items[0]["split"]]), items)


def view_rows(bench, items: List[dict], field: str) -> torch.Tensor:
    """One modality (``SyntheticBenchmark.views``) for the batch's items."""
    views = bench.views(items[0]["split"])
    return torch.from_numpy(np.ascontiguousarray(getattr(views, field)[[it["index"] for it in items]]))


# ---- HGA -----------------------------------------------------------------------------------------

def build_hga(bench, hidden: int):
    """A small HGA (hidden sizes shrunk from the paper's 256 so the demo runs on a laptop CPU; no
    dropout: the budget is far too short to overfit)."""
    from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA

    vid = EncoderVidHGA(dim_vid=bench.config.feature_dim, dim_hidden=hidden, input_dropout_p=0.0, rnn_cell="gru")
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True,
                     input_dropout_p=0.0, rnn_cell="gru")
    return HGA(vid, qns, device="cpu", block_kwargs={"mm_dim": 2 * hidden, "chunks": 4, "rank": 4})


def hga_adapter():
    from sparc.adapters.hga import HGAAdapter

    return HGAAdapter()


# ---- HME and memory-attention: appearance | motion ---------------------------------------------

def appearance_motion_batch(bench, items: List[dict]) -> dict:
    """The HGA-style batch with ``vid_feats`` = [appearance | motion] per time step."""
    batch = qa_batch(bench, items)
    batch["vid_feats"] = torch.cat([batch["vid_feats"], view_rows(bench, items, "motion")], dim=-1)
    return batch


def build_hme(bench, hidden: int):
    """A small HME (NExT-QA's build: LSTMs, two-layer question encoder; hidden shrunk, no dropout)."""
    from sparc.adapters.hga import EncoderQns
    from sparc.adapters.hme import HME, EncoderVidCoMem

    d = bench.config.feature_dim
    vid = EncoderVidCoMem(dim_app=d, dim_motion=d, dim_hidden=hidden, input_dropout_p=0.0, rnn_cell="lstm")
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True,
                     n_layers=2, rnn_dropout_p=0.0, input_dropout_p=0.0, rnn_cell="lstm")
    return HME(vid, qns, max_len_v=bench.config.num_frames, max_len_q=8, device="cpu", input_drop_p=0.0)


def hme_adapter():
    from sparc.adapters.memory import MemoryAdapter

    return MemoryAdapter(find_unused_parameters=True)  # HME never uses its linear_qns


def build_memory(bench, hidden: int):
    """A small memory-attention model (multiple choice; memories and hidden size shrunk)."""
    from sparc.adapters.memory import MemoryAttention

    d = bench.config.feature_dim
    return MemoryAttention(appearance_dim=d, motion_dim=d, hidden_size=hidden, word_dim=hidden,
                           video_memory_size=8, text_memory_size=8, max_len_q=8, task="multiple_choice",
                           bert_dim=bench.config.word_dim)


def memory_adapter():
    from sparc.adapters.memory import MemoryAdapter

    return MemoryAdapter()


BACKBONES: Dict[str, DemoBackbone] = {
    "hga": DemoBackbone("hga", "HGA", build_hga, hga_adapter, qa_batch, views=False),
    "hme": DemoBackbone("hme", "HME", build_hme, hme_adapter, appearance_motion_batch),
    "memory": DemoBackbone("memory", "memory-attention", build_memory, memory_adapter, appearance_motion_batch),
}


def get_backbone(name: str) -> DemoBackbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown demo backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]
