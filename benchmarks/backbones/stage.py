"""STAGE at TVQA+ size (Lei et al., "TVQA+: Spatio-Temporal Grounding for Video Question Answering",
section 4 and appendix A.4; jayleicn/TVQAplus config.py defaults): both streams, ``--add_local
--use_sup_att``, hidden 128, dropout 0.1, convolutional encoders with kernels 7 and 5 (2 convs each).

Inputs per question: frames at 0.5 fps, at most 50 (the pipeline caps a video at 300 images at 3 fps
and takes every 6th; clips average 61 s, so about 31 frames, and a batch is padded to its longest);
20 regions per frame (top-20 detections) of 300-d PCA features; two neighbouring subtitle sentences
per frame as BERT token features (768-d), at most 50 tokens (``max_sub_l``); 5 hypotheses
"question + answer" of at most 40 BERT tokens (``max_qa_l``). Batch size in the paper: 16.
"""

import torch

from sparc.adapters.stage import STAGE, STAGEAdapter, stage_opt
from sparc.backbones import BACKBONES

FRAMES = 50
REGIONS = 20
SUB_TOKENS = 50
QA_TOKENS = 40
CANDIDATES = 5


def paper_size(batch_size: int, frames: int = FRAMES, seed: int = 0):
    """``(model, adapter, batch)``: ``STAGE(stage_opt())`` (768-d BERT, 300-d regions, hidden 128) and a
    random padded batch: video lengths 60-100 % of ``frames`` (row 0 full), 10-20 regions per frame,
    subtitle and hypothesis lengths from half to all of their caps, a ground-truth span of 1-5 frames."""
    torch.manual_seed(seed)
    model = STAGE(stage_opt())

    gen = torch.Generator().manual_seed(seed)
    B, T, R, C = batch_size, frames, REGIONS, CANDIDATES
    lengths = torch.randint(max(1, int(0.6 * T)), T + 1, (B,), generator=gen)
    lengths[0] = T
    frame = torch.arange(T)[None] < lengths[:, None]
    regions = (torch.arange(R)[None, None] < torch.randint(10, R + 1, (B, T, 1), generator=gen)) & frame[..., None]
    sub = (torch.arange(SUB_TOKENS)[None, None] < torch.randint(SUB_TOKENS // 2, SUB_TOKENS + 1, (B, T, 1), generator=gen)) & frame[..., None]
    qa = torch.arange(QA_TOKENS)[None, None] < torch.randint(QA_TOKENS // 2, QA_TOKENS + 1, (B, C, 1), generator=gen)
    qa[0, 0] = True  # the padded width is the full length
    st = (torch.rand(B, generator=gen) * lengths).long()
    ed = torch.minimum(st + torch.randint(0, 5, (B,), generator=gen), lengths - 1)
    batch = {
        "qid": [f"q{i}" for i in range(B)],
        "vid": torch.randn(B, T, R, 300, generator=gen) * regions[..., None],
        "vid_mask": regions.float(),
        "sub_bert": torch.randn(B, T, SUB_TOKENS, 768, generator=gen) * sub[..., None],
        "sub_mask": sub.float(),
        "ts_label_mask": frame.float(),
        "qas_bert": torch.randn(B, C, QA_TOKENS, 768, generator=gen) * qa[..., None],
        "qas_mask": qa.float(),
        "ts_label_st": st,
        "ts_label_ed": ed,
        "answer": torch.randint(0, C, (B,), generator=gen),
    }
    return model, STAGEAdapter(), batch


BACKBONES.register("stage", paper=paper_size)
