"""Contract cases for HGAAdapter: the reference HGA (lengths mode, also bucket) and a stand-in for
doc-doc/NExT-QA's original class (bucket mode with the adapter's guards)."""

import types

import torch
import torch.nn.functional as F
from torch import nn

from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA, WeightDropLinear
from sparc.contract import AdapterCase


def _original_weight_drop(self, x):
    """``torchnlp_nn.weight_drop`` as the original runs it: the dropped weight becomes a *new* leaf
    Parameter ``weight`` at every forward, so ``weight_raw`` never receives a gradient."""
    self.weight = nn.Parameter(F.dropout(self.weight_raw, p=self.weight_dropout, training=self.training))
    return F.linear(x, self.weight, self.bias)


def _sum_is_nonzero(x):
    """The original's padding rule (``q_v_transformer.padding_mask_k``): a row is padding iff its
    features sum to exactly 0.0, computed as it does, by a bmm with ones."""
    return torch.bmm(torch.ones_like(x[:, :1]), x.transpose(1, 2))[:, 0].ne(0)


class OriginalLikeHGA(HGA):
    """Stands in for the original class and keeps the two defects that matter for training:
    its co-attention masks every row whose features sum to exactly 0.0 (after a LayerNorm that makes
    every real row sum to about 0, so real frames are masked at random, and a query whose keys are
    all masked comes out NaN), and its WeightDrop leaves the six co-attention ``weight_raw``
    parameters without gradient. Like the original it has no vid_lengths, fails at B == 1, and needs
    contiguous features; elsewhere it computes what the reference does.

    ``zero_sum_masking=False`` masks by the intended rule (all-zero rows) instead: which real rows sum
    to exactly 0.0 depends on the order a CPU's kernels add in, so the contract's evaluation clauses,
    which must hold on any CPU, run without it; the training guard is tested with it on."""

    supports_vid_lengths = False

    def __init__(self, *args, zero_sum_masking: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.zero_sum_masking = zero_sum_masking
        for module in self.co_attn.modules():
            if isinstance(module, WeightDropLinear):
                module.forward = types.MethodType(_original_weight_drop, module)

    def forward(self, vid_feats, qas, qas_lengths):
        assert vid_feats.shape[0] > 1, "the original squeezes the batch axis away"
        vid_feats.view(-1)  # raises for non-contiguous input, as the original's .view does
        return super().forward(vid_feats, qas, qas_lengths)

    def co_attention_masks(self, q_output, v_output, q_mask, v_mask):
        if not self.zero_sum_masking:
            return q_mask, v_mask
        return _sum_is_nonzero(q_output), _sum_is_nonzero(v_output)


def tiny_hga(cls=HGA, seed=0, dim=6, hidden=8, **kwargs):
    torch.manual_seed(seed)
    vid = EncoderVidHGA(dim_vid=dim, dim_hidden=hidden, input_dropout_p=0.0)
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=1, glove_embed=None, use_bert=True,
                     input_dropout_p=0.0)
    return cls(vid, qns, block_kwargs={"mm_dim": 8, "chunks": 2, "rank": 2}, **kwargs)


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
    AdapterCase("hga-original-like", lambda seed: tiny_hga(OriginalLikeHGA, seed, zero_sum_masking=False),
                HGAAdapter(), hga_batch, 5),
]
