"""VGT (sail-sg/VGT): its demo size (regions + boxes and frame features per clip, token ids for its
own BERT), and the builder of its original-code fixture (``fixtures/original/vgt``)."""

from __future__ import annotations

from typing import List

import numpy as np
import torch

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, lazy_call, view_rows


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


# VGT's transformers learn from scratch more slowly: smaller batches, more steps, two seeds to fit the time.
BACKBONES.register("vgt", title="VGT",
                   demo=DemoBackbone(build_vgt, vgt_adapter, vgt_batch,
                                     settings=(("lr", 1e-3), ("batch_size", 64), ("epochs", 8), ("seeds", (0, 1)))),
                   fixtures={"VGT": lazy_call("sparc.adapters.vgt", "fixture_model")})
