"""Reference VGT: the Video Graph Transformer for multiple-choice and open-ended video QA.

Xiao, Zhou, Chua & Yan, "Video Graph Transformer for Video Question Answering", ECCV 2022.

A video is 8 clips of 4 frames; every frame carries R region features (RoI feature ++ 5-d box) and
one frame feature. Per clip, the regions are encoded (features + box embedding), each region track
is contextualised over the clip's frames by a temporal transformer, and a *dynamic graph* is built per
frame from region-region affinities, refined across the clip's frames by a transformer over the
flattened adjacency matrices, and used by a two-layer GCN; attention pooling over regions gives a
frame vector that is merged with the frame feature. Frames are averaged into clips, clips attend to
the language tokens (cross-modal interaction), a clip-level transformer with clip positions
contextualises them, and their mean is projected to ``fusion_proj``. Multiple choice scores
candidate k by ``answer_g[k] · fusion_proj`` with ``answer_g`` the mean BERT token of
"q [SEP] a_k"; open-ended QA scores every vocabulary answer by
``(fusion_proj · g_a) * (question_g · g_a)``.

This module is checkpoint- and call-compatible with the public implementation, sail-sg/VGT @
9715ff2 (``model/vqa_model.py`` and the modules it imports: ``EncoderVid``, ``graph.Graph``,
``cmatt.CMAtten``, ``language_model.AModel``). ``VGT`` keeps the original's constructor arguments,
its ``forward(video, question, labels, answer, seq_len, video_mask, text_mask, max_seq_len, mode)``
signature and return values, and every state_dict key, so an original build script ports by
changing its imports and a released checkpoint loads strictly. It is an independent
implementation. Differences from the original:

* It can be built at all: the original raises a TypeError in ``__init__`` (``dataset.split['/']``),
  moves masks to the GPU with ``.cuda()``, and fetches ``bert-base-uncased`` from the hub. Here BERT
  comes from ``bert_config=`` (a ``BertConfig``, a dict, a local directory, or a ``BertModel``) or
  from the tokenizer's local ``name_or_path``; nothing is ever downloaded.
* ``video_mask`` is honoured: a masked clip has no influence on any other clip or on the output
  (its inputs are zeroed, it is left out of BatchNorm's batch statistics in training, of the
  clip-level attention keys and of the mean over clips, and the clips that remain are numbered
  0, 1, ... for the clip position embedding). A video with masked clips therefore scores exactly as
  the same video with those clips physically removed. With every clip valid (the only case the
  original's NExT-QA loader produces: ``video_len`` is always the clip count) nothing changes. The
  original masks only the attention keys of its clip transformer and averages over all clips.
* ``video_mask=None`` means "all clips valid" (the original crashes); ``seq_len=None`` is derived
  from the tokens as the original loader would have computed it.
* The text encoder's second output is its pooled output: the original indexed ``pooler_output[-2]``,
  which fails when BERT sees a single sequence (an open-ended batch of one). Nothing uses it.
* Checkpoints may carry ``amodel.bert.bert.embeddings.position_ids`` (transformers < 4.31) and may be
  saved from ``nn.DataParallel`` (every key prefixed ``module.``, as ``main.py`` saves them): both
  load strictly.

Quirks of the original that are kept, because outputs and released weights depend on them:

* ``seq_len`` is the per-sample *padded* length: the loader sets it to the width of the sample's
  (5, L_b) token tensor, so pad tokens of shorter candidates inside that width are attended to by
  the cross-modal interaction.
* ``answer_g`` (and ``question_g``) is the mean over *all* L token positions, padding included, so
  it depends on how far the batch was padded.
* The attended clips of the C candidates are max-pooled into one video representation.
* ``word_dim`` is accepted and ignored; the width of ``amodel.linear_text`` is the text encoder's
  hidden size (the original's ``AModel`` default 768 = bert-base).
* ``graph_trans`` is a transformer of width ``bnum**2`` with 5 heads (``bnum`` 5 or 10); with
  ``CM_PT`` and ``bnum != 10`` the layer is named ``graph_trans_n`` instead.
* Unused modules are kept for the checkpoints: the masked-LM head (used by ``mode="mlm"``),
  ``crossmodal_matching``, ``position_v.modality_embedding`` and BERT's pooler.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sparc.adapters.base import Adapter, one_candidate, same_tensor, served
from sparc.outputs import ModelOutput

__all__ = [
    "AModel",
    "Bert",
    "CMAtten",
    "EncoderVid",
    "Embeddings",
    "Graph",
    "GraphConvolution",
    "Transformer",
    "TransformerConfig",
    "VGT",
    "VGTAdapter",
    "build_bert",
    "fixture_model",
]


# --------------------------------------------------------------------------- helpers


def _prefix_mask(lengths, width: int, device) -> torch.Tensor:
    """(N, width) bool, True at positions < length."""
    lengths = torch.as_tensor(lengths, device=device).reshape(-1, 1)
    return torch.arange(width, device=device).unsqueeze(0) < lengths


def _sinusoid_table(n_pos: int, dim: int) -> torch.Tensor:
    """Fixed sin/cos position table: sin on even columns, cos on odd ones, both of
    pos / 10000^(2*(j//2)/dim) (the original fills it the same way, in float64 then float32)."""
    pos = torch.arange(n_pos, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64).unsqueeze(0)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def _padded_length(tokens: torch.Tensor) -> torch.Tensor:
    """The original loader's ``seq_len`` for multiple choice: (B, C), every candidate of a sample
    holding that sample's padded width, i.e. the longest of its C token sequences."""
    true_len = (tokens > 0).sum(dim=-1)  # (B, C); [PAD] = 0 only ever trails
    return true_len.amax(dim=1, keepdim=True).expand_as(true_len).contiguous()


# --------------------------------------------------------------------------- transformers


@dataclass
class TransformerConfig:
    """The fields of ``BertConfig.from_pretrained("bert-base-uncased", ...)`` that VGT's own
    transformers read (the original built them from the hub config; these are its values)."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    num_hidden_layers: int
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    initializer_range: float = 0.02


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention; ``key_valid`` (B, L) hides keys where False."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden size {config.hidden_size} is not divisible by {config.num_attention_heads} heads"
            )
        self.n_heads = config.num_attention_heads
        self.dim = config.hidden_size
        self.dropout = nn.Dropout(p=config.attention_probs_dropout_prob)
        self.q_lin = nn.Linear(self.dim, self.dim)
        self.k_lin = nn.Linear(self.dim, self.dim)
        self.v_lin = nn.Linear(self.dim, self.dim)
        self.out_lin = nn.Linear(self.dim, self.dim)

    def forward(self, x: torch.Tensor, key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        bs, length, _ = x.shape

        def heads(t):
            return t.view(bs, length, self.n_heads, -1).transpose(1, 2)

        mask = None if key_valid is None else key_valid.bool()[:, None, None, :]
        context = F.scaled_dot_product_attention(
            heads(self.q_lin(x)),
            heads(self.k_lin(x)),
            heads(self.v_lin(x)),
            attn_mask=mask,
            dropout_p=self.dropout.p if self.training else 0.0,
        )
        return self.out_lin(context.transpose(1, 2).reshape(bs, length, self.dim))


class FFN(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"hidden_act must be 'gelu' or 'relu', got {config.hidden_act!r}")
        self.dropout = nn.Dropout(p=config.attention_probs_dropout_prob)
        self.lin1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.lin2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = F.gelu if config.hidden_act == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.activation(self.lin1(x))))


class TransformerBlock(nn.Module):
    """Post-norm block: LN(x + SA(x)), then LN(h + FFN(h)) (both LayerNorms eps 1e-12)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.attention = MultiHeadSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.ffn = FFN(config)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)

    def forward(self, x, key_valid=None):
        h = self.sa_layer_norm(self.attention(x, key_valid) + x)
        return self.output_layer_norm(self.ffn(h) + h)


class Transformer(nn.Module):
    """A stack of ``num_hidden_layers`` blocks (DistilBERT-style names: ``layer.i.attention.q_lin``)."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_layers = config.num_hidden_layers
        self.layer = nn.ModuleList([TransformerBlock(config) for _ in range(self.n_layers)])

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None):
        """x (B, L, D); ``attn_mask`` (B, L), nonzero = a key that may be attended to.
        Returns ``(hidden_states,)``, a 1-tuple as the original's (callers index ``[0]``)."""
        key_valid = None if attn_mask is None else attn_mask != 0
        for block in self.layer:
            x = block(x, key_valid)
        return (x,)


# --------------------------------------------------------------------------- video encoders


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """``bn(x)`` for x (N, C, H, W), except that in training the batch statistics (and the running
    statistics they update) come from the positions where ``valid`` (N, H, W) is True only, so
    masked clips cannot move the normalisation of the others."""
    uses_batch_stats = bn.training or not bn.track_running_stats
    if not uses_batch_stats:
        return bn(x)
    # Training always takes this path, even with every position valid: torch's batch_norm saves the
    # running statistics for its backward (for some input sizes), so a second view's forward, which
    # updates them in place, would break the first view's backward.
    channels = x.permute(1, 0, 2, 3)
    picked = channels.flatten(1) if valid is None else channels[:, valid]  # (C, n)
    n = picked.shape[1]
    mean = picked.mean(dim=1)
    var = picked.var(dim=1, unbiased=False)
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            unbiased = var.detach() * (n / max(n - 1, 1))
            bn.running_var.mul_(1 - momentum).add_(momentum * unbiased)
    shape = (1, -1, 1, 1)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


class EncoderVid(nn.Module):
    """Region encoder (``EncoderVid``): the 5-d box goes through two 1x1 conv + BatchNorm + ReLU
    layers to ``pos_hidden`` channels, is concatenated to the RoI feature and projected by
    Linear + ELU to ``feat_hidden``."""

    def __init__(self, feat_dim, bbox_dim, feat_hidden, pos_hidden, input_dropout_p=0.3):
        super().__init__()
        self.dim_feat = feat_dim
        self.dim_bbox = bbox_dim
        self.dim_hidden = feat_hidden
        self.input_dropout_p = input_dropout_p  # stored only, as in the original
        self.bbox_conv = nn.Sequential(
            nn.Conv2d(bbox_dim, pos_hidden, kernel_size=1),
            nn.BatchNorm2d(pos_hidden),
            nn.ReLU(),
            nn.Conv2d(pos_hidden, pos_hidden, kernel_size=1),
            nn.BatchNorm2d(pos_hidden),
            nn.ReLU(),
        )
        self.tohid = nn.Sequential(nn.Linear(feat_dim + pos_hidden, feat_hidden), nn.ELU(inplace=True))

    def forward(self, video_o: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """video_o (B, numc, numf, R, feat+5) -> (B, numc*numf, R, feat_hidden).
        ``valid`` (B, numc*numf, R): positions that may enter BatchNorm's batch statistics."""
        bsize, numc, numf, numr, fdim = video_o.shape
        video_o = video_o.reshape(bsize, numc * numf, numr, fdim)
        roi_feat = video_o[..., : self.dim_feat]
        box = video_o[..., self.dim_feat : self.dim_feat + self.dim_bbox].permute(0, 3, 1, 2)
        for layer in self.bbox_conv:
            box = _batch_norm(layer, box, valid) if isinstance(layer, nn.BatchNorm2d) else layer(box)
        return self.tohid(torch.cat([roi_feat, box.permute(0, 2, 3, 1)], dim=-1))


class GraphConvolution(nn.Module):
    """GCN layer with a skip on the transformed input: A (X W) + b + X W."""

    def __init__(self, in_features, out_features, bias=True, skip=True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.skip = skip
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.out_features)  # the original's uniform(±1/sqrt(out))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, adj):
        support = torch.matmul(x, self.weight)
        out = torch.bmm(adj, support)
        if self.bias is not None:
            out = out + self.bias
        return out + support if self.skip else out

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}"


class Graph(nn.Module):
    """Dynamic region graph: affinities (fc_k x)(fc_q x)^T and a GCN (ReLU + dropout per layer)."""

    def __init__(self, dim_in, dim_hidden, dim_out, num_layers, dropout):
        super().__init__()
        self.fc_k = nn.Linear(dim_in, dim_hidden)
        self.fc_q = nn.Linear(dim_in, dim_hidden)
        widths = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(
            [GraphConvolution(widths[i], widths[i + 1]) for i in range(num_layers)]
        )
        self.dropout = dropout

    def build_graph(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, R, D) -> unnormalised adjacency (N, R, R). (Every node is real: the original's
        length mask over R nodes never masks anything.)"""
        return torch.bmm(self.fc_k(x), self.fc_q(x).transpose(1, 2))

    def forward(self, x, adj):
        for layer in self.layers:
            x = F.dropout(F.relu(layer(x, adj)), self.dropout, training=self.training)
        return x


class CMAtten(nn.Module):
    """Attention of each row of ``s1`` over the first ``l2`` rows of ``s2`` (``cmatt.CMAtten``).
    Rows of ``s1`` at or past ``l1`` (or with ``l2 == 0``) get zero weights."""

    def forward(self, s1, l1, s2, l2):
        scores = torch.bmm(s1, s2.transpose(1, 2))
        valid = _prefix_mask(l2, s2.shape[1], s1.device).unsqueeze(1)
        if l1 is not None:
            valid = valid & _prefix_mask(l1, s1.shape[1], s1.device).unsqueeze(2)
        weight = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=2)
        weight = torch.nan_to_num(weight, nan=0.0)  # rows with nothing to attend to
        return torch.bmm(weight, s2), weight


class Embeddings(nn.Module):
    """Clip position embedding: x + P[position] (fixed sinusoid when ``sinusoidal_pos_embds``),
    LayerNorm, dropout. ``language_len + vision_len`` positions (the original: 20 + 8 = 28)."""

    def __init__(self, d_model, language_len, vision_len, dropout, sinusoidal_pos_embds, d_pos=128):
        super().__init__()
        n_pos = language_len + vision_len
        self.position_embeddings = nn.Embedding(n_pos, d_model)
        if sinusoidal_pos_embds:
            with torch.no_grad():
                self.position_embeddings.weight.copy_(_sinusoid_table(n_pos, d_model))
            self.position_embeddings.weight.requires_grad = False
        self.modality_embedding = nn.Embedding(2, d_model)  # in checkpoints, never used
        self.language_len = language_len
        self.vision_len = vision_len
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, embeddings: torch.Tensor, position_ids: Optional[torch.Tensor] = None):
        if position_ids is None:
            position_ids = torch.arange(embeddings.shape[1], device=embeddings.device).unsqueeze(0)
        return self.dropout(self.LayerNorm(embeddings + self.position_embeddings(position_ids)))


# --------------------------------------------------------------------------- text encoder


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _local_dir(value) -> Optional[Path]:
    if isinstance(value, (str, os.PathLike)):
        path = Path(value).expanduser()
        if path.is_dir() and (path / "config.json").is_file():
            return path
    return None


def build_bert(bert_tokenizer=None, bert_config=None):
    """The BERT text encoder, built locally (the original downloaded ``bert-base-uncased``).

    ``bert_config``: a ``transformers.BertConfig``; a dict of its fields; a local directory (weights
    loaded when it holds them, else random weights for its ``config.json``); or a ready
    ``BertModel``. When None, ``bert_tokenizer.name_or_path`` is used if it is such a local
    directory (a tokenizer loaded from a local bert-base-uncased copy), else bert-base-uncased's
    architecture (``BertConfig()``) with random weights, for loading a VGT checkpoint into.
    As in the original, the vocabulary is then resized to ``len(bert_tokenizer)`` (an int is
    taken as that length; None keeps the configured size).
    """
    from transformers import BertConfig, BertModel

    def from_dir(path: Path):
        if any((path / name).is_file() for name in _WEIGHT_FILES):
            return BertModel.from_pretrained(str(path), local_files_only=True)
        return BertModel(BertConfig.from_pretrained(str(path), local_files_only=True))

    if isinstance(bert_config, BertModel):
        model = bert_config
    elif isinstance(bert_config, BertConfig):
        model = BertModel(bert_config)
    elif isinstance(bert_config, Mapping):
        model = BertModel(BertConfig(**dict(bert_config)))
    elif bert_config is not None:
        path = _local_dir(bert_config)
        if path is None:
            raise ValueError(
                f"bert_config={bert_config!r} is not a local directory with a config.json; VGT builds "
                "BERT from a BertConfig, a dict, a BertModel or a local directory and never downloads"
            )
        model = from_dir(path)
    else:
        path = _local_dir(bert_tokenizer) or _local_dir(getattr(bert_tokenizer, "name_or_path", None))
        if path is not None:
            model = from_dir(path)
        else:
            warnings.warn(
                "VGT: no bert_config given; building bert-base-uncased's architecture with random "
                "weights (load a VGT checkpoint, or pass bert_config=<local bert-base-uncased directory>)",
                stacklevel=3,
            )
            model = BertModel(BertConfig())

    if isinstance(bert_tokenizer, int):
        vocab = bert_tokenizer
    elif bert_tokenizer is not None and hasattr(bert_tokenizer, "__len__") and not isinstance(bert_tokenizer, (str, os.PathLike)):
        vocab = len(bert_tokenizer)
    else:
        vocab = None
    if vocab is not None and vocab != model.config.vocab_size:
        model.resize_token_embeddings(vocab)
    return model


class Bert(nn.Module):
    """BERT over token ids; ``[PAD]`` = 0 is the attention mask, as in ``language_model.Bert``."""

    def __init__(self, bert_tokenizer=None, bert_config=None):
        super().__init__()
        self.bert = build_bert(bert_tokenizer, bert_config)

    def forward(self, tokens: torch.Tensor):
        out = self.bert(tokens, attention_mask=(tokens > 0).float())
        return out.last_hidden_state, out.pooler_output

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from transformers < 4.31 store the constant position ids; nothing to load.
        state_dict.pop(prefix + "bert.embeddings.position_ids", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AModel(nn.Module):
    """Text embedding: BERT tokens -> Linear -> (mean over all L positions, per-token features).

    ``word_dim`` None = the text encoder's hidden size (the original's default 768 = bert-base)."""

    def __init__(self, bert_tokenizer=None, word_dim=None, out_dim=512, bert_config=None):
        super().__init__()
        self.bert = Bert(bert_tokenizer, bert_config)
        width = self.bert.bert.config.hidden_size
        if word_dim is not None and word_dim != width:
            raise ValueError(f"word_dim={word_dim} but the text encoder is {width} wide")
        self.linear_text = nn.Linear(width, out_dim)

    def forward(self, answer: torch.Tensor):
        """(B, C, L) or (N, L) token ids -> (answer_g (B, C, D) or (N, D), tokens (B*C or N, L, D))."""
        tokens = answer.reshape(-1, answer.shape[-1])
        words = self.linear_text(self.bert(tokens)[0])
        pooled = words.mean(dim=1)  # over padding too (kept: the original's answer_g)
        if answer.dim() == 3:
            pooled = pooled.view(answer.shape[0], answer.shape[1], -1)
        return pooled, words


# --------------------------------------------------------------------------- VGT


class VGT(nn.Module):
    """VGT (Xiao et al., "Video Graph Transformer for Video Question Answering", ECCV 2022).

    Arguments as sail-sg/VGT's ``VGT``; ``bert_tokenizer`` only sizes BERT's vocabulary (a
    tokenizer, an int, or None). ``bert_config`` (keyword only) says where BERT comes from, see
    :func:`build_bert`. ``baseline``, ``n_negs``, ``T`` and ``word_dim`` are stored only, as in the
    original.
    """

    #: ``forward`` honours ``video_mask`` exactly (mask mode in :class:`VGTAdapter`).
    honours_video_mask = True

    def __init__(
        self,
        bert_tokenizer=None,
        feature_dim=1024,
        word_dim=768,
        N=2,
        h=8,
        d_model=512,
        d_ff=2048,
        dropout=0.1,
        Q=20,
        T=20,
        vocab_size=30522,
        baseline="",
        n_negs=1,
        bnum=10,
        CM_PT=0,
        dataset="",
        *,
        bert_config=None,
    ):
        super().__init__()
        self.baseline = baseline
        self.Q = Q
        self.T = T
        self.n_negs = n_negs
        self.CM_PT = CM_PT
        self.bnum = bnum
        self.feature_dim = feature_dim
        self.word_dim = word_dim
        self.d_model = d_model
        self.dataset = dataset
        self.task = str(dataset).split("/")[-1]
        d_pos = 128

        self.encode_vid = EncoderVid(feat_dim=feature_dim, bbox_dim=5, feat_hidden=d_model, pos_hidden=d_pos)
        self.linear_video = nn.Linear(feature_dim, d_model)
        self.norm_video = nn.LayerNorm(d_model, eps=1e-12)
        self.position_v = Embeddings(d_model, 20, 8, dropout, True, d_pos)
        self.config = TransformerConfig(
            hidden_size=d_model, num_attention_heads=h, intermediate_size=d_ff,
            num_hidden_layers=N, attention_probs_dropout_prob=dropout,
        )
        self.mmt = Transformer(self.config)
        self.vqproj = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, d_model))
        # masked-LM head (mode="mlm") and the cross-modal matching head (in checkpoints, unused)
        self.vocab_transform = nn.Linear(d_model, d_model)
        self.vocab_norm = nn.LayerNorm(d_model, eps=1e-12)
        self.vocab_projector = nn.Linear(d_model, vocab_size)
        self.mlm_loss_fct = nn.CrossEntropyLoss()
        self.crossmodal_matching = nn.Linear(d_model, 1)
        self.cm_loss_fct = nn.BCELoss()
        # The original's N(0, 0.02) init reaches only the modules built so far; the rest keep
        # PyTorch's defaults and BERT its own weights.
        self.apply(self._init_weights)
        self.answer_embeddings = None

        self.amodel = AModel(bert_tokenizer, out_dim=d_model, bert_config=bert_config)
        self.merge_fr = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ELU(inplace=True))
        self.satt_pool = nn.Sequential(
            nn.Linear(d_model, d_model // 2), nn.Tanh(), nn.Linear(d_model // 2, 1), nn.Softmax(dim=-2)
        )
        self.gnn = Graph(dim_in=d_model, dim_hidden=d_model // 2, dim_out=d_model, num_layers=2, dropout=dropout)
        config_gt = TransformerConfig(
            hidden_size=bnum * bnum, num_attention_heads=5, intermediate_size=d_ff,
            num_hidden_layers=N, attention_probs_dropout_prob=dropout,
        )
        # A WebVid-pretrained VGT has 10 regions; fine-tuning with another count uses a fresh layer.
        if self.CM_PT and bnum != 10:
            self.graph_trans_n = Transformer(config_gt)
        else:
            self.graph_trans = Transformer(config_gt)
        self.ttrans = Transformer(self.config)
        self.bidirec_att = CMAtten()

    def _init_weights(self, module):
        if isinstance(module, nn.Embedding) and module.weight.requires_grad:
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # main.py saves the nn.DataParallel wrapper: every key starts with "module.".
        if prefix == "":
            keys = list(state_dict)
            if keys and all(k.startswith("module.") for k in keys):
                for key in keys:
                    state_dict[key[len("module."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- text ---------------------------------------------------------------------------------
    def _compute_answer_embedding(self, a2v):
        """Embed the open-ended answer vocabulary (V, La) once; ``forward`` without ``answer`` uses it."""
        self.answer_embeddings = self.get_answer_embedding(a2v)

    def get_answer_embedding(self, answer):
        return self.amodel(answer)

    # ---- video --------------------------------------------------------------------------------
    def _graph_transformer(self, numr: int) -> Transformer:
        return self.graph_trans_n if self.CM_PT and numr != 10 else self.graph_trans

    def get_vqa_embedding_rfcpos(self, video, language, language_lens, video_mask=None):
        """Clip representations after the cross-modal interaction, (B, numc, D).

        video = (video_o (B, numc, numf, R, feat+5), video_f (B, numc, numf, feat)); language
        (B*C, L, D) token features; language_lens (B, C) or (B*C,); ``video_mask`` (B, numc) bool
        or None: masked clips are zeroed and kept out of BatchNorm's batch statistics.
        """
        video_o, video_f = video
        if video_mask is not None:
            keep = video_mask.bool()
            video_o = torch.where(keep[:, :, None, None, None], video_o, video_o.new_zeros(()))
            video_f = torch.where(keep[:, :, None, None], video_f, video_f.new_zeros(()))
        bsize, numc, numf, numr, _ = video_o.shape
        ans_n = language.shape[0] // bsize
        video_f = self.norm_video(F.gelu(self.linear_video(video_f)))  # (B, numc, numf, D)

        region_valid = None
        if video_mask is not None:
            region_valid = keep[:, :, None, None].expand(bsize, numc, numf, numr).reshape(bsize, numc * numf, numr)
        x = self.encode_vid(video_o, region_valid)  # (B, numc*numf, R, D)
        width = x.shape[-1]

        # each region track through the clip's frames
        x = x.view(bsize, numc, numf, numr, width).transpose(2, 3).reshape(bsize * numc * numr, numf, width)
        x = self.ttrans(x)[0]
        x = x.view(bsize * numc, numr, numf, width).transpose(1, 2).reshape(bsize * numc * numf, numr, width)

        # a graph per frame; its adjacency refined across the clip's frames
        adj = self.gnn.build_graph(x).view(bsize * numc, numf, numr * numr)
        adj = self._graph_transformer(numr)(adj)[0]
        adj = torch.softmax(adj.view(bsize * numc * numf, numr, numr), dim=-1)
        x_o = self.gnn(x, adj) + x
        x_o = (x_o * self.satt_pool(x_o)).sum(dim=-2).view(bsize, numc, numf, width)

        frames = self.merge_fr(torch.cat([video_f, x_o], dim=-1))
        if self.task in ("action", "transition"):  # TGIF-QA repetition tasks: frame-level interaction
            xlen = numc * numf
            frames = self.cm_interaction(frames.reshape(bsize, xlen, width), xlen, language, language_lens, ans_n)
            frames = frames.view(bsize, numc, numf, width)
        clips = frames.mean(dim=-2)
        return self.cm_interaction(clips, numc, language, language_lens, ans_n)

    def cm_interaction(self, X, xlen, language, language_lens, ans_n=5):
        """Each of the ``xlen`` rows of X (B, xlen, D) attends to every candidate's tokens (residual);
        the C results are max-pooled over candidates -> (B, xlen, D)."""
        bsize = X.shape[0]
        repeated = X.repeat_interleave(ans_n, dim=0) if ans_n != 1 else X
        attended, _ = self.bidirec_att(repeated, None, language, language_lens)
        attended = attended + repeated
        return attended.view(bsize, ans_n, xlen, -1).max(dim=1).values

    # ---- forward ------------------------------------------------------------------------------
    def encode_text(self, question=None, answer=None) -> dict:
        """The frame-independent part of :meth:`forward`, batch first: the candidates through the text
        encoder (``answer_g`` (B, C, D), ``answer_w`` (B, C, L, D)) and, with ``Q > 0``, the question
        (``question_g``, ``language``). A training step computes it once for all its views."""
        text = {}
        if answer is not None:
            answer_g, answer_w = self.get_answer_embedding(answer)
            text["answer_g"], text["answer_w"] = answer_g, answer_w.view(answer.shape[0], -1, *answer_w.shape[1:])
        if self.Q != 0 and question is not None:
            text["question_g"], text["language"] = self.amodel(question)
        return text

    def forward(
        self,
        video,
        question=None,
        labels=None,
        answer=None,
        seq_len=None,
        video_mask=None,
        text_mask=None,
        max_seq_len=0,
        mode="vqa",
        text=None,
    ):
        """``mode="vqa"``: with ``answer`` (B, C, L) candidate token ids -> (fusion_proj (B, D),
        answer_g (B, C, D)), logits = bmm(answer_g, fusion_proj[..., None]); without it (open-ended,
        needs ``Q > 0``, a question (B, Lq) and :meth:`_compute_answer_embedding`) -> scores (B, V).
        ``mode="mlm"``: the masked-LM loss of ``question`` against ``labels``.

        video = (video_o (B, numc, numf, R, feat+5), video_f (B, numc, numf, feat)); ``video_mask``
        (B, numc), nonzero = a real clip (None: all); ``seq_len`` language lengths as the original
        loader gives them (None: derived from the tokens); ``text_mask`` is accepted and unused;
        ``text`` optional, the :meth:`encode_text` of this question and these candidates.
        """
        if mode == "mlm":
            return self._mlm_loss(question, labels, max_seq_len)
        if mode != "vqa":
            raise ValueError(f"mode must be 'vqa' or 'mlm', got {mode!r}")
        text = text or {}

        if answer is not None:
            if "answer_g" in text:
                answer_g, answer_w = text["answer_g"], text["answer_w"].flatten(0, 1)
            else:
                answer_g, answer_w = self.get_answer_embedding(answer)
        elif self.answer_embeddings is not None:
            answer_g, answer_w = self.answer_embeddings
        else:
            raise ValueError(
                "VGT needs candidate tokens `answer` (multiple choice) or, open-ended, the answer "
                "vocabulary embedded first with model._compute_answer_embedding(a2v)"
            )

        question_g = None
        if self.Q != 0:
            if question is None:
                raise ValueError(f"VGT with Q={self.Q} reads the question tokens; question is None")
            question_g, language = (text["question_g"], text["language"]) if "language" in text else self.amodel(question)
            if language.shape[1] < self.Q:
                language = F.pad(language, (0, 0, 0, self.Q - language.shape[1]))
            if seq_len is None:
                seq_len = (question > 0).sum(dim=-1, keepdim=True)
        else:
            if answer is None:
                raise ValueError("open-ended VGT needs Q > 0 (it attends to the question tokens)")
            language = answer_w
            if seq_len is None:
                seq_len = _padded_length(answer)

        valid = self._clip_mask(video_mask, video[1])
        clips = self.get_vqa_embedding_rfcpos(video, language, seq_len, video_mask=valid)
        positions = None if valid is None else (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        clips = self.mmt(self.position_v(clips, positions), valid)[0]
        if valid is None:
            global_feat = clips.mean(dim=1)
        else:
            weights = valid.to(clips.dtype).unsqueeze(-1)
            global_feat = (clips * weights).sum(dim=1) / weights.sum(dim=1)
        fusion_proj = self.vqproj(global_feat)

        answer_g = answer_g.to(fusion_proj.device)
        if answer is not None:
            return fusion_proj, answer_g
        return (fusion_proj @ answer_g.t()) * (question_g @ answer_g.t())

    @staticmethod
    def _clip_mask(video_mask, video_f) -> Optional[torch.Tensor]:
        """(B, numc) bool of real clips, or None when every clip is real (the original's path)."""
        if video_mask is None:
            return None
        valid = torch.as_tensor(video_mask, device=video_f.device) != 0
        if tuple(valid.shape) != tuple(video_f.shape[:2]):
            raise ValueError(f"video_mask has shape {tuple(valid.shape)}, expected {tuple(video_f.shape[:2])} (B, clips)")
        if bool(valid.all()):
            return None
        empty = torch.nonzero(~valid.any(dim=1)).flatten()
        if empty.numel():
            raise ValueError(f"video_mask hides every clip of batch row {int(empty[0])}")
        return valid

    def _mlm_loss(self, question, labels, max_seq_len):
        text = self.amodel(question)[1]
        if text.shape[1] < max_seq_len:
            text = F.pad(text, (0, 0, 0, max_seq_len - text.shape[1]))
        if labels.shape[1] < max_seq_len:
            labels = F.pad(labels, (0, max_seq_len - labels.shape[1]), value=-100)
        logits = self.vocab_projector(self.vocab_norm(F.gelu(self.vocab_transform(text))))
        return self.mlm_loss_fct(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device))


# --------------------------------------------------------------------------- adapter


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def _answers_served(core: nn.Module, text: dict):
    """The original's candidate encoder (``amodel``) answers a call on the step's candidate tokens (or
    a view's rows of them) from the encodings computed once; any other call runs it."""
    def lookup(args, kwargs):
        if len(args) == 1 and not kwargs and same_tensor(args[0], text["served_answer"]):
            return text["answer_g"], text["answer_w"].flatten(0, 1)
        return None

    return served(core.amodel, lookup)


class VGTAdapter(Adapter):
    """Drives the reference :class:`VGT` (``mask`` mode: it honours ``video_mask`` exactly) and the
    original sail-sg/VGT class (``bucket`` mode: its clip mean and cross-modal stages cannot hide
    clips). The temporal axis is the clip axis (dim 1) of ``video_o`` and ``video_f``; teacher priors
    have one row per clip (its first frame, SpARC A.3).

    Batch fields, named as the original loader names them: ``video_o (B, numc, numf, R, feat+5)``,
    ``video_f (B, numc, numf, feat)``, ``answer (B, C, L)`` token ids of "[CLS] q [SEP] a_k [SEP]"
    (multiple choice), ``question (B, Lq)`` token ids (open-ended; (B, 1) zeros otherwise),
    ``seq_len``, ``video_mask (B, numc)`` or ``video_len (B,)``, ``text_mask``, the label
    ``answer_id (B,)`` and ``question_id``. Missing ``video_mask``/``text_mask``/``seq_len`` are
    derived as the original loader and training loop derive them (:meth:`fill_derived`).

    Multiple choice: logits = bmm(answer_g, fusion_proj) (B, C), ``hypothesis`` = answer_g.
    Open-ended (``VGTAdapter(open_ended=True, a2v=...)``): logits over the answer vocabulary
    (B, V). With ``a2v`` (V, La) token ids the vocabulary is re-embedded at every forward (as the
    original training loop does every step, so BERT trains through it); without it the model's
    ``answer_embeddings`` must have been set with ``model._compute_answer_embedding(a2v)``. Question
    token ids cannot be interpolated, so temporal-guided mixup mixes the clips and the labels only.
    Guard for the original: an open-ended batch of one is run as two copies (its text encoder
    indexes ``pooler_output[-2]``).

    ``find_unused_parameters`` is True: the checkpoint layout carries modules no VQA forward uses
    (masked-LM head, ``crossmodal_matching``, ``position_v.modality_embedding``, BERT's pooler).

    Contrastive masking (multiple choice): :meth:`mask_text` replaces tokens of the ground-truth
    candidate by ``mask_token_id`` and never touches ``special_token_ids`` (defaults: bert-base-uncased's
    [MASK] 103 and [PAD] 0, [CLS] 101, [SEP] 102, the tokenizer VGT is trained with).
    """

    temporal = {"video_o": 1, "video_f": 1}
    subset_mode = "mask"
    mask_field = "video_mask"
    answer_field = "answer_id"
    qid_field = "question_id"
    find_unused_parameters = True

    def __init__(self, open_ended: bool = False, a2v: Optional[torch.Tensor] = None, *, mask_token_id: int = 103,
                 special_token_ids=(0, 101, 102)):
        self.open_ended = bool(open_ended)
        self.mask_token_id, self.special_token_ids = int(mask_token_id), tuple(int(i) for i in special_token_ids)
        if not self.open_ended:   # answer_g: one text representation per candidate
            self.outputs = frozenset({"logits", "hypothesis"})
            self.text_tokens = "ids"
        self.a2v = a2v
        if a2v is not None and not self.open_ended:
            raise ValueError("a2v (the answer vocabulary) is for open_ended=True")
        self.candidate = {} if self.open_ended else {"answer": 1, "seq_len": 1}
        self.question = {}
        if a2v is not None:
            self.num_answers = int(a2v.shape[0])

    def mode_for(self, model) -> str:
        return "mask" if getattr(_unwrap(model), "honours_video_mask", False) else "bucket"

    def valid_frames(self, inputs: dict) -> torch.Tensor:
        """Real clips: ``video_mask`` if present, else the first ``video_len`` clips, else all."""
        if inputs.get("video_mask") is None and inputs.get("video_len") is not None:
            T = self.num_frames(inputs)
            lengths = torch.as_tensor(inputs["video_len"], device=inputs["video_f"].device)
            return _prefix_mask(lengths, T, lengths.device)
        return super().valid_frames(inputs)

    def fill_derived(self, inputs: dict) -> dict:
        """The batch with ``video_mask``, ``text_mask`` and ``seq_len`` filled where absent (or, for
        ``text_mask``, stale after candidates were concatenated), as the original pipeline makes them."""
        x = dict(inputs)
        B, T = x["video_f"].shape[:2]
        device = x["video_f"].device
        if x.get("video_mask") is None:
            if x.get("video_len") is not None:
                x["video_mask"] = _prefix_mask(x["video_len"], T, device).long()
            else:
                x["video_mask"] = torch.ones(B, T, dtype=torch.long, device=device)
        tokens = x.get("question") if self.open_ended else x.get("answer")
        if tokens is None:
            raise ValueError(f"VGTAdapter needs the field {'question' if self.open_ended else 'answer'!r} (token ids)")
        mask = x.get("text_mask")
        if mask is None or tuple(mask.shape) != tuple(tokens.shape):
            x["text_mask"] = (tokens > 0).float()
        if x.get("seq_len") is None:
            x["seq_len"] = (tokens > 0).sum(dim=-1, keepdim=True) if self.open_ended else _padded_length(tokens)
        return x

    def encode_text(self, model, inputs: dict):
        """The text encodings of a step: the reference's own split; for the original class (multiple
        choice), its candidate encoder (BERT) run once over the batch and served to every view."""
        core = _unwrap(model)
        x = self.fill_derived(inputs)
        if getattr(core, "honours_video_mask", False):
            return core.encode_text(x.get("question"), None if self.open_ended else x["answer"])
        if self.open_ended or not isinstance(getattr(core, "amodel", None), nn.Module) or x["answer"].shape[0] == 1:
            return None
        answer_g, answer_w = core.amodel(x["answer"])
        B = x["answer"].shape[0]
        return {"served_answer": x["answer"], "answer_g": answer_g, "answer_w": answer_w.view(B, -1, *answer_w.shape[1:])}

    def mask_text(self, inputs: dict, which: torch.Tensor, masker) -> dict:
        """Contrastive masking (:meth:`Adapter.mask_text`): candidate ``which[b]``'s token ids alone, its
        tokens other than ``special_token_ids`` through ``masker``. ``seq_len`` is derived first, from all
        C candidates, so the one candidate keeps the padded width its ``answer_g`` was computed with."""
        if self.open_ended:
            raise ValueError("VGTAdapter(open_ended=True) has no candidate hypotheses to mask")
        out = one_candidate(self, self.fill_derived(inputs), which)
        tokens = out["answer"][:, 0]
        special = torch.tensor(self.special_token_ids, dtype=tokens.dtype, device=tokens.device)
        out["answer"] = masker(tokens, ~torch.isin(tokens, special), self.mask_token_id).unsqueeze(1)
        out.pop("text_mask", None)   # derived again from the masked tokens
        return out

    def forward(self, model, inputs: dict, text=None) -> ModelOutput:
        x = self.fill_derived(inputs)
        core = _unwrap(model)
        video = (x["video_o"].contiguous(), x["video_f"].contiguous())  # the original .view()s them
        shared = {} if text is None or "served_answer" in text else {"text": text}
        if not self.open_ended:
            with _answers_served(core, text) if text is not None and "served_answer" in text else contextlib.nullcontext():
                fusion_proj, answer_g = model(
                    video, x.get("question"), text_mask=x["text_mask"], video_mask=x["video_mask"],
                    answer=x["answer"], seq_len=x["seq_len"], **shared,
                )
            logits = torch.bmm(answer_g, fusion_proj.unsqueeze(2)).squeeze(2)
            return ModelOutput(logits=logits, hypothesis=answer_g)

        if self.a2v is not None:
            core._compute_answer_embedding(self.a2v.to(video[1].device))
        elif getattr(core, "answer_embeddings", None) is None:
            raise ValueError("open-ended VGTAdapter: pass a2v= or call model._compute_answer_embedding(a2v) first")
        fields = {"video_o": video[0], "video_f": video[1], "question": x["question"],
                  "text_mask": x["text_mask"], "seq_len": x["seq_len"], "video_mask": x["video_mask"]}
        single = fields["video_f"].shape[0] == 1 and not getattr(core, "honours_video_mask", False)
        if single:
            fields = {k: torch.cat([v, v]) for k, v in fields.items()}
        scores = model(
            (fields["video_o"], fields["video_f"]), fields["question"], text_mask=fields["text_mask"],
            video_mask=fields["video_mask"], seq_len=fields["seq_len"], **shared,
        )
        return ModelOutput(logits=scores[:1] if single else scores)


# --------------------------------------------------------------------------- fixture


def _call_text(recorded: str) -> str:
    """The ``VGT(...)`` call at the start of a recorded constructor string (the record goes on with
    a comment in parentheses), the tokenizer's ``<len N>`` placeholder turned into ``N``."""
    recorded = re.sub(r"<len (\d+)>", r"\1", recorded.strip())
    depth, quote = 0, None
    for i, ch in enumerate(recorded):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return recorded[: i + 1]
    raise ValueError(f"unbalanced constructor call: {recorded!r}")


def fixture_model(config: dict):
    """(model, run) for ``fixtures/original/vgt``: VGT built from the recorded constructor call with
    BERT from ``text_encoder.config``; ``run`` calls it as ``how_called`` records and derives the
    logits as train/train_videoqa.py does."""
    from sparc.recorded_calls import check_callee, parse_call

    callee, args, kwargs = parse_call(_call_text(config["constructor"]))
    check_callee(callee, "VGT")
    bert_config = dict(config.get("text_encoder", {}).get("config", {}))
    model = VGT(*args, **kwargs, bert_config=bert_config or None)

    def run(model, inputs):
        answer = inputs["answer"]
        fusion_proj, answer_g = model(
            (inputs["video_o"], inputs["video_f"]), inputs.get("question"),
            text_mask=(answer > 0).float(), video_mask=inputs["video_mask"], answer=answer,
            seq_len=inputs["seq_len"],
        )
        logits = torch.bmm(answer_g, fusion_proj.unsqueeze(2)).squeeze(2)
        return {"fusion_proj": fusion_proj, "answer_g": answer_g, "logits": logits}

    return model, run
