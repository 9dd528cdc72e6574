"""HME at NExT-QA size: doc-doc/NExT-QA's build_model for HME (appearance and motion LSTMs 2048 -> 256,
a 2-layer question LSTM on BERT features 768 -> 300 -> 256 with dropout 0.2 / 0.5, 16 video and 37
question memory slots, fusion dropout 0.2) on 16 frames of 4096-d features (appearance 2048 | motion
2048), 5 candidates of up to 37 tokens ("[CLS] q [SEP] a [SEP]", each 20-37 long). NExT-QA trains it
with batch 64, Adam lr 5e-5 and its hinge MultipleChoiceLoss (sparc: ``task_loss="hinge"``)."""

import torch

from backbones import random_qa_batch

from sparc.adapters.hme import HME, EncoderQns, EncoderVidCoMem
from sparc.adapters.memory import MemoryAdapter
from sparc.backbones import BACKBONES

FRAMES = 16
MAX_QA_LEN = 37


def paper_size(batch_size: int, frames: int = FRAMES, seed: int = 0):
    """``(model, adapter, batch)``: vid_feats (B, frames, 4096), qas (B, 5, 37, 768), qas_lengths (B, 5),
    answer (B,), qid."""
    torch.manual_seed(seed)
    vid = EncoderVidCoMem(dim_app=2048, dim_motion=2048, dim_hidden=256, input_dropout_p=0.2,
                          bidirectional=False, rnn_cell="lstm")
    qns = EncoderQns(dim_embed=300, dim_hidden=256, vocab_size=1, glove_embed=None, use_bert=True, n_layers=2,
                     rnn_dropout_p=0.5, input_dropout_p=0.2, bidirectional=False, rnn_cell="lstm")
    model = HME(vid, qns, max_len_v=16, max_len_q=MAX_QA_LEN, device=None)

    gen = torch.Generator().manual_seed(seed)
    batch = random_qa_batch(batch_size, frames, 4096, MAX_QA_LEN, 20, gen)
    return model, MemoryAdapter(), batch


BACKBONES.register("hme", paper=paper_size)
