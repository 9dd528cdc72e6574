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

    return MemoryAdapter()  # the reference HME freezes the layers its forward never reads


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


# ---- VGT: regions + boxes and frame features per clip, token ids for its own BERT ------------------

def vgt_batch(bench, items: List[dict]) -> dict:
    """sail-sg/VGT's loader fields: ``video_o (B, clips, frames, R, D + 5)`` region features with
    their boxes (x1, y1, x2, y2, area), ``video_f (B, clips, frames, D)``, ``answer (B, C, L)`` token
    ids of "[CLS] type subject [SEP] action [SEP]", ``seq_len``, ``answer_id``, ``question_id``."""
    boxes = view_rows(bench, items, "boxes")
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    video_o = torch.cat([view_rows(bench, items, "regions"), boxes, area.unsqueeze(-1)], dim=-1)
    tokens = torch.from_numpy(np.stack([it["qa_tokens"] for it in items]))
    return {
        "index": torch.tensor([it["index"] for it in items]),
        "question_id": [it["qid"] for it in items],
        "video_o": video_o,
        "video_f": view_rows(bench, items, "frame_feats"),
        "question": torch.zeros(len(items), 1, dtype=torch.long),
        "answer": tokens,
        "seq_len": torch.full(tokens.shape[:2], tokens.shape[-1], dtype=torch.long),
        "answer_id": torch.tensor([int(it["answer"]) for it in items]),
    }


def build_vgt(bench, hidden: int):
    """A small VGT: its own BERT built from a tiny random config over the benchmark's vocabulary
    (VGT fine-tunes BERT on token ids, so it reads no precomputed token features)."""
    from sparc.adapters.vgt import VGT

    c = bench.config
    bert = {"vocab_size": len(c.vocab), "hidden_size": hidden, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 2 * hidden, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0}
    return VGT(bert_tokenizer=None, feature_dim=c.feature_dim, word_dim=hidden, N=1, h=2, d_model=hidden,
               d_ff=2 * hidden, dropout=0.0, Q=0, T=c.num_frames * c.frames_per_clip, vocab_size=len(c.vocab),
               bnum=c.num_regions, dataset="synthetic", bert_config=bert)


def vgt_adapter():
    from sparc.adapters.vgt import VGTAdapter

    return VGTAdapter()


# ---- STAGE: regions and subtitles per frame, BERT-like features of hypotheses and subtitles --------

def stage_batch(bench, items: List[dict]) -> dict:
    """jayleicn/TVQAplus's batch fields: ``vid (B, T, R, D)`` region features (the clip's first
    frame), ``sub_bert (B, T, Ls, 768)`` subtitle token features, ``qas_bert (B, C, L, 768)``, their
    masks, and the ground-truth span ``ts_label_st``/``ts_label_ed``: the first and last causal
    frame (the asked subject doing the answer; TVQA+ spans are intervals, here the causal frames may have gaps)."""
    batch = qa_batch(bench, items)
    split = bench.splits[items[0]["split"]]
    rows = [it["index"] for it in items]
    causal = torch.from_numpy(split.causal[rows])
    frames = torch.arange(causal.shape[1])
    subtitles = view_rows(bench, items, "subtitles")
    vid = view_rows(bench, items, "regions")[:, :, 0]
    tokens = torch.from_numpy(np.stack([it["qa_tokens"] for it in items]))
    return {
        "index": batch["index"],
        "qid": batch["qid"],
        "vid": vid,
        "vid_mask": torch.ones(vid.shape[:3], dtype=torch.bool),
        "sub_bert": bench.qa_features(subtitles),
        "sub_mask": subtitles != 0,
        "ts_label_mask": torch.ones(causal.shape, dtype=torch.bool),
        "qas_bert": batch["qas"],
        "qas_mask": (tokens != 0).float(),
        "ts_label_st": torch.where(causal, frames, causal.shape[1]).min(dim=1).values,
        "ts_label_ed": torch.where(causal, frames, -1).max(dim=1).values,
        "answer": batch["answer"],
    }


def build_stage(bench, hidden: int):
    """A small STAGE: the paper's full model (subtitles + regions, local span features, supervised
    attention off for want of box labels), hidden size shrunk, no dropout."""
    from sparc.adapters.stage import STAGE, stage_opt

    return STAGE(stage_opt(hsz=hidden, embedding_size=bench.config.word_dim, vfeat_size=bench.config.feature_dim,
                           dropout=0.0, use_sup_att=False))


def stage_adapter():
    from sparc.adapters.stage import STAGEAdapter

    return STAGEAdapter()


BACKBONES: Dict[str, DemoBackbone] = {
    "hga": DemoBackbone("hga", "HGA", build_hga, hga_adapter, qa_batch, views=False),
    "hme": DemoBackbone("hme", "HME", build_hme, hme_adapter, appearance_motion_batch),
    # VGT's transformers learn from scratch more slowly: smaller batches, more steps, two seeds to fit the time.
    "vgt": DemoBackbone("vgt", "VGT", build_vgt, vgt_adapter, vgt_batch,
                        settings=(("lr", 1e-3), ("batch_size", 64), ("epochs", 8), ("seeds", (0, 1)))),
    # STAGE's step costs about three of HGA's: two seeds.
    "stage": DemoBackbone("stage", "STAGE", build_stage, stage_adapter, stage_batch, settings=(("seeds", (0, 1)),)),
    "memory": DemoBackbone("memory", "memory-attention", build_memory, memory_adapter, appearance_motion_batch),
}


def get_backbone(name: str) -> DemoBackbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown demo backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]
