"""HME (doc-doc/NExT-QA), driven by the MemoryAdapter: its demo size, and the builder of its
original-code fixture (``fixtures/original/hme``)."""

from __future__ import annotations

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, appearance_motion_batch, lazy_call


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


BACKBONES.register("hme", title="HME", demo=DemoBackbone(build_hme, hme_adapter, appearance_motion_batch),
                   fixtures={"HME": lazy_call("sparc.adapters.hme", "fixture_model")})
