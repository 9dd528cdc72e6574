"""The memory-attention network (paper 003) at the paper's size, with a random batch.

Sizes from the paper: d = 512 (3.2), 50 video-memory slots and 30 text-memory slots (the best sizes
of Fig. 5 with the augmented memories), 300-d words (3.1), 35 frames for TGIF-QA, 20 for MSVD-QA.
Features: appearance 2048 (ResNet pool5) | motion 4096 (C3D fc), concatenated per frame as sparc's
other backbones take them. Text: BERT-like token features (768) of "question [SEP] answer_k", up to
37 tokens (``max_len_q``), 5 candidates (TGIF-QA Action / Trans).
"""

import torch

from backbones import random_qa_batch

from sparc.adapters.memory import MemoryAdapter, MemoryAttention
from sparc.backbones import BACKBONES

FRAMES = 35            # TGIF-QA; MSVD-QA uses 20
APPEARANCE, MOTION = 2048, 4096
MAX_LEN = 37


def _model(task: str, num_answers: int = 1000) -> MemoryAttention:
    return MemoryAttention(appearance_dim=APPEARANCE, motion_dim=MOTION, hidden_size=512, word_dim=300,
                           video_memory_size=50, text_memory_size=30, max_len_q=MAX_LEN, task=task,
                           num_answers=num_answers, use_bert=True, bert_dim=768)


def _text(shape, gen):
    lengths = torch.randint(10, MAX_LEN + 1, shape, generator=gen)
    lengths.view(-1)[0] = MAX_LEN  # the padded width is the full length
    tokens = torch.randn(*shape, MAX_LEN, 768, generator=gen)
    pad = torch.arange(MAX_LEN) >= lengths[..., None]
    return tokens.masked_fill(pad[..., None], 0.0), lengths


def paper_size(batch_size: int, frames: int = FRAMES, seed: int = 0):
    """``(model, adapter, batch)`` for multiple choice: vid_feats (B, frames, 6144),
    qas (B, 5, 37, 768), qas_lengths (B, 5), answer (B,), qid."""
    torch.manual_seed(seed)
    model = _model("multiple_choice")
    gen = torch.Generator().manual_seed(seed)
    batch = random_qa_batch(batch_size, frames, APPEARANCE + MOTION, MAX_LEN, 10, gen)
    return model, MemoryAdapter(), batch


def paper_size_open_ended(batch_size: int, frames: int = 20, num_answers: int = 1000, seed: int = 0):
    """``(model, adapter, batch)`` for open-ended QA (MSVD-QA / MSRVTT-QA: 1000 answers):
    vid_feats (B, frames, 6144), qns (B, 37, 768), qns_lengths (B,), answer (B,), qid."""
    torch.manual_seed(seed)
    model = _model("open_ended", num_answers)
    gen = torch.Generator().manual_seed(seed)
    qns, qns_lengths = _text((batch_size,), gen)
    batch = {
        "qid": [f"q{i}" for i in range(batch_size)],
        "vid_feats": torch.randn(batch_size, frames, APPEARANCE + MOTION, generator=gen),
        "qns": qns,
        "qns_lengths": qns_lengths,
        "answer": torch.randint(0, num_answers, (batch_size,), generator=gen),
    }
    return model, MemoryAdapter(open_ended=True, num_answers=num_answers), batch


BACKBONES.register("memory", paper=paper_size)
