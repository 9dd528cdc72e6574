"""Reference HGA: heterogeneous graph alignment for multiple-choice video QA.

Jiang & Han, "Reasoning with Heterogeneous Graph Alignment for Video Question Answering",
AAAI 2020.

This module is checkpoint- and call-compatible with the public implementation in
doc-doc/NExT-QA @ 6b92588 (``networks/VQAModel/HGA.py`` and the modules it imports:
``EncoderRNN.EncoderVidHGA`` / ``EncoderQns``, ``q_v_transformer.CoAttention``,
``gcn.AdjLearner`` / ``GCN``, ``torchnlp_nn.WeightDropLinear``) and with the BLOCK fusion
(Ben-younes et al., "BLOCK: Bilinear Superdiagonal Fusion for Visual Question Answering and
Visual Relationship Detection", AAAI 2019) of the ``block.bootstrap.pytorch`` package that it
uses as ``fusions.Block``. Constructor arguments, ``forward`` signature and every state_dict key
are the original's, so an original build script ports by changing its imports and a released
checkpoint loads with ``load_state_dict(sd)`` (strict).

It is an independent implementation. Differences from the original, all of which leave the
outputs unchanged wherever the original is well defined:

* Co-attention padding masks come from the lengths (``qas_lengths``, ``vid_lengths``). The
  original treats any row whose feature *sum* is exactly 0.0 as padding, after a LayerNorm that
  makes every real row sum to about 0, so real frames and words were masked at random (and a
  one-frame video could come out NaN).
* Batch size 1 works (the original ``.squeeze()``-ed the batch axis away).
* Optional ``vid_lengths``: the video GRU runs packed and every later stage (co-attention,
  learned adjacency, GCN, pooling) ignores padded frames, so a padded sample scores exactly as
  the same sample sliced to its length.
* Any number of candidates C.
* ``WeightDropLinear`` no longer registers a new ``weight`` parameter at every forward; released
  checkpoints that carry those stale ``...weight`` entries still load strictly.

Open-ended answering (``HGA(..., num_answers=K)``) is the authors' own TGIF-QA FrameQA head
(Jumpin2/HGA @ 8109050, ``models/lstm_cross_cycle_gcn_dropout.py``: ``answer_vocab_size`` given,
``self.fusion = fusions.Block([hidden, hidden], answer_vocab_size)`` and ``forward_frameqa``): the
question alone is encoded, goes through the same co-attention, graph and global fusion as one
multiple-choice candidate, and the final BLOCK fusion scores the K answers of the answer vocabulary
(cross-entropy over them). The head keeps the original's key, ``fusion.*``, with ``K`` outputs. The
ablation-only ``fc_fusion`` of that file is not built (the full model never reads it). Without
``num_answers`` nothing changes: the multiple-choice model, its parameters and outputs are exactly
as before.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sparc.adapters.base import Adapter, one_candidate, per_candidate, same_tensor, scorer_inputs, served
from sparc.outputs import ModelOutput
from sparc.rows import select_rows

__all__ = [
    "AdjLearner",
    "Block",
    "CoAttention",
    "CoAttentionLayer",
    "EncoderQns",
    "EncoderVidHGA",
    "GCN",
    "GraphConvolution",
    "HGA",
    "HGAAdapter",
    "WeightDropLinear",
    "WeightNormLinear",
    "get_sizes_list",
]


# --------------------------------------------------------------------------- helpers


def rnn_class(rnn_cell: str) -> type[nn.RNNBase]:
    name = rnn_cell.lower()
    if name == "gru":
        return nn.GRU
    if name == "lstm":
        return nn.LSTM
    raise ValueError(f"rnn_cell must be 'gru' or 'lstm', got {rnn_cell!r}")


def _last_hidden(hidden) -> torch.Tensor:
    """(B, H) final hidden state of the last layer.

    The original used ``torch.squeeze(hidden)``, which only works for one unidirectional layer
    and also drops the batch axis when B == 1; indexing the last layer gives the same tensor for
    B > 1 and stays (1, H) for B == 1.
    """
    if isinstance(hidden, tuple):  # LSTM returns (h, c)
        hidden = hidden[0]
    return hidden[-1]


def _cpu_lengths(lengths) -> torch.Tensor:
    # pack_padded_sequence wants its lengths as a 1-D int64 tensor on the CPU.
    return torch.as_tensor(lengths).reshape(-1).to("cpu", torch.int64)


def _valid_from_lengths(lengths, max_len: int, device) -> torch.Tensor:
    """(B, max_len) bool, True at positions < length."""
    lengths = torch.as_tensor(lengths, device=device).reshape(-1, 1)
    return torch.arange(max_len, device=device).unsqueeze(0) < lengths


# --------------------------------------------------------------------------- encoders


class EncoderVidHGA(nn.Module):
    """Frame features -> ReLU(Linear) -> GRU, as ``EncoderRNN.EncoderVidHGA``."""

    def __init__(
        self,
        dim_vid: int,
        dim_hidden: int,
        input_dropout_p: float = 0.2,
        rnn_dropout_p: float = 0,
        n_layers: int = 1,
        bidirectional: bool = False,
        rnn_cell: str = "gru",
    ):
        super().__init__()
        self.dim_vid = dim_vid
        self.dim_hidden = dim_hidden
        self.input_dropout_p = input_dropout_p
        self.rnn_dropout_p = rnn_dropout_p
        self.n_layers = n_layers
        self.bidirectional = bidirectional
        self.rnn_cell = rnn_cell

        self.vid2hid = nn.Sequential(
            nn.Linear(dim_vid, dim_hidden), nn.ReLU(), nn.Dropout(input_dropout_p)
        )
        self.rnn = rnn_class(rnn_cell)(
            dim_hidden,
            dim_hidden,
            n_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=rnn_dropout_p,
        )
        nn.init.xavier_normal_(self.vid2hid[0].weight)  # the original's only custom init

    def forward(self, vid_feats: torch.Tensor, vid_lengths=None):
        """vid_feats (B, T, dim_vid) -> output (B, T, H), hidden (layers*dirs, B, H).

        With ``vid_lengths`` (B,) the GRU runs packed: frames past a sample's length never enter
        its recurrence, its output rows there are zero, and its hidden state is the one at its
        own last frame.
        """
        batch_size, seq_len, _ = vid_feats.shape
        feats = self.vid2hid(vid_feats.reshape(-1, self.dim_vid)).view(batch_size, seq_len, -1)
        self.rnn.flatten_parameters()
        if vid_lengths is None:
            return self.rnn(feats)
        lengths = _cpu_lengths(vid_lengths)
        if lengths.numel() != batch_size or lengths.min() < 1 or lengths.max() > seq_len:
            raise ValueError(
                f"vid_lengths must hold {batch_size} values in [1, {seq_len}], got {lengths.tolist()}"
            )
        packed = pack_padded_sequence(feats, lengths, batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=seq_len)
        return output, hidden


class EncoderQns(nn.Module):
    """Question+answer tokens -> Linear (BERT features) or embedding (GloVe) -> packed GRU.

    Same arguments, positional order and defaults as ``EncoderRNN.EncoderQns``.
    """

    def __init__(
        self,
        dim_embed: int,
        dim_hidden: int,
        vocab_size: int,
        glove_embed=None,
        use_bert: bool = True,
        input_dropout_p: float = 0.2,
        rnn_dropout_p: float = 0,
        n_layers: int = 1,
        bidirectional: bool = False,
        rnn_cell: str = "gru",
    ):
        super().__init__()
        self.dim_hidden = dim_hidden
        self.vocab_size = vocab_size
        self.glove_embed = glove_embed
        self.input_dropout_p = input_dropout_p
        self.rnn_dropout_p = rnn_dropout_p
        self.n_layers = n_layers
        self.bidirectional = bidirectional
        self.rnn_cell = rnn_cell
        self.use_bert = use_bert

        self.input_dropout = nn.Dropout(input_dropout_p)
        if use_bert:
            # BERT token features (768) projected to the word size.
            self.embedding = nn.Linear(768, dim_embed)
        elif glove_embed is None:
            self.embedding = nn.Embedding(vocab_size, dim_embed)
        else:
            if isinstance(glove_embed, (str, bytes)) or hasattr(glove_embed, "__fspath__"):
                import numpy as np  # only needed for a GloVe matrix stored as .npy

                glove_embed = np.load(glove_embed)
            word_mat = torch.as_tensor(glove_embed, dtype=torch.float32)
            self.embedding = nn.Embedding.from_pretrained(word_mat, freeze=False)
        self.rnn = rnn_class(rnn_cell)(
            self.embedding.embedding_dim if isinstance(self.embedding, nn.Embedding) else dim_embed,
            dim_hidden,
            n_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=rnn_dropout_p,
        )

    def forward(self, qns: torch.Tensor, qns_lengths, hidden=None):
        """qns (B, L, 768) or (B, L) ids -> output (B, max(qns_lengths), H), hidden.

        Output rows past a sample's length are exactly zero (pad_packed_sequence).
        """
        embedded = self.input_dropout(self.embedding(qns))
        packed = pack_padded_sequence(
            embedded, _cpu_lengths(qns_lengths), batch_first=True, enforce_sorted=False
        )
        output, hidden = self.rnn(packed, hidden)
        output, _ = pad_packed_sequence(output, batch_first=True)
        return output, hidden


# --------------------------------------------------------------------------- co-attention


class WeightDropLinear(nn.Module):
    """Linear layer with DropConnect on its weight (``torchnlp_nn.WeightDropLinear``).

    The trainable weight is ``weight_raw`` (the original's key); in training each forward uses
    ``dropout(weight_raw)``. The original stored that dropped copy as a *new* Parameter
    ``weight`` at every forward, so released checkpoints hold a stale ``<name>.weight`` beside
    ``<name>.weight_raw``; loading drops it (the forward never read it) so strict loading works.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_dropout: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_dropout = weight_dropout
        self.weight_raw = nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default init, which the original inherited.
        nn.init.kaiming_uniform_(self.weight_raw, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.dropout(self.weight_raw, p=self.weight_dropout, training=self.training)
        return F.linear(x, weight, self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        stale = state_dict.pop(prefix + "weight", None)
        if stale is not None and prefix + "weight_raw" not in state_dict:
            # A checkpoint holding only the plain weight (e.g. a de-duplicated export).
            state_dict[prefix + "weight_raw"] = stale
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_dropout={self.weight_dropout}"
        )


class CoAttentionLayer(nn.Module):
    """One layer of question<->video co-attention (``q_v_transformer.CoAttentionLayer``).

    Masks use the original's convention, True = masked: ``attn_mask`` (B, Lq, Lv) hides video
    keys from question queries, ``softmax_mask`` (B, Lq, Lv) zeroes the attention rows of padded
    questions; ``attn_mask_`` / ``softmax_mask_`` (B, Lv, Lq) are the same the other way round.
    Any shape that broadcasts to those works.
    """

    def __init__(self, hidden_size: int, dropout_p: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout_p)  # kept for parity; the original never applies it
        self.softmax = nn.Softmax(dim=-1)

        def wd_linear():
            return WeightDropLinear(hidden_size, hidden_size, bias=False, weight_dropout=dropout_p)

        self.linear_question = wd_linear()
        self.linear_video = wd_linear()
        self.linear_v_question = wd_linear()
        self.linear_v_video = wd_linear()
        self.linear_final_qv = wd_linear()
        self.linear_final_vq = wd_linear()
        self.layer_norm_qv = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.layer_norm_vq = nn.LayerNorm(hidden_size, elementwise_affine=False)

    def _attend(self, scores, attn_mask, softmax_mask):
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, float("-inf"))
        attention = self.softmax(scores)
        if softmax_mask is not None:
            attention = attention.masked_fill(softmax_mask, 0.0)
        return attention

    def forward(
        self,
        question,
        video,
        scale=None,
        attn_mask=None,
        softmax_mask=None,
        attn_mask_=None,
        softmax_mask_=None,
    ):
        if attn_mask is None or softmax_mask is None:
            attn_mask, softmax_mask = _masks_from_valid(_nonzero_rows(question), _nonzero_rows(video))
        if attn_mask_ is None or softmax_mask_ is None:
            attn_mask_, softmax_mask_ = _masks_from_valid(_nonzero_rows(video), _nonzero_rows(question))

        q_in, v_in = question, video
        question_q = self.linear_question(question)
        video_k = self.linear_video(video)
        question_v = self.linear_v_question(question)
        video_v = self.linear_v_video(video)
        if scale is None:
            scale = video_v.size(-1) ** -0.5

        attention_qv = self._attend(
            torch.bmm(question_q, video_k.transpose(1, 2)) * scale, attn_mask, softmax_mask
        )
        attention_vq = self._attend(
            torch.bmm(video_k, question_q.transpose(1, 2)) * scale, attn_mask_, softmax_mask_
        )

        output_q = self.layer_norm_qv(self.linear_final_qv(torch.bmm(attention_qv, video_v)) + q_in)
        output_v = self.layer_norm_vq(self.linear_final_vq(torch.bmm(attention_vq, question_v)) + v_in)
        return output_q, output_v


def _nonzero_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, L) True where a row has any nonzero entry: the *intended* padding rule of the original
    ("padded rows are all zero"), not its "row sum == 0" test that also hit real rows."""
    return x.ne(0).any(dim=-1)


def _masks_from_valid(query_valid: torch.Tensor, key_valid: torch.Tensor):
    """(attn_mask, softmax_mask), True = masked, broadcastable to (B, Lquery, Lkey)."""
    return ~key_valid.unsqueeze(1), ~query_valid.unsqueeze(2)


class CoAttention(nn.Module):
    """Stack of co-attention layers (``q_v_transformer.CoAttention``).

    ``q_mask`` (B, Lq) / ``v_mask`` (B, Lv): True at real positions. When omitted, a position is
    padding iff its row is entirely zero.
    """

    def __init__(self, hidden_size: int, n_layers: int = 1, dropout_p: float = 0.0):
        super().__init__()
        self.encoder_layers = nn.ModuleList(
            [CoAttentionLayer(hidden_size, dropout_p) for _ in range(n_layers)]
        )

    def forward(self, question, video, q_mask=None, v_mask=None):
        q_valid = _nonzero_rows(question) if q_mask is None else q_mask.bool()
        v_valid = _nonzero_rows(video) if v_mask is None else v_mask.bool()
        attn_mask, softmax_mask = _masks_from_valid(q_valid, v_valid)
        attn_mask_, softmax_mask_ = _masks_from_valid(v_valid, q_valid)
        for layer in self.encoder_layers:
            question, video = layer(
                question,
                video,
                attn_mask=attn_mask,
                softmax_mask=softmax_mask,
                attn_mask_=attn_mask_,
                softmax_mask_=softmax_mask_,
            )
        return question, video


# --------------------------------------------------------------------------- graph


class WeightNormLinear(nn.Module):
    """Linear layer reparametrised as w = g * v / ||v|| (row-wise), like
    ``torch.nn.utils.weight_norm(nn.Linear(...))`` in the original.

    Written out because the parametrizations API would rename the keys; these are the
    original's ``weight_g`` (out, 1) and ``weight_v`` (out, in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        weight = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's init, then split into g, v
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(weight, dim=1, keepdim=True))
        self.weight_v = nn.Parameter(weight)
        if bias:
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_v * (self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Also accept the key names of torch.nn.utils.parametrizations.weight_norm.
        for new, old in (("original0", "weight_g"), ("original1", "weight_v")):
            value = state_dict.pop(prefix + "parametrizations.weight." + new, None)
            if value is not None and prefix + old not in state_dict:
                state_dict[prefix + old] = value
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class AdjLearner(nn.Module):
    """Learned adjacency A = h h^T over the question+video nodes (``gcn.AdjLearner``),
    h = ReLU(W2 ReLU(W1 x)) with weight-normalised W1, W2."""

    def __init__(self, in_feature_dim: int, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.edge_layer_1 = WeightNormLinear(in_feature_dim, hidden_size, bias=False)
        self.edge_layer_2 = WeightNormLinear(hidden_size, hidden_size, bias=False)
        self.dropout = nn.Dropout(p=dropout)  # kept for parity; the original never applies it

    def forward(self, questions, videos, node_mask=None):
        """-> (B, Lq+Lv, Lq+Lv). ``node_mask`` (B, Lq+Lv), True at real nodes: edges touching a
        padded node are zeroed, so padding cannot reach the GCN."""
        nodes = torch.cat((questions, videos), dim=1)
        h = F.relu(self.edge_layer_2(F.relu(self.edge_layer_1(nodes))))
        adjacency = torch.bmm(h, h.transpose(1, 2))
        if node_mask is not None:
            edge_valid = node_mask.unsqueeze(2) & node_mask.unsqueeze(1)
            adjacency = adjacency.masked_fill(~edge_valid, 0.0)
        return adjacency


class GraphConvolution(nn.Module):
    """LayerNorm(A X W), no bias, no affine (``gcn.GraphConvolution``)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Linear(in_features, out_features, bias=False)  # key: <layer>.weight.weight
        self.layer_norm = nn.LayerNorm(out_features, elementwise_affine=False)

    def forward(self, input, adj):
        return self.layer_norm(torch.bmm(adj, self.weight(input)))


class GCN(nn.Module):
    """num_layers + 1 graph convolutions, each followed by ReLU and dropout (``gcn.GCN``)."""

    def __init__(self, input_size, hidden_size, num_classes, num_layers=1, dropout=0.1):
        super().__init__()
        self.layers = nn.ModuleList([GraphConvolution(input_size, hidden_size)])
        for _ in range(num_layers - 1):
            self.layers.append(GraphConvolution(hidden_size, hidden_size))
        self.layers.append(GraphConvolution(hidden_size, num_classes))
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x, adj):
        for layer in self.layers:
            x = self.dropout(F.relu(layer(x, adj)))
        return x


# --------------------------------------------------------------------------- BLOCK fusion


def get_sizes_list(dim: int, chunks: int) -> list[int]:
    """Sizes of the ``chunks`` slices BLOCK cuts an ``dim``-vector into, exactly as
    block.bootstrap's ``get_sizes_list`` (checkpoint shapes depend on it): ceil(dim/chunks)
    each with the shortfall taken from the last slice, or, if that would make it negative,
    one less in each of the last few slices."""
    size = -(-dim // chunks)
    excess = size * chunks - dim
    if excess <= size:
        return [size] * (chunks - 1) + [size - excess]
    return [size] * (chunks - excess) + [size - 1] * excess


class Block(nn.Module):
    """BLOCK bilinear superdiagonal fusion (Ben-younes et al., AAAI 2019), with the arguments,
    attributes and state_dict keys of ``block.models.networks.fusions.Block``.

    Both inputs are projected to ``mm_dim``, cut into ``chunks`` blocks; each block pair is
    fused by a rank-``rank`` bilinear product, then signed-sqrt + L2 normalised (per block with
    pos_norm='before_cat', on the concatenation with 'after_cat'), and projected to
    ``output_dim``. Inputs may carry extra leading axes (the original took (B, D) only).
    """

    def __init__(
        self,
        input_dims: Sequence[int],
        output_dim: int,
        mm_dim: int = 1600,
        chunks: int = 20,
        rank: int = 15,
        shared: bool = False,
        dropout_input: float = 0.0,
        dropout_pre_lin: float = 0.0,
        dropout_output: float = 0.0,
        pos_norm: str = "before_cat",
    ):
        super().__init__()
        if pos_norm not in ("before_cat", "after_cat"):
            raise ValueError(f"pos_norm must be 'before_cat' or 'after_cat', got {pos_norm!r}")
        self.input_dims = input_dims
        self.output_dim = output_dim
        self.mm_dim = mm_dim
        self.chunks = chunks
        self.rank = rank
        self.shared = shared
        self.dropout_input = dropout_input
        self.dropout_pre_lin = dropout_pre_lin
        self.dropout_output = dropout_output
        self.pos_norm = pos_norm

        self.linear0 = nn.Linear(input_dims[0], mm_dim)
        self.linear1 = self.linear0 if shared else nn.Linear(input_dims[1], mm_dim)
        self.sizes_list = get_sizes_list(mm_dim, chunks)
        merge0 = [nn.Linear(size, size * rank) for size in self.sizes_list]
        merge1 = merge0 if shared else [nn.Linear(size, size * rank) for size in self.sizes_list]
        self.merge_linears0 = nn.ModuleList(merge0)
        self.merge_linears1 = nn.ModuleList(merge1)
        self.linear_out = nn.Linear(mm_dim, output_dim)
        self.n_params = sum(p.numel() for p in self.parameters() if p.requires_grad)

    @staticmethod
    def _signed_sqrt_l2(z: torch.Tensor) -> torch.Tensor:
        z = torch.sqrt(F.relu(z)) - torch.sqrt(F.relu(-z))
        return F.normalize(z, p=2, dim=-1)

    def forward(self, x):
        x0 = self.linear0(x[0])
        x1 = self.linear1(x[1])
        if self.dropout_input > 0:
            x0 = F.dropout(x0, p=self.dropout_input, training=self.training)
            x1 = F.dropout(x1, p=self.dropout_input, training=self.training)
        fused = []
        for size, c0, c1, m0, m1 in zip(
            self.sizes_list,
            x0.split(self.sizes_list, dim=-1),
            x1.split(self.sizes_list, dim=-1),
            self.merge_linears0,
            self.merge_linears1,
        ):
            # m0(c0) * m1(c1) holds `rank` products laid out rank-major; sum them.
            z = (m0(c0) * m1(c1)).view(*c0.shape[:-1], self.rank, size).sum(dim=-2)
            if self.pos_norm == "before_cat":
                z = self._signed_sqrt_l2(z)
            fused.append(z)
        z = torch.cat(fused, dim=-1)
        if self.pos_norm == "after_cat":
            z = self._signed_sqrt_l2(z)
        if self.dropout_pre_lin > 0:
            z = F.dropout(z, p=self.dropout_pre_lin, training=self.training)
        z = self.linear_out(z)
        if self.dropout_output > 0:
            z = F.dropout(z, p=self.dropout_output, training=self.training)
        return z


# --------------------------------------------------------------------------- HGA


class HGA(nn.Module):
    """HGA (Jiang & Han, AAAI 2020) for multiple-choice video QA.

    ``HGA(vid_encoder, qns_encoder, device)`` as in doc-doc/NExT-QA; ``block_kwargs`` (e.g.
    ``{"mm_dim": 1600, "chunks": 20, "rank": 15}``, the defaults) is passed to both BLOCK
    fusions. ``device`` is only stored, as in the original.

    ``num_answers=K``: open-ended over K answers, as Jumpin2/HGA's FrameQA model (module docstring):
    ``forward(vid_feats, qns (B, L[, 768]), qns_lengths (B,))`` returns ``(out (B, K), predict_idx)``.
    """

    #: forward accepts ``vid_lengths`` and ignores padded frames exactly.
    supports_vid_lengths = True

    def __init__(self, vid_encoder: EncoderVidHGA, qns_encoder: EncoderQns, device=None, block_kwargs=None,
                 num_answers=None):
        super().__init__()
        if num_answers is not None and int(num_answers) < 1:
            raise ValueError(f"num_answers must be >= 1 (the size of the answer set), got {num_answers}")
        self.num_answers = None if num_answers is None else int(num_answers)
        if getattr(vid_encoder, "bidirectional", False) or getattr(qns_encoder, "bidirectional", False):
            raise ValueError("HGA needs unidirectional encoders (so did the original)")
        self.vid_encoder = vid_encoder
        self.qns_encoder = qns_encoder
        self.device = device
        hidden_size = vid_encoder.dim_hidden
        input_dropout_p = vid_encoder.input_dropout_p
        block_kwargs = dict(block_kwargs or {})

        self.q_input_ln = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.v_input_ln = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.co_attn = CoAttention(hidden_size, n_layers=vid_encoder.n_layers, dropout_p=input_dropout_p)
        self.adj_learner = AdjLearner(hidden_size, hidden_size, dropout=input_dropout_p)
        self.gcn = GCN(hidden_size, hidden_size, hidden_size, num_layers=2, dropout=input_dropout_p)
        # The original ends this "attention pool" with a softmax over its size-1 output axis, so
        # the weights are identically 1 and the pool is a plain SUM over nodes (its two Linear
        # layers exist in checkpoints but cannot affect the output). Kept: released weights and
        # the reference outputs depend on it.
        self.gcn_atten_pool = nn.Sequential(
            nn.Linear(hidden_size, hidden_size // 2),
            nn.Tanh(),
            nn.Linear(hidden_size // 2, 1),
            nn.Softmax(dim=-1),
        )
        self.global_fusion = Block(
            [hidden_size, hidden_size], hidden_size, **{"dropout_input": input_dropout_p, **block_kwargs}
        )
        # Multiple choice: one score per candidate; open-ended: the K answers (Jumpin2/HGA's FrameQA head).
        self.fusion = Block([hidden_size, hidden_size], 1 if self.num_answers is None else self.num_answers,
                            **block_kwargs)

    def encode_text(self, qas, qas_lengths):
        """The frame-independent part of :meth:`forward`: each candidate's question encoding,
        ``{"questions": [(q_output (B, L_k, H), q_last_hidden (B, H)) per candidate]}``. A training
        step computes it once and passes it to every view's forward as ``text``. Open-ended
        (``num_answers``): ``qas``/``qas_lengths`` are the question ``(B, L, ...)``/``(B,)``, and the
        encoding is ``{"question": (q_output, q_last_hidden)}``."""
        if self.num_answers is not None:
            return {"question": self.encode_question(qas, qas_lengths)}
        cand_len = torch.as_tensor(qas_lengths).transpose(0, 1)  # (C, B)
        return {"questions": [self.encode_question(qa, cand_len[k]) for k, qa in enumerate(qas.transpose(0, 1))]}

    def encode_question(self, qas, qas_lengths):
        q_output, q_hidden = self.qns_encoder(qas, qas_lengths)
        return q_output, _last_hidden(q_hidden)

    def forward(self, vid_feats, qas, qas_lengths, vid_lengths=None, text=None):
        """Score every candidate answer.

        vid_feats (B, T, dim_vid); qas (B, C, L, 768) BERT token features of
        "[CLS] q [SEP] a_k [SEP]" (or (B, C, L) token ids without BERT); qas_lengths (B, C);
        vid_lengths (B,) optional, frames >= length are padding; ``text`` optional, the
        :meth:`encode_text` of these qas (computed once for several views of one step).
        Returns (out (B, C) scores, predict_idx (B,)).

        Open-ended (``num_answers``): ``qas`` is the question alone (B, L, 768) or (B, L) ids,
        ``qas_lengths`` (B,); returns (out (B, K) answer logits, predict_idx (B,)).
        """
        if self.num_answers is not None:
            return self.forward_open(vid_feats, qas, qas_lengths, vid_lengths=vid_lengths, text=text)
        batch_size, num_frames = vid_feats.shape[:2]
        cand_qas = qas.transpose(0, 1)  # (C, B, L, ...)
        cand_len = torch.as_tensor(qas_lengths).transpose(0, 1)  # (C, B)
        questions = [None] * len(cand_qas) if text is None else text["questions"]

        v_output, v_hidden = self.vid_encoder(vid_feats, vid_lengths)
        v_last_hidden = _last_hidden(v_hidden)
        if vid_lengths is None:
            v_valid = torch.ones(batch_size, num_frames, dtype=torch.bool, device=v_output.device)
        else:
            v_valid = _valid_from_lengths(vid_lengths, num_frames, v_output.device)

        # Candidates are scored one at a time, as in the original (per-candidate question
        # packing; in training, fresh weight-drop/dropout masks per candidate).
        out = torch.stack(
            [
                self.vq_encoder(v_output, v_last_hidden, qa, cand_len[k], v_mask=v_valid, question=questions[k])
                for k, qa in enumerate(cand_qas)
            ],
            dim=1,
        )
        _, predict_idx = torch.max(out, 1)
        return out, predict_idx

    def encode_video(self, vid_feats, vid_lengths=None):
        """(v_output (B, T, H), v_last_hidden (B, H), v_valid (B, T) True at real frames)."""
        v_output, v_hidden = self.vid_encoder(vid_feats, vid_lengths)
        if vid_lengths is None:
            v_valid = torch.ones(vid_feats.shape[:2], dtype=torch.bool, device=v_output.device)
        else:
            v_valid = _valid_from_lengths(vid_lengths, vid_feats.shape[1], v_output.device)
        return v_output, _last_hidden(v_hidden), v_valid

    def forward_open(self, vid_feats, qns, qns_lengths, vid_lengths=None, text=None):
        """Open-ended answering, Jumpin2/HGA's ``forward_frameqa``: the question through
        :meth:`vq_encoder` as the single "candidate", the last fusion giving the K answer logits.
        ``text``: this question's :meth:`encode_text`. Returns (out (B, K), predict_idx (B,))."""
        if self.num_answers is None:
            raise ValueError("forward_open needs an HGA built with num_answers (the answer set's size)")
        lengths = torch.as_tensor(qns_lengths)
        if lengths.dim() != 1 or lengths.numel() != vid_feats.shape[0]:
            raise ValueError(f"open-ended HGA takes one question per video: qns_lengths must be ({vid_feats.shape[0]},), "
                             f"got {tuple(lengths.shape)} (field: qns_lengths)")
        v_output, v_last_hidden, v_valid = self.encode_video(vid_feats, vid_lengths)
        question = None if text is None else text["question"]
        out = self.vq_encoder(v_output, v_last_hidden, qns, lengths, v_mask=v_valid, question=question)
        out = out.reshape(vid_feats.shape[0], self.num_answers)   # vq_encoder squeezes a K of 1 away
        _, predict_idx = torch.max(out, 1)
        return out, predict_idx

    def co_attention_masks(self, q_output, v_output, q_mask, v_mask):
        """The (question, video) rows the co-attention treats as real: the lengths' (the original
        tested each row's feature sum instead, see the module docstring)."""
        return q_mask, v_mask

    def vq_encoder(self, v_output, v_last_hidden, qas, qas_lengths, v_mask=None, question=None):
        """Score one candidate: (B, T, H) video states, (B, H) video summary, (B, L, ...) q+a,
        (B,) lengths -> (B,) scores. ``v_mask`` (B, T): True at real frames (default: all);
        ``question`` its :meth:`encode_question`, when already computed."""
        q_output, q_last_hidden = self.encode_question(qas, qas_lengths) if question is None else question
        q_mask = _valid_from_lengths(qas_lengths, q_output.size(1), q_output.device)
        if v_mask is None:
            v_mask = torch.ones(v_output.shape[:2], dtype=torch.bool, device=v_output.device)

        # Padded rows are zero already (packed GRUs, LayerNorm(0) = 0); masking makes it explicit.
        q_output = self.q_input_ln(q_output).masked_fill(~q_mask.unsqueeze(-1), 0.0)
        v_output = self.v_input_ln(v_output).masked_fill(~v_mask.unsqueeze(-1), 0.0)
        q_output, v_output = self.co_attn(q_output, v_output, *self.co_attention_masks(q_output, v_output, q_mask, v_mask))

        node_mask = torch.cat((q_mask, v_mask), dim=1)
        adj = self.adj_learner(q_output, v_output, node_mask=node_mask)
        q_v_output = self.gcn(torch.cat((q_output, v_output), dim=1), adj)

        local_attn = self.gcn_atten_pool(q_v_output)  # == 1 everywhere, see __init__
        local_out = (q_v_output * local_attn).masked_fill(~node_mask.unsqueeze(-1), 0.0).sum(dim=1)

        global_out = self.global_fusion((q_last_hidden, v_last_hidden))
        return self.fusion((global_out, local_out)).squeeze(-1)


# --------------------------------------------------------------------------- adapter

# How far the training guard moves a real row's feature sum from 0, per feature and relative to the
# row's RMS: the sum moves by D * 1e-4 * rms (0.026 for HGA's 256 unit-RMS features), far beyond the
# float32 rounding of a 256-term sum (at most ~3e-3, typically ~1e-6), so the original's bmm can
# never read exactly 0.0 whatever order a CPU or GPU kernel adds in; each feature moves by 1e-4 of
# the row's RMS.
ZERO_SUM_SHIFT = 1e-4


def unmask_real_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (..., D) with every row that is not all zero shifted away from a zero feature sum.

    The original co-attention treats a row whose features sum to exactly 0.0 as padding, right
    after a LayerNorm that makes every real row sum to about 0: real frames and words are then
    masked at random, and a query whose keys are all masked (likely on a one- or two-frame view)
    comes out NaN. Padding rows (all zero) stay exactly zero, so they are still masked."""
    real = x.ne(0).any(dim=-1, keepdim=True)
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
    sign = torch.where(x.sum(dim=-1, keepdim=True) < 0, -1.0, 1.0).to(x.dtype)
    return torch.where(real, x + sign * ZERO_SUM_SHIFT * rms, x)


@contextlib.contextmanager
def _real_rows_unmasked(model: nn.Module):
    """The original's two input LayerNorms, whose outputs its co-attention masks by their sums, pass
    through :func:`unmask_real_rows` while the context is open (hooks; the original's code is untouched)."""
    hooks = [getattr(model, name).register_forward_hook(lambda module, args, out: unmask_real_rows(out))
             for name in ("q_input_ln", "v_input_ln") if isinstance(getattr(model, name, None), nn.Module)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def encode_questions_once(model, qas: torch.Tensor, qas_lengths: torch.Tensor) -> dict:
    """An original doc-doc/NExT-QA class's question encoder (HGA's GRU, HME's LSTM) run once over a
    step's batch, candidate by candidate as its forward runs it: ``{"qas", "qas_lengths", "q_output":
    [(B, L_k, H)], "q_hidden": [((B, layers, H), ...)]}``, batch first so a view can take its rows."""
    lengths = torch.as_tensor(qas_lengths).cpu()
    outputs, hiddens = [], []
    for k in range(qas.shape[1]):
        q_output, q_hidden = model.qns_encoder(qas[:, k], lengths[:, k])
        outputs.append(q_output)
        hiddens.append(tuple(h.transpose(0, 1) for h in (q_hidden if isinstance(q_hidden, tuple) else (q_hidden,))))
    return {"qas": qas, "qas_lengths": lengths, "q_output": outputs, "q_hidden": hiddens,
            "lstm": torch.tensor(isinstance(q_hidden, tuple)).expand(qas.shape[0])}


def questions_served(model: nn.Module, text: dict):
    """A context in which the original's question encoder returns the step's encodings
    (:func:`encode_questions_once`) for any call whose input is one of the step's candidates (its
    rows, trimmed to their longest length, as ``pad_packed_sequence`` gives them); any other call
    runs the encoder itself."""
    lstm = bool(text["lstm"][0])

    def lookup(args, kwargs):
        if len(args) != 2 or kwargs:      # (qas, qas_lengths) with no initial hidden state
            return None
        qas, lengths = args[0], torch.as_tensor(args[1]).cpu()
        for k in range(text["qas"].shape[1]):
            if same_tensor(lengths, text["qas_lengths"][:, k]) and same_tensor(qas, text["qas"][:, k]):
                state = tuple(h.transpose(0, 1).contiguous() for h in text["q_hidden"][k])
                return text["q_output"][k][:, :int(lengths.max())], (state if lstm else state[0])
        return None

    return served(model.qns_encoder, lookup)


def mask_qas_text(adapter: Adapter, inputs: dict, which: torch.Tensor, masker, mask_id=None) -> dict:
    """Contrastive masking for the ``qas (B, C, L[, 768])`` / ``qas_lengths (B, C)`` batches of HGA, HME
    and memory-attention: candidate ``which[b]`` alone, its first ``qas_lengths`` tokens through
    ``masker``. Feature rows carry no token identity, so a [CLS] / [SEP] row is maskable like a word's;
    word ids need ``mask_id`` (the adapter's ``mask_token_id``: the vocabulary's mask, or unknown-word, id)."""
    out = one_candidate(adapter, inputs, which)
    qas, lengths = out["qas"][:, 0], torch.as_tensor(out["qas_lengths"])[:, 0]
    if not qas.is_floating_point() and mask_id is None:
        raise ValueError(f"{type(adapter).__name__}: the hypothesis text qas holds word ids; contrastive masking "
                         f"needs {type(adapter).__name__}(mask_token_id=...) (the vocabulary's mask or unknown-word id) "
                         "(field: qas)")
    maskable = torch.arange(qas.shape[1], device=qas.device)[None, :] < lengths.to(qas.device)[:, None]
    out["qas"] = masker(qas, maskable, mask_id).unsqueeze(1)
    return out


class HGAAdapter(Adapter):
    """Drives the reference :class:`HGA` (``lengths`` mode: padded frames are ignored exactly) and
    the original doc-doc/NExT-QA class (``bucket`` mode: its GRUs and co-attention cannot ignore
    padding). Guards for the original:

    - in training, every real row of its two input LayerNorms is moved off a zero feature sum
      (:func:`unmask_real_rows`): its co-attention masks rows summing to exactly 0.0, so the short
      views of a SpARC step could mask every frame and go NaN. Each feature moves by 1e-4 of its
      row's RMS (docs/adapters.md gives the measured effect on the logits); a one-frame view is then
      a true one-frame input. Evaluation runs the original untouched;
    - in evaluation, a one-frame input is shown as the frame repeated twice (the original's lone
      frame can come out NaN);
    - a batch of one is padded with a copy whose output is dropped (its ``.squeeze()`` removes the
      batch axis).

    Batch fields: ``vid_feats (B, T, D)``, ``qas (B, C, L, 768)``, ``qas_lengths (B, C)``, optional
    ``vid_lengths (B,)``, ``answer (B,)``, ``qid``.

    ``HGAAdapter(open_ended=True, num_answers=K)`` drives the reference HGA built with
    ``num_answers=K`` (the open-ended head of Jumpin2/HGA's FrameQA model): batch fields
    ``vid_feats``, ``qns (B, L)`` word ids or ``(B, L, 768)`` token features, ``qns_lengths (B,)``,
    ``answer`` (class index in the answer set), ``qid``. The question fields are what open-ended
    mixup interpolates (features only: word ids cannot be interpolated, so train word ids without
    TemporalGuidedMixup). The original doc-doc/NExT-QA class has no open-ended head.

    Multiple choice reports ``hypothesis (B, C, 2H)``: per candidate the pair ``(global, local)`` its
    final BLOCK fusion scores, concatenated (read from the ``fusion`` module's input, for both classes).
    ``mask_token_id``: the id contrastive masking writes into word-id ``qas`` (BERT features need none).
    """

    temporal = {"vid_feats": 1}
    candidate = {"qas": 1, "qas_lengths": 1}
    subset_mode = "lengths"
    lengths_field = "vid_lengths"

    def __init__(self, open_ended: bool = False, num_answers=None, *, mask_token_id=None):
        self.mask_token_id = mask_token_id
        if not open_ended:   # contrastive masking's hooks (multiple choice)
            self.outputs = frozenset({"logits", "hypothesis"})
            self.text_tokens = "features" if mask_token_id is None else "ids"
        # Multiple choice keeps the class attributes untouched; open-ended replaces the candidate
        # fields by the question fields.
        if open_ended:
            self.open_ended = True
            self.candidate = {}
            self.question = {"qns": 1, "qns_lengths": 0}
            self.num_answers = int(num_answers or 0)   # wrap() checks answer indices against it
        elif num_answers is not None:
            raise ValueError("num_answers is for open-ended answering (open_ended=True)")

    def _check_open_model(self, model) -> None:
        n = getattr(model, "num_answers", None)
        if n is None or not getattr(model, "supports_vid_lengths", False):
            raise ValueError("HGAAdapter(open_ended=True) drives sparc's reference HGA built with num_answers=K; "
                             f"got a {type(model).__name__} without an open-ended head")
        if self.num_answers and n != self.num_answers:
            raise ValueError(f"the model answers over {n} answers, the adapter was given num_answers={self.num_answers}")

    def mode_for(self, model) -> str:
        return "lengths" if getattr(model, "supports_vid_lengths", False) else "bucket"

    def encode_text(self, model, inputs: dict):
        """The question encodings of a step: the reference's own split; for the original class, its
        question encoder run once over the batch and served to every view (:func:`questions_served`)."""
        if self.open_ended:
            self._check_open_model(model)
            return model.encode_text(inputs["qns"], inputs["qns_lengths"])
        if getattr(model, "supports_vid_lengths", False):
            return model.encode_text(inputs["qas"], inputs["qas_lengths"])
        if not isinstance(getattr(model, "qns_encoder", None), nn.Module) or inputs["vid_feats"].shape[0] == 1:
            return None
        return encode_questions_once(model, inputs["qas"], inputs["qas_lengths"])

    def forward(self, model, inputs: dict, text=None) -> ModelOutput:
        if self.open_ended:
            self._check_open_model(model)
            out, _ = model.forward_open(inputs["vid_feats"], inputs["qns"], inputs["qns_lengths"],
                                        vid_lengths=inputs.get("vid_lengths"), text=text)
            return ModelOutput(logits=out)
        vid, qas, qas_lengths = inputs["vid_feats"], inputs["qas"], inputs["qas_lengths"]
        if getattr(model, "supports_vid_lengths", False):
            with scorer_inputs(getattr(model, "fusion", None)) as seen:
                out, _ = model(vid, qas, qas_lengths, vid_lengths=inputs.get("vid_lengths"), text=text)
            return ModelOutput(logits=out, hypothesis=per_candidate(seen, vid.shape[0]))
        if inputs.get("vid_lengths") is not None and bool((inputs["vid_lengths"] < vid.shape[1]).any()):
            raise ValueError("the original HGA cannot ignore padded frames; drive it through forward_subset (bucket mode)")
        vid, qas_lengths = vid.contiguous(), qas_lengths.cpu()  # it .view()s features; packing wants CPU lengths
        if vid.shape[1] == 1 and not model.training:
            vid = vid.repeat(1, 2, 1)
        single = vid.shape[0] == 1
        if single:
            vid, qas, qas_lengths = vid.repeat(2, 1, 1), qas.repeat(2, *[1] * (qas.dim() - 1)), qas_lengths.repeat(2, 1)
            text = select_rows(text, torch.zeros(2, dtype=torch.long))
        with contextlib.ExitStack() as guards:
            if model.training:
                guards.enter_context(_real_rows_unmasked(model))
            if text is not None:
                guards.enter_context(questions_served(model, text))
            seen = guards.enter_context(scorer_inputs(getattr(model, "fusion", None)))
            out, _ = model(vid, qas, qas_lengths)
        hypothesis = per_candidate(seen, vid.shape[0])
        if single:
            out, hypothesis = out[:1], None if hypothesis is None else hypothesis[:1]
        return ModelOutput(logits=out, hypothesis=hypothesis)

    def mask_text(self, inputs: dict, which: torch.Tensor, masker) -> dict:
        """Contrastive masking (:meth:`Adapter.mask_text`, :func:`mask_qas_text`)."""
        if self.open_ended:
            raise ValueError("HGAAdapter(open_ended=True) has no candidate hypotheses to mask")
        return mask_qas_text(self, inputs, which, masker, self.mask_token_id)
