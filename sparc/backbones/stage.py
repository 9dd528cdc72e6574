"""STAGE (jayleicn/TVQAplus): its demo size (regions and subtitles per frame, BERT-like features of
hypotheses and subtitles), and the builder of its original-code fixture (``fixtures/original/stage``)."""

from __future__ import annotations

from typing import List

import numpy as np
import torch

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, lazy_call, qa_batch, view_rows


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


# STAGE's step costs about three of HGA's: two seeds.
BACKBONES.register("stage", title="STAGE",
                   demo=DemoBackbone(build_stage, stage_adapter, stage_batch, settings=(("seeds", (0, 1)),)),
                   fixtures={"STAGE": lazy_call("sparc.adapters.stage", "fixture_model")})
