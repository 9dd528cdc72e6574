"""HGA at NExT-QA size: doc-doc/NExT-QA's build_model for HGA (GRUs, BERT 768 -> 300, hidden 256,
dropout 0.3, both BLOCK fusions at their defaults) on 16 frames of 4096-d features (appearance 2048 |
motion 2048), 5 candidates of 37 tokens ("[CLS] q [SEP] a [SEP]", each 20-37 long)."""

import torch

from backbones import random_qa_batch

from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA, HGAAdapter
from sparc.backbones import BACKBONES

FRAMES = 16


def paper_size(batch_size: int, frames: int = FRAMES, seed: int = 0):
    torch.manual_seed(seed)
    vid = EncoderVidHGA(dim_vid=4096, dim_hidden=256, input_dropout_p=0.3, bidirectional=False, rnn_cell="gru")
    qns = EncoderQns(dim_embed=300, dim_hidden=256, vocab_size=1, glove_embed=None, use_bert=True, n_layers=1,
                     rnn_dropout_p=0, input_dropout_p=0.3, bidirectional=False, rnn_cell="gru")
    model = HGA(vid, qns, device=None, block_kwargs={"mm_dim": 1600, "chunks": 20, "rank": 15})

    gen = torch.Generator().manual_seed(seed)
    batch = random_qa_batch(batch_size, frames, 4096, 37, 20, gen)
    return model, HGAAdapter(), batch


BACKBONES.register("hga", paper=paper_size)
