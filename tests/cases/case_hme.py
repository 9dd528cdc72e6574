"""Contract cases for the adapter that drives HME: the reference HME (lengths mode, also bucket) and a
stand-in for doc-doc/NExT-QA's original class (bucket mode with the adapter's guards)."""

import torch

from sparc.adapters.hme import HME, EncoderQns, EncoderVidCoMem
from sparc.contract import AdapterCase

from sparc.adapters.memory import MemoryAdapter


APP, MOTION, HIDDEN, WORDS = 3, 3, 8, 3


class OriginalLikeHME(HME):
    """Stands in for the original class: no vid_lengths, fails at B == 1 (its ``.squeeze()``) and on
    lengths off the CPU (``pack_padded_sequence``), and leaves ``linear_qns``, ``mm_att.Wvh`` and
    ``mm_att.Wth`` trainable though its forward never reads them, and scores the candidates one at a
    time, each through the question LSTM. Outputs otherwise equal the reference's (checked against the real original in tests/test_hme_reference.py's fixture)."""

    supports_vid_lengths = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in (self.linear_qns.weight, self.linear_qns.bias, self.mm_module_v1.mm_att.Wvh,
                  self.mm_module_v1.mm_att.Wth):
            p.requires_grad_(True)

    def forward(self, vid_feats, qas, qas_lengths):
        assert vid_feats.shape[0] > 1, "the original squeezes the batch axis away"
        assert torch.as_tensor(qas_lengths).device.type == "cpu", "pack_padded_sequence needs CPU lengths"
        # One candidate at a time, its question through the LSTM at each, as the original's loop runs
        streams = self.vid_encoder(vid_feats)
        cand_len = torch.as_tensor(qas_lengths).permute(1, 0)
        out = torch.stack([self.vq_encoder(streams, qa, cand_len[k]) for k, qa in enumerate(qas.permute(1, 0, 2, 3))], 1)
        return out, out.argmax(dim=1)


def tiny_hme(cls=HME, seed=0):
    torch.manual_seed(seed)
    vid = EncoderVidCoMem(dim_app=APP, dim_motion=MOTION, dim_hidden=HIDDEN, input_dropout_p=0.0, rnn_cell="lstm")
    qns = EncoderQns(dim_embed=HIDDEN, dim_hidden=HIDDEN, vocab_size=1, glove_embed=None, use_bert=True,
                     n_layers=2, rnn_dropout_p=0.0, input_dropout_p=0.0, rnn_cell="lstm")
    return cls(vid, qns, max_len_v=4, max_len_q=5, device=None, input_drop_p=0.0)


def hme_batch(batch_size, num_frames, seed, words=WORDS):
    g = torch.Generator().manual_seed(300 + seed)
    return {
        "qid": [f"hme-{seed}-{b}" for b in range(batch_size)],
        "vid_feats": torch.randn(batch_size, num_frames, APP + MOTION, generator=g),
        "qas": torch.randn(batch_size, 5, words, 768, generator=g),
        "qas_lengths": torch.randint(1, words + 1, (batch_size, 5), generator=g),
        "answer": torch.randint(0, 5, (batch_size,), generator=g),
    }


def original_adapter():
    """The adapter for the original class: it must declare the original's never-used parameters to DDP."""
    adapter = MemoryAdapter()
    adapter.find_unused_parameters = True
    return adapter


CASES = [
    AdapterCase("hme-reference", lambda seed: tiny_hme(HME, seed), MemoryAdapter(), hme_batch, 5, modes=("bucket",)),
    AdapterCase("hme-original-like", lambda seed: tiny_hme(OriginalLikeHME, seed), original_adapter(), hme_batch, 5),
]
