"""STAGE (jayleicn/TVQAplus): its demo size (regions and subtitles per frame, BERT-like features of
hypotheses and subtitles), and the builder of its original-code fixture (``fixtures/original/stage``)."""

from __future__ import annotations

from typing import List

import numpy as np
import torch

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, lazy_call, qa_batch, view_rows


def stage_batch(bench, items: List[dict]) -> dict:
    """jayleicn/TVQAplus's batch fields, as the TVQA+ reader (:mod:`sparc.data.tvqa_stage`) gives them:
    ``vid (B, T, R, D)`` region features (the clip's first frame) with ``vid_mask`` and ``boxes (B, T,
    R, 4)``, ``sub_bert (B, T, Ls, 768)`` subtitle token features, ``qas_bert (B, C, L, 768)`` and the
    word ids ``qas``, their masks; STAGE's supervision: the ground-truth span ``ts_label_st`` /
    ``ts_label_ed`` (:attr:`~sparc.data.synthetic.SyntheticSplit.span`: the first and last causal frame;
    TVQA+ spans are intervals, here the causal frames may have gaps), ``ts_missing`` (never), the
    attention labels ``att_labels (B, T, L, R)`` (:func:`attention_labels`) annotated over the span
    (``anno_st_idx`` / ``anno_ed_idx``), ``frame_ids`` (1-indexed) and ``vid_name``."""
    batch = qa_batch(bench, items)
    split = bench.splits[items[0]["split"]]
    rows = [it["index"] for it in items]
    causal = torch.from_numpy(split.causal[rows])
    first, last = (torch.from_numpy(a[rows]) for a in split.span)
    subtitles = view_rows(bench, items, "subtitles")
    vid = view_rows(bench, items, "regions")[:, :, 0]
    tokens = torch.from_numpy(np.stack([it["qa_tokens"] for it in items]))
    B, T, R = vid.shape[:3]
    return {
        "index": batch["index"],
        "qid": batch["qid"],
        "vid": vid,
        "vid_mask": torch.ones(vid.shape[:3], dtype=torch.bool),
        "boxes": view_rows(bench, items, "boxes")[:, :, 0],
        "sub_bert": bench.qa_features(subtitles),
        "sub_mask": subtitles != 0,
        "ts_label_mask": torch.ones(causal.shape, dtype=torch.bool),
        "qas_bert": batch["qas"],
        "qas_mask": (tokens != 0).float(),
        "qas": tokens,
        "ts_label_st": first,
        "ts_label_ed": last,
        "ts_missing": torch.zeros(B, dtype=torch.bool),
        "att_labels": attention_labels(split.evidence[rows], tokens.shape[-1], R),
        "anno_st_idx": first,
        "anno_ed_idx": last,
        "frame_ids": torch.arange(1, T + 1).expand(B, T),
        "vid_name": [split.video_ids[r] for r in rows],
        "answer": batch["answer"],
    }


def attention_labels(evidence: np.ndarray, num_words: int, num_regions: int) -> torch.Tensor:
    """STAGE's attention labels ``(B, T, L, R)`` float32 from the evidence slots ``(B, T, P)``
    (:attr:`~sparc.data.synthetic.SyntheticSplit.evidence`; region p < P shows slot p): the
    ground-truth hypothesis' concept words, its subject (:data:`~sparc.data.synthetic.SUBJECT_POSITION`)
    and its action (``QUESTION_LENGTH``), are labelled on the region of the asked subject doing the
    answer, in each frame that shows it. As the TVQA+ reader's, a word's positives share its mass (here
    one positive per frame: 1); everything else is 0, and frames outside the span have no label."""
    from sparc.data.synthetic import QUESTION_LENGTH, SUBJECT_POSITION

    B, T, P = evidence.shape
    labels = torch.zeros(B, T, num_words, num_regions)
    region = torch.from_numpy(evidence).float()
    for word in (SUBJECT_POSITION, QUESTION_LENGTH):
        labels[:, :, word, :P] = region
    return labels


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
