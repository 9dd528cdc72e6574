"""What a backbone registers for the demo, and the batch pieces of the synthetic benchmark that
several backbones share.

Every backbone sees the same videos and questions (``sparc.data.synthetic``); only the modalities
differ: HGA frame features; HME and memory-attention appearance | motion; VGT regions, boxes and
frame features per clip (its clip axis is the benchmark's time axis); STAGE regions and subtitles.
The teacher's priors are per time step, so one PriorStore serves them all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, List

import numpy as np
import torch

__all__ = ["DemoBackbone", "appearance_motion_batch", "lazy_call", "qa_batch", "view_rows"]


@dataclass(frozen=True)
class DemoBackbone:
    """How ``sparc demo`` trains a backbone."""

    build: Callable[["object", int], torch.nn.Module]   # (benchmark, hidden) -> model
    adapter: Callable[[], "object"]
    collate: Callable[["object", List[dict]], dict]     # (benchmark, items) -> batch
    settings: tuple = ()                         # DemoSettings overrides, (name, value) pairs
    views: bool = True                           # reads SyntheticBenchmark.views (drawn before forking)


def lazy_call(module: str, name: str) -> Callable:
    """A function that calls ``name`` of ``module`` (an adapter's ``fixture_model``, say), importing the
    module at the first call: registering a backbone imports none of its model code."""

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def qa_batch(bench, items: List[dict]) -> dict:
    """The HGA-style batch: ``vid_feats``, ``qas`` (BERT-like token features), ``qas_lengths``."""
    from sparc.data.synthetic import SyntheticDataset

    return SyntheticDataset.collate(SyntheticDataset(bench, bench.splits[items[0]["split"]]), items)


def view_rows(bench, items: List[dict], field: str) -> torch.Tensor:
    """One modality (``SyntheticBenchmark.views``) for the batch's items."""
    views = bench.views(items[0]["split"])
    return torch.from_numpy(np.ascontiguousarray(getattr(views, field)[[it["index"] for it in items]]))


def appearance_motion_batch(bench, items: List[dict]) -> dict:
    """The HGA-style batch with ``vid_feats`` = [appearance | motion] per time step (HME, memory-attention)."""
    batch = qa_batch(bench, items)
    batch["vid_feats"] = torch.cat([batch["vid_feats"], view_rows(bench, items, "motion")], dim=-1)
    return batch
