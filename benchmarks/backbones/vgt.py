"""VGT at NExT-QA size: sail-sg/VGT's shells/next_train.sh (mc 5, bnum 5, qmax_words 0, amax_words 38,
max_feats 32, n_layers 1, embd_dim 512, ff_dim 1024, dropout 0.3; n_heads 8 and feature_dim 2048 from
args.py) with a BERT-base-sized text encoder (random weights: nothing is downloaded).

Video: 32 frames as 8 clips x 4 frames (the loader's ``acregion_8c...`` features), 5 regions per frame,
each 2048-d RoI feature ++ 5-d box (x1/w, y1/h, x2/w, y2/h, relative area), and a 2048-d ResNet
feature per frame. Text: 5 candidates "[CLS] q [SEP] a_k [SEP]" of 15-38 tokens, padded to the batch's
longest; ``seq_len`` each sample's own padded width, as the original loader makes it.
"""

import torch

from sparc.adapters.vgt import VGT, VGTAdapter
from sparc.backbones import BACKBONES

CLIPS, FRAMES_PER_CLIP, REGIONS = 8, 4, 5
FEATURE_DIM = 2048
MAX_WORDS = 38  # amax_words
CLS, SEP = 101, 102


def build_model(seed: int = 0) -> VGT:
    from transformers import BertConfig

    torch.manual_seed(seed)
    return VGT(bert_tokenizer=None, feature_dim=FEATURE_DIM, word_dim=768, N=1, h=8, d_model=512, d_ff=1024,
               dropout=0.3, Q=0, T=CLIPS * FRAMES_PER_CLIP, vocab_size=30522, baseline="", bnum=REGIONS, CM_PT=0,
               dataset="nextqa", bert_config=BertConfig())  # bert-base-uncased's architecture


def make_batch(batch_size: int, clips: int = CLIPS, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    B, C = batch_size, 5
    q_len = torch.randint(8, 20, (B,), generator=gen)
    a_len = torch.randint(2, MAX_WORDS - 19, (B, C), generator=gen)
    lengths = (q_len[:, None] + a_len + 3).clamp(max=MAX_WORDS)  # [CLS] q [SEP] a [SEP]
    L = int(lengths.max())
    positions = torch.arange(L)
    answer = torch.randint(1000, 30000, (B, C, L), generator=gen)
    answer[..., 0] = CLS
    answer[positions.expand(B, C, L) == q_len[:, None, None] + 1] = SEP
    answer.scatter_(2, (lengths - 1).unsqueeze(-1), SEP)
    answer = answer.masked_fill(positions >= lengths[..., None], 0)
    video_o = torch.randn(B, clips, FRAMES_PER_CLIP, REGIONS, FEATURE_DIM + 5, generator=gen)
    video_o[..., FEATURE_DIM:] = torch.rand(B, clips, FRAMES_PER_CLIP, REGIONS, 5, generator=gen)
    qids = [f"q{i}" for i in range(B)]
    return {
        "video_o": video_o,
        "video_f": torch.randn(B, clips, FRAMES_PER_CLIP, FEATURE_DIM, generator=gen),
        "video_len": torch.full((B,), clips, dtype=torch.long),
        "question": torch.zeros(B, 1, dtype=torch.long),
        "answer": answer,
        "seq_len": lengths.amax(dim=1, keepdim=True).expand(B, C).contiguous(),
        "answer_id": torch.randint(0, C, (B,), generator=gen),
        "question_id": qids,
        "qid": list(qids),
    }


def paper_size(batch_size: int, clips: int = CLIPS, seed: int = 0):
    """``(model, adapter, batch)``: video_o (B, 8, 4, 5, 2053), video_f (B, 8, 4, 2048), answer (B, 5, <=38)
    token ids, seq_len (B, 5), video_len (B,), question (B, 1), answer_id (B,), question_id / qid.
    The adapter's temporal axis is the clip axis (8); its label field is ``answer_id``."""
    return build_model(seed), VGTAdapter(), make_batch(batch_size, clips, seed)


BACKBONES.register("vgt", paper=paper_size)
