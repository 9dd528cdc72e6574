"""Contract cases for HGAAdapter: the reference HGA (lengths mode, also bucket) and a stand-in for
doc-doc/NExT-QA's original class (bucket mode with the adapter's guards)."""

import torch

from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
from sparc.contract import AdapterCase


class OriginalLikeHGA(HGA):
    """Stands in for the original class: no vid_lengths, fails at B == 1 and at T == 1 (where the
    original can go NaN), needs contiguous features. Its outputs otherwise equal the reference's."""

    supports_vid_lengths = False

    def forward(self, vid_feats, qas, qas_lengths):
        assert vid_feats.shape[0] > 1, "the original squeezes the batch axis away"
        assert vid_feats.shape[1] > 1, "a lone frame can be masked to NaN in the original"
        vid_feats.view(-1)  # raises for non-contiguous input, as the original's .view does
        return super().forward(vid_feats, qas, qas_lengths)


def tiny_hga(cls=HGA, seed=0, dim=6, hidden=8):
    torch.manual_seed(seed)
    vid = EncoderVidHGA(dim_vid=dim, dim_hidden=hidden, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True,
                     input_dropout_p=0.0)
    return cls(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2})


def hga_batch(batch_size, num_frames, seed, dim=6, words=3):
    g = torch.Generator().manual_seed(100 + seed)
    return {
        "qid": [f"hga-{seed}-{b}" for b in range(batch_size)],
        "vid_feats": torch.randn(batch_size, num_frames, dim, generator=g),
        "qas": torch.randn(batch_size, 5, words, 768, generator=g),
        "qas_lengths": torch.randint(1, words + 1, (batch_size, 5), generator=g),
        "answer": torch.randint(0, 5, (batch_size,), generator=g),
    }


CASES = [
    AdapterCase("hga-reference", lambda seed: tiny_hga(HGA, seed), HGAAdapter(), hga_batch, 5, modes=("bucket",)),
    AdapterCase("hga-original-like", lambda seed: tiny_hga(OriginalLikeHGA, seed), HGAAdapter(), hga_batch, 5),
]
