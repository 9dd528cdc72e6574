"""Reference STAGE: the spatio-temporal answerer of TVQA+.

Lei, Yu, Berg & Bansal, "TVQA+: Spatio-Temporal Grounding for Video Question Answering", ACL 2020
(section 4.2: architecture; 4.3: losses).

Checkpoint- and call-compatible with the public implementation in jayleicn/TVQAplus @ d2dc721
(``model/stage.py`` and what it imports: ``encoder.StackedEncoder`` / ``EncoderBlock``,
``cnn.DepthwiseSeparableConv``, ``position_encoding.PositionEncoding``,
``context_query_attention.StructuredAttention``, ``self_attention.MultiHeadedAttention``,
``model_utils``). ``STAGE(opt)`` takes the same ``opt`` namespace (see :func:`stage_opt` for the
defaults of the original ``config.py``), ``forward(batch)`` / ``forward_main(batch)`` take the same
attribute dict (``qas_bert``, ``qas_mask``, ``sub_bert``, ``sub_mask``, ``vid``, ``vid_mask``,
``target``, ``ts_label={"st", "ed"}``, ``ts_label_mask``, ``att_labels``, ``anno_st_idx``,
``q_l``, ``use_hard_negatives``, ...) and return the same tuples, and every state_dict key is the
original's (including the positional-encoding tables ``...position_encoding.pe``).

An independent implementation. Where it differs from the original, outputs are unchanged on every
input the original pipeline produces (frame masks that are a prefix, spans inside the video):

* **Frames are counted among valid frames.** ``ts_label_mask`` (N, Li) says which frames exist.
  The local span feature is max-pooled over the span widened by ``extra_span_length`` *valid*
  frames on each side, and training proposals compare spans by their temporal IoU over valid
  frames. For a prefix mask that is the original's position arithmetic; for any other mask it makes
  a masked frame indistinguishable from a removed one, so sparc can show the model a subset of
  frames by narrowing the masks (``vid_mask``, ``sub_mask``, ``ts_label_mask``) instead of slicing.
* Any number of hypotheses (the original hard-codes 5), any memory layout (it ``.view``\\ s its
  inputs), batches without ``att_labels`` (no attention loss) or without ``ts_label`` in eval (no
  temporal loss).
* Hard negatives are read at their global image index (the original indexed a tensor cut to the
  annotated images with global indices, which fails when ``anno_st_idx > 0``); a batch without a
  single positive box gives a zero attention loss (the original failed on an empty ``torch.cat``).
* With ``t_iter > 0`` the original computes extra temporal layers whose scores it then discards
  (it averages ``t_score_container[0]`` with itself); their parameters are kept, the dead
  computation is skipped.
* Ties between equally likely spans go to the last (start, end) in row-major order; the original's
  choice depended on numpy's sort algorithm.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from sparc.adapters.base import Adapter, one_candidate, scorer_inputs
from sparc.outputs import ModelOutput

__all__ = [
    "ConvLinear",
    "DepthwiseSeparableConv",
    "EncoderBlock",
    "LinearWrapper",
    "MultiHeadedAttention",
    "PositionEncoding",
    "STAGE",
    "STAGEAdapter",
    "STAGEBatch",
    "StackedEncoder",
    "StructuredAttention",
    "fixture_model",
    "mask_logits",
    "stage_opt",
    "training_proposals",
]

#: The additive mask value of the original (``model_utils.mask_logits``, ``StructuredAttention``).
NEG = -1e10


def mask_logits(target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``target`` where ``mask`` is 1, -1e10 where it is 0 (the original's arithmetic form, so
    values match bit for bit)."""
    return target * mask + (1 - mask) * NEG


def stage_opt(**overrides) -> SimpleNamespace:
    """The ``opt`` STAGE is built from: the original ``config.py`` defaults for every field the
    model reads, with both input streams (subtitles + region features), ``--add_local`` and
    ``--use_sup_att`` (the paper's full model). Paper sizes: hidden 128, BERT 768, regions 300."""
    opt = dict(
        sub_flag=True, vfeat_flag=True, t_iter=0, extra_span_length=3, add_local=True,
        use_sup_att=True, num_negatives=2, negative_pool_size=0, num_hard=2, drop_topk=0,
        margin=0.1, att_loss_type="lse", scale=10.0, alpha=20.0, dropout=0.1,
        input_encoder_n_blocks=1, input_encoder_n_conv=2, input_encoder_kernel_size=7,
        input_encoder_n_heads=0, cls_encoder_n_blocks=1, cls_encoder_n_conv=2,
        cls_encoder_kernel_size=5, cls_encoder_n_heads=0, add_non_visual=False,
        hsz=128, embedding_size=768, vfeat_size=300,
    )
    unknown = set(overrides) - set(opt)
    if unknown:
        raise TypeError(f"stage_opt: unknown field(s) {sorted(unknown)}")
    opt.update(overrides)
    return SimpleNamespace(**opt)


class STAGEBatch(dict):
    """The attribute dict STAGE reads (the original used ``easydict.EasyDict``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


def _get(batch, name: str, default=None):
    if isinstance(batch, Mapping):
        return batch.get(name, default)
    return getattr(batch, name, default)


# --------------------------------------------------------------------------- building blocks


class PositionEncoding(nn.Module):
    """Adds the sinusoid table ``pe`` (max_len, n_filters) along the second-to-last axis. ``pe`` is a
    persistent buffer, as in the original, so checkpoints carry it."""

    def __init__(self, n_filters: int = 128, max_len: int = 500):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        inv_freq = torch.exp(torch.arange(0, n_filters, 2).float() * -(math.log(10000.0) / n_filters))
        pe = torch.zeros(max_len, n_filters)
        pe[:, 0::2] = torch.sin(position * inv_freq)
        pe[:, 1::2] = torch.cos(position * inv_freq)[:, : n_filters // 2]
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.size(-2)
        if length > self.pe.shape[0]:
            raise ValueError(f"sequence of {length} positions is longer than the encoding table ({self.pe.shape[0]})")
        return x + self.pe[:length]


class DepthwiseSeparableConv(nn.Module):
    """Per-channel convolution (``groups=in_ch``, 'same' padding for odd ``k``) then a 1x1
    convolution, optional ReLU; (N, L, D) in and out for ``dim=1``."""

    def __init__(self, in_ch: int, out_ch: int, k: int, dim: int = 1, relu: bool = True):
        super().__init__()
        self.relu = relu
        if dim == 1:
            conv = nn.Conv1d
        elif dim == 2:
            conv = nn.Conv2d
        else:
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        self.depthwise_conv = conv(in_channels=in_ch, out_channels=in_ch, kernel_size=k, groups=in_ch, padding=k // 2)
        self.pointwise_conv = conv(in_channels=in_ch, out_channels=out_ch, kernel_size=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise_conv(self.depthwise_conv(x.transpose(1, 2)))
        if self.relu:
            out = F.relu(out)
        return out.transpose(1, 2)


class MultiHeadedAttention(nn.Module):
    """Scaled dot-product self-attention (only built when an encoder has ``num_heads > 0``; the
    paper's model has none). As in the original, the (N, L) mask hides *query* rows
    (``mask.view(N, 1, L, 1)``), not keys."""

    def __init__(self, nh: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        if d_model % nh:
            raise ValueError(f"d_model {d_model} is not divisible by {nh} heads")
        self.d_k = d_model // nh
        self.nh = nh
        self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bsz = x.size(0)
        q, k, v = (lin(x).view(bsz, -1, self.nh, self.d_k).transpose(1, 2) for lin in self.linears[:3])
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask.reshape(bsz, 1, -1, 1) == 0, -1e9)
        out = self.dropout(torch.softmax(scores, dim=-1)) @ v
        return self.linears[3](out.transpose(1, 2).reshape(bsz, -1, self.nh * self.d_k))


class EncoderBlock(nn.Module):
    """Positional encoding, ``n_conv`` residual units ``x + ReLU(DSConv(LayerNorm(x)))`` (dropout
    before every other unit), optional self-attention unit, final LayerNorm (paper 4.2,
    "Convolutional Encoder"; the code normalises before the convolution)."""

    def __init__(self, n_conv: int, kernel_size: int = 7, n_filters: int = 128, dropout: float = 0.1, num_heads: int = 4):
        super().__init__()
        self.dropout = dropout
        self.n_conv = n_conv
        self.num_heads = num_heads
        self.position_encoding = PositionEncoding(n_filters=n_filters)
        self.layer_norm = nn.ModuleList([nn.LayerNorm(n_filters) for _ in range(n_conv)])
        self.final_layer_norm = nn.LayerNorm(n_filters)
        self.conv = nn.ModuleList(
            [DepthwiseSeparableConv(in_ch=n_filters, out_ch=n_filters, k=kernel_size, relu=True) for _ in range(n_conv)]
        )
        if num_heads != 0:
            self.multi_head_attn = MultiHeadedAttention(nh=num_heads, d_model=n_filters)
            self.attn_layer_norm = nn.LayerNorm(n_filters)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.position_encoding(x)
        for i in range(self.n_conv):
            z = self.layer_norm[i](h)
            if i % 2 == 0:
                z = F.dropout(z, p=self.dropout, training=self.training)
            h = self.conv[i](z) + h
        if self.num_heads != 0:
            h = self.multi_head_attn(self.attn_layer_norm(h), mask=mask) + h
        return self.final_layer_norm(h)


class StackedEncoder(nn.Module):
    """``n_blocks`` encoder blocks in sequence. The mask only reaches self-attention, so with
    ``num_heads=0`` (the paper's setting) padded positions take part in the convolutions."""

    def __init__(self, n_blocks: int = 7, n_conv: int = 2, kernel_size: int = 7, hidden_size: int = 128,
                 dropout: float = 0.1, num_heads: int = 4):
        super().__init__()
        self.n_blocks = n_blocks
        self.stacked_encoderBlocks = nn.ModuleList(
            [EncoderBlock(n_conv=n_conv, kernel_size=kernel_size, n_filters=hidden_size, dropout=dropout,
                          num_heads=num_heads) for _ in range(n_blocks)]
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        for block in self.stacked_encoderBlocks:
            x = block(x, mask)
        return x


class StructuredAttention(nn.Module):
    """QA-guided attention (paper 4.2): cosine scores between every hypothesis word and every region
    (or subtitle word) of each frame, softmax over the regions after scaling, zeroed where masked.
    No parameters. Returns ``(attended (N,5,Li,Lqa,D), scores S (masked cells S - 1e10), S_mask,
    normalised S)``."""

    def __init__(self, dropout: float = 0.1, scale: float = 100, add_void: bool = False):
        super().__init__()
        self.dropout = dropout
        self.scale = scale
        self.add_void = add_void

    def forward(self, C, Q, c_mask, q_mask, noun_mask=None, void_vector=None):
        num_void = 0
        if void_vector is not None:
            bsz, _, num_img, _, hsz = Q.shape
            num_void = len(void_vector)
            Q = torch.cat([Q, void_vector.view(1, 1, 1, num_void, hsz).expand(bsz, 1, num_img, num_void, hsz)], dim=-2)
            q_mask = torch.cat([q_mask, q_mask.new_ones(bsz, 1, num_img, num_void)], dim=-1)
        S, S_mask = self.similarity(C, Q, c_mask, q_mask)
        S_ = F.softmax(S * self.scale, dim=-1) * S_mask  # rows with nothing to attend to become zero
        if noun_mask is not None:
            if noun_mask.dim() == 3:
                S_ = S_ * noun_mask.unsqueeze(2).unsqueeze(-1)
            elif noun_mask.dim() == 4:
                S_ = S_ * noun_mask.unsqueeze(-1)
            else:
                raise ValueError(f"noun_mask must be (N, 5, Lqa) or (N, 5, Li, Lqa), got {tuple(noun_mask.shape)}")
        if num_void:
            if self.add_void:  # the void vectors absorb attention but are dropped from the outputs
                A = S_ @ Q
            else:
                A = S_[..., :-num_void] @ Q[..., :-num_void, :]
            S, S_mask, S_ = S[..., :-num_void], S_mask[..., :-num_void], S_[..., :-num_void]
        else:
            A = S_ @ Q
        return A, S, S_mask, S_

    def similarity(self, C, Q, c_mask, q_mask):
        c = F.dropout(F.normalize(C, p=2, dim=-1), p=self.dropout, training=self.training)
        q = F.dropout(F.normalize(Q, p=2, dim=-1), p=self.dropout, training=self.training)
        S_mask = c_mask.unsqueeze(-1) @ q_mask.unsqueeze(-2)
        S = c @ q.transpose(-2, -1)
        return S - 1e10 * (1 - S_mask), S_mask


class LinearWrapper(nn.Module):
    """[LayerNorm] -> Dropout -> Linear [-> ReLU], on the last axis."""

    def __init__(self, in_hsz: int, out_hsz: int, layer_norm: bool = True, dropout: float = 0.1, relu: bool = True):
        super().__init__()
        self.relu = relu
        layers: List[nn.Module] = [nn.LayerNorm(in_hsz)] if layer_norm else []
        layers += [nn.Dropout(dropout), nn.Linear(in_hsz, out_hsz)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return F.relu(out) if self.relu else out


class ConvLinear(nn.Module):
    """[LayerNorm] -> Dropout -> depthwise-separable convolution over the sequence axis (the extra
    temporal layers of ``t_iter > 0``)."""

    def __init__(self, in_hsz: int, out_hsz: int, kernel_size: int = 3, layer_norm: bool = True,
                 dropout: float = 0.1, relu: bool = True):
        super().__init__()
        layers: List[nn.Module] = [nn.LayerNorm(in_hsz)] if layer_norm else []
        layers += [nn.Dropout(dropout), DepthwiseSeparableConv(in_ch=in_hsz, out_ch=out_hsz, k=kernel_size, dim=1, relu=relu)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _mlp(in_dim: int, out_dim: int, dropout: float, norm_in: bool, norm_out: bool) -> nn.Sequential:
    """[LayerNorm] -> Dropout -> Linear -> ReLU [-> LayerNorm]: the layout (and so the key indices)
    of the original's projection blocks."""
    layers: List[nn.Module] = [nn.LayerNorm(in_dim)] if norm_in else []
    layers += [nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True)]
    if norm_out:
        layers.append(nn.LayerNorm(out_dim))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- spans


def _best_spans(p_st: torch.Tensor, p_ed: torch.Tensor, top_n: int = 1):
    """The ``top_n`` (start <= end) pairs maximising ``p_st[s] * p_ed[e]`` per row of (M, T)
    probabilities: ``(start, end, confidence)``, each (M, top_n). Ties: the later pair first."""
    M, T = p_st.shape
    product = torch.bmm(p_st.unsqueeze(2), p_ed.unsqueeze(1)).triu()  # zero below the diagonal: end >= start
    flipped = product.reshape(M, T * T).flip(1)  # so that the first maximum found is the last pair
    if top_n == 1:
        conf, idx = flipped.max(dim=1, keepdim=True)
    else:
        conf, idx = torch.sort(flipped, dim=1, descending=True, stable=True)
        conf, idx = conf[:, :top_n], idx[:, :top_n]
    idx = T * T - 1 - idx
    return idx // T, idx % T, conf


def _valid_ranks(frame_valid: torch.Tensor, st: torch.Tensor, ed: torch.Tensor):
    """Span [st, ed] (frame positions, (N, K) each) in valid-frame ranks: (#valid frames before st,
    #valid frames up to ed - 1). With every frame valid these are st and ed themselves."""
    pos = torch.arange(frame_valid.shape[1], device=frame_valid.device)
    valid = frame_valid.unsqueeze(1)  # (N, 1, T)
    lo = (valid & (pos < st.unsqueeze(-1))).sum(-1)
    hi = (valid & (pos <= ed.unsqueeze(-1))).sum(-1) - 1
    return lo, hi


def _temporal_iou(a_lo, a_hi, b_lo, b_hi) -> torch.Tensor:
    """The original's temporal IoU of [lo, hi + 1) intervals; its 'union' is the hull of the two."""
    inter = (torch.minimum(a_hi, b_hi) + 1 - torch.maximum(a_lo, b_lo)).clamp(min=0)
    hull = torch.maximum(a_hi, b_hi) + 1 - torch.minimum(a_lo, b_lo)
    return torch.where(hull > 0, inter.double() / hull.clamp(min=1).double(), torch.zeros_like(inter, dtype=torch.float64))


def training_proposals(temporal_scores: torch.Tensor, targets: torch.Tensor, ts_labels, frame_valid: Optional[torch.Tensor] = None,
                       max_num_proposal: int = 1, iou_thd: float = 0.5, ce_prob_thd: float = 0.01):
    """STAGE's training-time span proposals (paper 4.2, "Span Proposal"): the best ``max_num_proposal``
    spans of the correct hypothesis, kept when their confidence reaches ``ce_prob_thd`` and their
    temporal IoU with the ground-truth span reaches ``iou_thd``.

    ``temporal_scores`` (N, C, T, 2) masked start/end logits; ``ts_labels`` {"st", "ed"} (N,).
    Returns ``(gt_lo, gt_hi, pred_lo, pred_hi, accepted)`` in valid-frame ranks: (N,) for the ground
    truth, (N, max_num_proposal) for the predictions. Sample n contributes ``1 + accepted[n].sum()``
    rows to the training logits, its ground-truth row first.
    """
    N, _, T, _ = temporal_scores.shape
    if frame_valid is None:
        frame_valid = torch.ones(N, T, dtype=torch.bool, device=temporal_scores.device)
    rows = torch.arange(N, device=temporal_scores.device)
    probs = F.softmax(temporal_scores.detach()[rows, targets.to(rows.device)], dim=1)  # (N, T, 2)
    top_n = min(max_num_proposal, T * T)
    st, ed, conf = _best_spans(probs[..., 0], probs[..., 1], top_n)
    pred_lo, pred_hi = _valid_ranks(frame_valid, st, ed)
    gt_st = torch.as_tensor(ts_labels["st"], device=rows.device).reshape(N, 1)
    gt_ed = torch.as_tensor(ts_labels["ed"], device=rows.device).reshape(N, 1)
    gt_lo, gt_hi = _valid_ranks(frame_valid, gt_st, gt_ed)
    accepted = (conf.double() >= ce_prob_thd) & (_temporal_iou(pred_lo, pred_hi, gt_lo, gt_hi) >= iou_thd)
    return gt_lo[:, 0], gt_hi[:, 0], pred_lo, pred_hi, accepted


def _window_max(feats, feat_mask, frame_valid, lo, hi, extra: int) -> torch.Tensor:
    """Max-pool (N, C, T, D) ``feats`` over the valid frames whose rank lies in
    [lo - extra, hi + extra] (``lo``/``hi`` (N, C) or broadcastable), cells masked by ``feat_mask``
    (N, C, T, 1) set to -1e10 first. A window that holds no valid frame (only for ``extra = 0`` and
    a span between or after the valid frames) falls back to the nearest valid frame after ``lo``,
    else the last one."""
    rank = frame_valid.long().cumsum(1) - 1
    last = (frame_valid.sum(1) - 1).clamp(min=0).view(-1, 1)
    w_lo, w_hi = lo - extra, hi + extra
    empty = w_hi < w_lo
    nearest = torch.minimum(lo, last.expand_as(lo))
    w_lo = torch.where(empty, nearest, w_lo)
    w_hi = torch.where(empty, nearest, w_hi)
    r = rank.unsqueeze(1)
    inside = frame_valid.unsqueeze(1) & (r >= w_lo.unsqueeze(-1)) & (r <= w_hi.unsqueeze(-1))  # (N, C, T)
    return mask_logits(feats, feat_mask * inside.unsqueeze(-1).to(feat_mask.dtype)).max(dim=2)[0]


# --------------------------------------------------------------------------- STAGE


class STAGE(nn.Module):
    """STAGE (TVQA+, ACL 2020), built as ``STAGE(opt)`` from the original's option namespace
    (:func:`stage_opt` gives its defaults).

    ``forward(batch)`` in training returns ``([logits (N_new, C), targets (N_new,)], att_loss,
    att_predictions, temporal_loss, temporal_scores (N, C, Li, 2))`` where, with ``add_local``,
    every sample contributes its ground-truth-span row and, when accepted, a predicted-span row
    (:func:`training_proposals`); in eval it returns ``(logits (N, C), att_loss, None,
    temporal_loss, softmax(temporal_scores) over frames)``. ``forward_main`` adds the dict of
    other outputs (``vid_raw_s``, ``sub_raw_s``, normalised scores, ``temporal_scores``).
    """

    #: masks narrowed over the frame axis make the model see exactly the remaining frames
    supports_frame_mask = True
    #: any number of hypotheses per question (the original: 5)
    supports_any_num_candidates = True

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.inference_mode = False
        self.sub_flag = opt.sub_flag
        self.vfeat_flag = opt.vfeat_flag
        self.vfeat_size = opt.vfeat_size
        self.t_iter = opt.t_iter
        self.extra_span_length = opt.extra_span_length
        self.add_local = opt.add_local
        self.use_sup_att = opt.use_sup_att
        self.num_negatives = opt.num_negatives
        self.negative_pool_size = opt.negative_pool_size
        self.num_hard = opt.num_hard
        self.drop_topk = opt.drop_topk
        self.margin = opt.margin
        self.att_loss_type = opt.att_loss_type
        self.scale = opt.scale
        self.alpha = opt.alpha
        self.dropout = opt.dropout
        self.hsz = opt.hsz
        self.bsz = None
        self.num_seg = None
        self.num_a = 5
        self.flag_cnt = int(self.sub_flag) + int(self.vfeat_flag)
        self.wd_size = opt.embedding_size
        self.bridge_hsz = 300  # fixed in the original, whatever the feature sizes

        hsz, drop = self.hsz, self.dropout
        self.bert_word_encoding_fc = _mlp(self.wd_size, self.bridge_hsz, drop, norm_in=True, norm_out=True)
        if self.vfeat_flag:
            self.vid_fc = _mlp(self.vfeat_size, self.bridge_hsz, drop, norm_in=True, norm_out=True)
        if self.flag_cnt == 2:
            self.concat_fc = _mlp(3 * hsz, hsz, drop, norm_in=True, norm_out=True)
        self.input_embedding = _mlp(self.bridge_hsz, hsz, drop, norm_in=False, norm_out=True)
        self.input_encoder = StackedEncoder(
            n_blocks=opt.input_encoder_n_blocks, n_conv=opt.input_encoder_n_conv,
            kernel_size=opt.input_encoder_kernel_size, num_heads=opt.input_encoder_n_heads,
            hidden_size=hsz, dropout=drop)
        self.str_attn = StructuredAttention(dropout=drop, scale=opt.scale, add_void=opt.add_non_visual)
        self.c2q_down_projection = _mlp(3 * hsz, hsz, drop, norm_in=True, norm_out=False)
        self.cls_encoder = StackedEncoder(
            n_blocks=opt.cls_encoder_n_blocks, n_conv=opt.cls_encoder_n_conv,
            kernel_size=opt.cls_encoder_kernel_size, num_heads=opt.cls_encoder_n_heads,
            hidden_size=hsz, dropout=drop)
        self.cls_projection_layers = nn.ModuleList(
            [LinearWrapper(hsz, hsz, layer_norm=True, dropout=drop, relu=True)]
            + [ConvLinear(hsz, hsz, kernel_size=3, layer_norm=True, dropout=drop, relu=True) for _ in range(self.t_iter)])
        self.temporal_scoring_st_layers = nn.ModuleList(
            [LinearWrapper(hsz, 1, layer_norm=True, dropout=drop, relu=False) for _ in range(self.t_iter + 1)])
        self.temporal_scoring_ed_layers = nn.ModuleList(
            [LinearWrapper(hsz, 1, layer_norm=True, dropout=drop, relu=False) for _ in range(self.t_iter + 1)])
        self.temporal_criterion = nn.CrossEntropyLoss(reduction="sum")
        self.classifier = LinearWrapper(2 * hsz if self.add_local else hsz, 1, layer_norm=True, dropout=drop, relu=False)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, batch):
        if self.inference_mode:
            return self.forward_main(batch)
        return self.forward_main(batch)[:5]

    def _attend_stream(self, a_embed, a_mask, feats, mask, fc):
        """One context stream (subtitle words or region features) ``[B, T, N, D]``: encoded per time step
        by the shared encoder behind its own projection ``fc``, then attended by every QA hypothesis.
        -> ``(attended, attended_mask, raw_s, normalized_s)`` of ``qa_ctx_attention``."""
        bsz, num_imgs, num_items = feats.shape[:3]
        embed = self.base_encoder(feats.reshape(bsz * num_imgs, num_items, -1), mask.reshape(bsz * num_imgs, num_items),
                                  fc, self.input_embedding, self.input_encoder)
        embed = embed.reshape(bsz, 1, num_imgs, num_items, -1)
        return self.qa_ctx_attention(a_embed, embed, a_mask, mask.reshape(bsz, 1, num_imgs, num_items),
                                     noun_mask=None, non_visual_vectors=None)

    def forward_main(self, batch):
        """See the class docstring; ``batch`` is an attribute dict (or a plain dict) with the
        original's fields. Shapes: qas_bert (N, 5, Lqa, E), qas_mask (N, 5, Lqa), sub_bert
        (N, Li, Ls, E), sub_mask (N, Li, Ls), vid (N, Li, Lr, V), vid_mask (N, Li, Lr), target (N,),
        ts_label {"st": (N,), "ed": (N,)} (image indices, end inclusive), ts_label_mask (N, Li)."""
        qas_bert, qas_mask = _get(batch, "qas_bert"), _get(batch, "qas_mask")
        bsz, num_a = qas_bert.shape[:2]
        self.bsz = bsz
        hsz = self.hsz
        a_embed = self.base_encoder(qas_bert.reshape(bsz * num_a, -1, self.wd_size), qas_mask.reshape(bsz * num_a, -1),
                                    self.bert_word_encoding_fc, self.input_embedding, self.input_encoder)
        a_embed = a_embed.view(bsz, num_a, 1, -1, hsz)
        a_mask = qas_mask.reshape(bsz, num_a, 1, -1)

        other_outputs: Dict[str, torch.Tensor] = {}
        attended_sub = attended_sub_mask = attended_vid = attended_vid_mask = None
        if self.sub_flag:
            attended_sub, attended_sub_mask, other_outputs["sub_raw_s"], other_outputs["sub_normalized_s"] = \
                self._attend_stream(a_embed, a_mask, _get(batch, "sub_bert"), _get(batch, "sub_mask"),
                                    self.bert_word_encoding_fc)
        if self.vfeat_flag:
            vid = F.normalize(_get(batch, "vid"), p=2, dim=-1)
            attended_vid, attended_vid_mask, other_outputs["vid_raw_s"], other_outputs["vid_normalized_s"] = \
                self._attend_stream(a_embed, a_mask, vid, _get(batch, "vid_mask"), self.vid_fc)

        if self.flag_cnt == 2:  # video-text fusion (paper 4.2): [S; V; S*V] W_F + b_F
            statement = self.concat_fc(torch.cat([attended_sub, attended_vid, attended_sub * attended_vid], dim=-1))
            statement_mask = attended_vid_mask
        elif self.sub_flag:
            statement, statement_mask = attended_sub, attended_sub_mask
        elif self.vfeat_flag:
            statement, statement_mask = attended_vid, attended_vid_mask
        else:
            raise ValueError("STAGE needs at least one input stream (opt.sub_flag or opt.vfeat_flag)")

        target = _get(batch, "target")
        ts_label = _get(batch, "ts_label")
        ts_label_mask = _get(batch, "ts_label_mask")
        if ts_label_mask is None:
            ts_label_mask = statement.new_ones(statement.shape[:1] + statement.shape[2:3])
        out, target, t_scores = self.classfier_head_multi_proposal(
            statement, statement_mask, target, ts_label, ts_label_mask, extra_span_length=self.extra_span_length)
        other_outputs["temporal_scores"] = t_scores

        if self.inference_mode:
            return {
                "answer": out,
                "t_scores": F.softmax(t_scores, dim=2),
                "att_predictions": self.get_att_prediction(
                    scores=other_outputs["vid_raw_s"], object_vocab=_get(batch, "eval_object_word_ids"),
                    words=_get(batch, "qas"), vid_names=_get(batch, "vid_name"), qids=_get(batch, "qid"),
                    img_indices=_get(batch, "image_indices"), boxes=_get(batch, "boxes"),
                    start_indices=_get(batch, "anno_st_idx")) if self.vfeat_flag else None,
            }

        att_loss = 0
        att_predictions = None
        att_labels = _get(batch, "att_labels")
        if self.use_sup_att and self.training and self.vfeat_flag and att_labels is not None:
            att_loss, att_predictions = self.get_att_loss(
                other_outputs["vid_raw_s"], att_labels, _get(batch, "target"), _get(batch, "qas"),
                vid_names=_get(batch, "vid_name"), qids=_get(batch, "qid"), q_lens=_get(batch, "q_l"),
                img_indices=_get(batch, "image_indices"), boxes=_get(batch, "boxes"),
                start_indices=_get(batch, "anno_st_idx"), num_negatives=self.num_negatives,
                use_hard_negatives=bool(_get(batch, "use_hard_negatives", False)), drop_topk=self.drop_topk)

        if ts_label is not None and _get(batch, "target") is not None:
            temporal_loss = self.get_ts_loss(temporal_scores=t_scores, ts_labels=ts_label, answer_indices=_get(batch, "target"))
        else:
            temporal_loss = t_scores.new_zeros(())

        if self.training:
            return [out, target], att_loss, att_predictions, temporal_loss, t_scores, other_outputs
        return out, att_loss, att_predictions, temporal_loss, F.softmax(t_scores, dim=2), other_outputs

    @classmethod
    def base_encoder(cls, data, data_mask, init_encoder, downsize_encoder, input_encoder):
        """Raw features (N, L, E) -> init projection -> down-projection to hsz -> convolutional encoder."""
        return input_encoder(downsize_encoder(init_encoder(data)), data_mask)

    def qa_ctx_attention(self, qa_embed, ctx_embed, qa_mask, ctx_mask, noun_mask, non_visual_vectors):
        """Attend from hypothesis words (N, 5, 1, Lqa, D) to context items (N, 1, Li, Lr, D); returns
        the QA-aware context ``[h; u; h*u]`` projected to D (N, 5, Li, Lqa, D), its word mask, and the
        raw / normalised attention scores (N, 5, Li, Lqa, Lr)."""
        num_img = ctx_mask.shape[2]
        u_a, raw_s, s_mask, s_normalized = self.str_attn(qa_embed, ctx_embed, qa_mask, ctx_mask,
                                                         noun_mask=noun_mask, void_vector=non_visual_vectors)
        qa_embed = qa_embed.expand(-1, -1, num_img, -1, -1)
        mixed = self.c2q_down_projection(torch.cat([qa_embed, u_a, qa_embed * u_a], dim=-1))
        mixed_mask = (s_mask.sum(-1) != 0).float()  # a word counts where the frame has anything to attend to
        return mixed, mixed_mask, raw_s, s_normalized

    def residual_temporal_predictor(self, layer_idx, input_tensor):
        """(N, L, D) -> (x + projection(x), start/end scores (N, L, 2))."""
        x = input_tensor + self.cls_projection_layers[layer_idx](input_tensor)
        scores = torch.cat([self.temporal_scoring_st_layers[layer_idx](x), self.temporal_scoring_ed_layers[layer_idx](x)], dim=2)
        return x, scores

    def classfier_head_multi_proposal(self, statement, statement_mask, targets, ts_labels, ts_labels_mask,
                                      max_num_proposal=1, ce_prob_thd=0.01, iou_thd=0.5, extra_span_length=3):
        """Fused (N, 5, Li, Lqa, D) -> convolutional encoder + max-pool over words -> per-frame
        representation A_k (N, 5, Li, D) -> span predictor and answer scores (paper 4.2).
        Returns ``(answer scores (N_new, 5), targets (N_new,), masked start/end logits (N, 5, Li, 2))``."""
        bsz, num_a, num_img, num_words = statement_mask.shape
        word_mask = statement_mask.reshape(bsz * num_a * num_img, num_words)
        encoded = self.cls_encoder(statement.reshape(bsz * num_a * num_img, num_words, -1), word_mask)
        per_frame = mask_logits(encoded, word_mask.unsqueeze(2)).max(dim=1)[0].view(bsz * num_a, num_img, -1)
        frame_has_words = (word_mask.sum(1) != 0).float().view(bsz, num_a, num_img, 1)

        # Only layer 0 feeds anything: with t_iter > 0 the original averages layer 0's scores with
        # themselves and answers from layer 0's representation.
        per_frame, t_scores = self.residual_temporal_predictor(0, per_frame)
        t_scores = mask_logits(t_scores.view(bsz, num_a, num_img, 2), ts_labels_mask.reshape(bsz, 1, num_img, 1))
        per_frame = per_frame.view(bsz, num_a, num_img, -1)

        if self.add_local:
            pooled, targets = self.get_proposals(
                per_frame, frame_has_words, t_scores, targets, ts_labels, max_num_proposal=max_num_proposal,
                iou_thd=iou_thd, ce_prob_thd=ce_prob_thd, extra_span_length=extra_span_length,
                frame_valid=ts_labels_mask > 0)
        else:
            pooled = mask_logits(per_frame, frame_has_words).max(dim=2)[0]
        return self.classifier(pooled).squeeze(2), targets, t_scores

    def get_proposals(self, max_statement, max_statement_mask, temporal_scores, targets, ts_labels,
                      max_num_proposal=1, iou_thd=0.5, ce_prob_thd=0.01, extra_span_length=3, frame_valid=None):
        """[local span max-pool ; global max-pool] per hypothesis (paper 4.2, "Span Proposal and
        Answer Prediction"). Training: one row per ground-truth span and per accepted proposal
        (:func:`training_proposals`), the correct answer's span shared by all hypotheses. Eval: each
        hypothesis' own most likely span. Spans are widened by ``extra_span_length`` valid frames."""
        bsz, num_a, num_img, _ = max_statement_mask.shape
        if frame_valid is None:
            frame_valid = torch.ones(bsz, num_img, dtype=torch.bool, device=max_statement.device)
        global_feat = mask_logits(max_statement, max_statement_mask).max(dim=2)[0]  # (N, 5, D)
        if self.training:
            if ts_labels is None:
                raise ValueError("STAGE with add_local needs ts_label (the ground-truth span) in training")
            gt_lo, gt_hi, pred_lo, pred_hi, accepted = training_proposals(
                temporal_scores, targets, ts_labels, frame_valid, max_num_proposal, iou_thd, ce_prob_thd)
            lo = torch.cat([gt_lo[:, None], pred_lo], dim=1)  # (N, 1 + P): the ground truth first
            hi = torch.cat([gt_hi[:, None], pred_hi], dim=1)
            windows = lo.shape[1]
            local = _window_max(
                max_statement.unsqueeze(1).expand(-1, windows, -1, -1, -1).reshape(bsz * windows, num_a, num_img, -1),
                max_statement_mask.unsqueeze(1).expand(-1, windows, -1, -1, -1).reshape(bsz * windows, num_a, num_img, 1),
                frame_valid.repeat_interleave(windows, dim=0), lo.reshape(-1, 1), hi.reshape(-1, 1), extra_span_length,
            ).view(bsz, windows, num_a, -1)
            keep = torch.cat([torch.ones_like(accepted[:, :1]), accepted], dim=1)  # (N, 1 + P), row-major = the original's order
            rows = torch.cat([local, global_feat.unsqueeze(1).expand_as(local)], dim=-1)[keep]
            return rows, targets.to(keep.device).unsqueeze(1).expand(-1, windows)[keep]
        probs = F.softmax(temporal_scores, dim=2).reshape(bsz * num_a, num_img, 2)
        st, ed, _ = _best_spans(probs[..., 0], probs[..., 1], 1)
        lo, hi = _valid_ranks(frame_valid, st.view(bsz, num_a), ed.view(bsz, num_a))
        local = _window_max(max_statement, max_statement_mask, frame_valid, lo, hi, extra_span_length)
        return torch.cat([local, global_feat], dim=-1), targets

    def get_ts_loss(self, temporal_scores, ts_labels, answer_indices):
        """Span loss of the correct hypothesis, summed over the batch: (CE(start) + CE(end)) / 2
        (paper 4.3; the paper's 1/N comes from the training script's averaging)."""
        rows = torch.arange(len(answer_indices), device=temporal_scores.device)
        correct = temporal_scores[rows, torch.as_tensor(answer_indices, device=rows.device)]
        st = torch.as_tensor(ts_labels["st"], device=rows.device)
        ed = torch.as_tensor(ts_labels["ed"], device=rows.device)
        return (self.temporal_criterion(correct[:, :, 0], st) + self.temporal_criterion(correct[:, :, 1], ed)) / 2.0

    # ---- attention supervision ------------------------------------------------------------------
    @classmethod
    def sample_negatives(cls, pred_score, pos_indices, neg_indices, num_negatives=2, use_hard_negatives=False,
                         negative_pool_size=0, num_hard=2, drop_topk=0):
        """Pair every positive (repeated ``num_negatives`` times) with a negative of the same image and
        word: uniformly at random (``torch.randint`` on the global generator, as the original), or the
        highest-scoring ones (``use_hard_negatives``; optionally sampled from a pool of the
        ``negative_pool_size`` hardest, mixed with ``num_negatives - num_hard`` easy ones).
        ``pred_score`` (num_img, num_words, num_regions) is indexed with the (img, word, region) rows."""
        num_unique_pos = len(pos_indices)
        sampled_pos = torch.cat([pos_indices] * num_negatives, dim=0)
        if not use_hard_negatives:
            pick = torch.randint(low=0, high=len(neg_indices), size=(len(sampled_pos),), dtype=torch.long)
            return sampled_pos, neg_indices[pick]
        neg_scores = pred_score[neg_indices[:, 0], neg_indices[:, 1], neg_indices[:, 2]]
        order = torch.sort(neg_scores, descending=True, stable=True)[1].tolist()
        if negative_pool_size <= num_negatives:  # just the hardest ones
            return sampled_pos, neg_indices[order[drop_topk:drop_topk + len(sampled_pos)]]
        hard_pool = neg_indices[order[drop_topk:drop_topk + negative_pool_size]]
        num_hard_negs = num_negatives
        easy = None
        if num_hard < num_negatives:
            easy_pool = neg_indices[order[drop_topk + negative_pool_size:]]
            num_hard_negs = num_hard
            easy = easy_pool[torch.randint(low=0, high=len(easy_pool), size=((num_negatives - num_hard) * num_unique_pos,), dtype=torch.long)]
        hard = hard_pool[torch.randint(low=0, high=len(hard_pool), size=(num_hard_negs * num_unique_pos,), dtype=torch.long)]
        return sampled_pos, hard if easy is None or len(easy) == 0 else torch.cat([hard, easy], dim=0)

    def att_sample_indices(self, scores, att_labels, target, start_indices, num_negatives=2, use_hard_negatives=False,
                           drop_topk=0):
        """The (batch, answer, img, word, region) rows of every positive and its sampled negative, in
        the original's order (samples, then images, then words), as two (P, 5) int64 tensors.

        ``att_labels[n]`` lists, for the annotated images of sample n (starting at frame
        ``start_indices[n]``), a (words, regions) tensor whose nonzero cells are positive boxes;
        its zero cells are the negatives. Only the correct hypothesis ``target[n]`` is supervised."""
        pos_rows, neg_rows = [], []
        for b in range(len(target)):
            answer = int(target[b])
            labels = att_labels[b]
            if len(labels) == 0:
                continue
            start = int(start_indices[b]) if start_indices is not None else 0
            sen_l = labels[0].shape[0]
            # Read at global image indices (the original cut `scores` to the annotated images first).
            pred_score = scores[b, answer, :, :sen_l]
            pos_parts, neg_parts = [], []
            for local, img_labels in enumerate(labels):
                pos = torch.nonzero(img_labels)
                if len(pos) == 0:
                    continue
                img = start + local
                neg = torch.nonzero(img_labels == 0)
                pos_parts.append(torch.cat([pos.new_full((len(pos), 1), img), pos], dim=1))
                neg_parts.append(torch.cat([neg.new_full((len(neg), 1), img), neg], dim=1))
            if not pos_parts:
                continue
            pos_all, neg_all = torch.cat(pos_parts), torch.cat(neg_parts)
            for img in pos_all[:, 0].unique().tolist():
                img_pos, img_neg = pos_all[pos_all[:, 0] == img], neg_all[neg_all[:, 0] == img]
                for word in img_pos[:, 1].unique().tolist():
                    sp, sn = self.sample_negatives(
                        pred_score, img_pos[img_pos[:, 1] == word], img_neg[img_neg[:, 1] == word],
                        num_negatives=num_negatives, use_hard_negatives=use_hard_negatives,
                        negative_pool_size=self.negative_pool_size, num_hard=self.num_hard, drop_topk=drop_topk)
                    base = torch.tensor([[b, answer]], dtype=torch.long, device=sp.device).expand(len(sp), 2)
                    pos_rows.append(torch.cat([base, sp], dim=1))
                    neg_rows.append(torch.cat([base, sn], dim=1))
        if not pos_rows:
            empty = torch.zeros(0, 5, dtype=torch.long, device=scores.device)
            return empty, empty.clone()
        return torch.cat(pos_rows), torch.cat(neg_rows)

    def att_loss_from_indices(self, scores, pos_indices, neg_indices):
        """LSE (or hinge) ranking loss summed over (positive, negative) pairs (paper 4.3)."""
        if len(pos_indices) == 0:
            return scores.new_zeros(())
        pos = scores[tuple(pos_indices.to(scores.device).t())]
        neg = scores[tuple(neg_indices.to(scores.device).t())]
        if self.att_loss_type == "hinge":
            return torch.clamp(self.margin + neg - pos, min=0).sum()
        if self.att_loss_type == "lse":
            return torch.log1p(torch.exp(self.alpha * (neg - pos))).sum()
        raise ValueError(f"att_loss_type must be 'hinge' or 'lse', got {self.att_loss_type!r}")

    def get_att_loss(self, scores, att_labels, target, words, vid_names, qids, q_lens, img_indices, boxes,
                     start_indices, num_negatives=2, use_hard_negatives=False, drop_topk=0):
        """``(attention loss, None)``: the original's signature; only called in training, where its
        prediction list is never built. See :meth:`att_sample_indices` for the labels."""
        pos, neg = self.att_sample_indices(scores, att_labels, target, start_indices, num_negatives=num_negatives,
                                           use_hard_negatives=use_hard_negatives, drop_topk=drop_topk)
        return self.att_loss_from_indices(scores, pos, neg), None

    def get_att_prediction(self, scores, object_vocab, words, vid_names, qids, img_indices, boxes, start_indices,
                           score_thd=0.2):
        """Inference-time grounding (paper 4.3): for every hypothesis word in ``object_vocab`` and every
        annotated image, the boxes scoring at least ``score_thd``, in ascending score order."""
        if not self.vfeat_flag:
            return None
        vocab = set(int(w) for w in object_vocab)
        predictions = []
        for b in range(len(scores)):
            start = int(start_indices[b])
            per_answer = {}
            for a in range(scores.shape[1]):
                found = []
                word_ids = [int(w) for w in words[b, a].tolist()]
                for local, img_boxes in enumerate(boxes[b]):
                    img = start + local
                    for w_idx, w in enumerate(word_ids):
                        if w not in vocab:
                            continue
                        region_scores = scores[b, a, img, w_idx].detach().cpu()
                        kept = [i for i in range(len(region_scores)) if float(region_scores[i]) >= score_thd]
                        kept.sort(key=lambda i: float(region_scores[i]))
                        found.append({
                            "pred": [float(region_scores[i]) for i in kept],
                            "bbox": [img_boxes[i] for i in kept],
                            "word": w,
                            "qid": int(qids[b]),
                            "vid_name": vid_names[b],
                            "img_idx": img_indices[b][img],
                        })
                per_answer[a] = found
            predictions.append(per_answer)
        return predictions


# --------------------------------------------------------------------------- adapter


@contextlib.contextmanager
def _plain_forward(model):
    """Run ``forward_main`` for scores only: no inference-mode dict, no attention loss (the adapter
    returns the attention scores; its loss needs per-box labels the plain batch does not carry)."""
    saved = {name: getattr(model, name) for name in ("inference_mode", "use_sup_att") if hasattr(model, name)}
    try:
        for name in saved:
            setattr(model, name, False)
        yield
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def _binary(mask: torch.Tensor) -> torch.Tensor:
    # > 0: bool masks, 0/1 floats, and masks averaged by a mixup (a region is there if it is there in either).
    return (mask > 0).float()


class STAGEAdapter(Adapter):
    """Drives the reference :class:`STAGE` in **mask** mode (its frame masks are exact: a masked frame
    is a removed frame) and the original jayleicn/TVQAplus class in **bucket** mode (it widens spans
    by frame positions, so it must see physically sliced frames).

    Plain batch (dict): ``vid (B, T, R, V)``, ``vid_mask (B, T, R)``, ``sub_bert (B, T, Ls, E)``,
    ``sub_mask (B, T, Ls)``, ``ts_label_mask (B, T)`` (the frame mask), ``qas_bert (B, C, Lqa, E)``,
    ``qas_mask (B, C, Lqa)``, ``answer (B,)``, optional ``ts_label_st`` / ``ts_label_ed (B,)`` (the
    ground-truth span, end inclusive; default: all valid frames) and ``qid``. Masks may be bool or
    0/1 floats; the model sees ``mask > 0``, so a mask a mixup averaged marks what either sample had
    (bool frame masks are not mixed at all; ``qas_mask`` must be float for ``candidates="pairwise"``).
    Without subtitles or regions, build the adapter with ``sub=False`` / ``vfeat=False`` and leave
    those fields out.

    Output: ``logits (B, C)``; in eval the original's answer scores (local = each hypothesis' own
    most likely span); in training the row of each sample built from its ground-truth span (the
    row the original's QA loss always contains; its extra proposal rows are dropped).
    ``span_logits = (start, end)``, each ``(B, C, T)``, the masked pre-softmax scores (-1e10 at
    masked frames). ``attention`` = the original's raw region scores ``vid_raw_s``
    ``(B, C, T, Lqa, R)``: cosine similarity of hypothesis word and region, -1e10 added at masked
    cells (the scores the attention loss ranks; softmax over R after scaling gives the weights).

    Views: when frames are removed (or masked), the ground-truth span becomes the kept frames inside
    it, or, if none is kept, the kept frame nearest to it (the earlier on a tie). In mask mode a view's
    ``span_logits`` and ``attention`` keep the full T axis: equal to the sliced run's on the kept
    frames, -1e10 (zero probability) on the others; bucket views return logits only. The temporal
    scoring layers are trained only by STAGE's span loss, which is not part of the logits, hence
    ``find_unused_parameters = True``. The original class gets two guards: more (or fewer) than 5
    hypotheses run in groups of 5 (a short group padded with copies whose scores are dropped), and
    its attention loss is switched off for the call (it would fail without box labels). Both classes
    are called through ``forward_main`` (``forward`` drops the span scores and attention).
    """

    candidate = {"qas_bert": 1, "qas_mask": 1}
    subset_mode = "mask"
    mask_field = "ts_label_mask"
    find_unused_parameters = True
    outputs = frozenset({"logits", "span_logits", "attention", "hypothesis"})
    text_tokens = "features"    # qas_bert: BERT token features (contrastive masking)

    def __init__(self, sub: bool = True, vfeat: bool = True):
        if not (sub or vfeat):
            raise ValueError("STAGEAdapter needs subtitles, regions, or both")
        self.sub, self.vfeat = sub, vfeat
        # The frame mask first: the batch size and frame count are read from it, whatever the streams.
        temporal = {"ts_label_mask": 1}
        if vfeat:
            temporal.update(vid=1, vid_mask=1)
        if sub:
            temporal.update(sub_bert=1, sub_mask=1)
        self.temporal = temporal

    def mode_for(self, model) -> str:
        return "mask" if getattr(model, "supports_frame_mask", False) else "bucket"

    # ---- views ----------------------------------------------------------------------------------
    def _frame_mask(self, inputs: dict) -> torch.Tensor:
        return inputs["ts_label_mask"] > 0

    def view_span(self, inputs: dict, keep: torch.Tensor):
        """The ground-truth span of every row restricted to ``keep``, as frame positions (st, ed), or
        None when the batch has no span."""
        if inputs.get("ts_label_st") is None or inputs.get("ts_label_ed") is None:
            return None
        keep = keep.bool()
        T = keep.shape[1]
        pos = torch.arange(T, device=keep.device)
        st = torch.as_tensor(inputs["ts_label_st"], device=keep.device).long().view(-1, 1)
        ed = torch.as_tensor(inputs["ts_label_ed"], device=keep.device).long().view(-1, 1)
        inside = keep & (pos >= st) & (pos <= ed)
        first = torch.where(inside, pos, T).min(dim=1)[0]
        last = torch.where(inside, pos, -1).max(dim=1)[0]
        distance = torch.where(pos < st, st - pos, (pos - ed).clamp(min=0))
        nearest = distance.masked_fill(~keep, 2 * T + 1).argmin(dim=1)  # first minimum: the earlier frame
        has = inside.any(dim=1)
        return torch.where(has, first, nearest), torch.where(has, last, nearest)

    def subset(self, inputs: dict, keep: torch.Tensor) -> dict:
        """Mask mode: the frame mask, every region and subtitle mask narrowed to ``keep``, and the
        ground-truth span moved onto kept frames; T unchanged."""
        if self.subset_mode != "mask":
            return super().subset(inputs, keep)
        device = inputs["ts_label_mask"].device
        keep = keep.to(device).bool()
        out = dict(inputs)

        def narrow(name, extra_dims):
            mask = inputs.get(name)
            if mask is None:
                return
            kept = mask.bool() & keep.view(keep.shape + (1,) * extra_dims)
            out[name] = kept.to(mask.dtype)

        narrow("ts_label_mask", 0)
        if self.vfeat:
            narrow("vid_mask", 1)
        if self.sub:
            narrow("sub_mask", 1)
        span = self.view_span(inputs, keep & self._frame_mask(inputs))
        if span is not None:
            out["ts_label_st"], out["ts_label_ed"] = span
        return out

    def slice_frames(self, inputs: dict, keep: torch.Tensor) -> dict:
        """The kept frames physically (every row keeps as many), the span re-indexed onto them."""
        out = super().slice_frames(inputs, keep)
        span = self.view_span(inputs, keep.to(inputs["ts_label_mask"].device).bool())
        if span is not None:
            rank = keep.to(span[0].device).long().cumsum(dim=1) - 1
            out["ts_label_st"] = rank.gather(1, span[0].view(-1, 1)).view(-1)
            out["ts_label_ed"] = rank.gather(1, span[1].view(-1, 1)).view(-1)
        return out

    # ---- running the model ----------------------------------------------------------------------
    def model_batch(self, inputs: dict, candidates: Optional[torch.Tensor] = None, target=None) -> STAGEBatch:
        """The attribute dict STAGE reads, from the plain batch (contiguous: the original ``.view``\\ s)."""
        qas_bert, qas_mask = inputs["qas_bert"], inputs["qas_mask"]
        if candidates is not None:
            qas_bert = qas_bert.index_select(1, candidates.to(qas_bert.device))
            qas_mask = qas_mask.index_select(1, candidates.to(qas_mask.device))
        frame_mask = _binary(inputs["ts_label_mask"]).contiguous()
        B, T = frame_mask.shape
        device = frame_mask.device
        if target is None:
            answer = inputs.get(self.answer_field)
            target = torch.zeros(B, dtype=torch.long, device=device) if answer is None else torch.as_tensor(answer, device=device).long()
        if inputs.get("ts_label_st") is not None and inputs.get("ts_label_ed") is not None:
            st = torch.as_tensor(inputs["ts_label_st"], device=device).long()
            ed = torch.as_tensor(inputs["ts_label_ed"], device=device).long()
        else:  # no ground-truth span: the whole video
            pos = torch.arange(T, device=device)
            valid = frame_mask > 0
            st = torch.where(valid, pos, T).min(dim=1)[0].clamp(max=T - 1)
            ed = torch.where(valid, pos, -1).max(dim=1)[0].clamp(min=0)
        qids = inputs.get(self.qid_field)
        batch = STAGEBatch(
            qas_bert=qas_bert.contiguous(),
            qas_mask=_binary(qas_mask).contiguous(),
            target=target,
            ts_label={"st": st, "ed": ed},
            ts_label_mask=frame_mask,
            qid=list(qids) if qids is not None and len(qids) == B else list(range(B)),
            att_labels=None,
            anno_st_idx=[0] * B,
            q_l=[0] * B,
            use_hard_negatives=False,
            vid_name=[None] * B,
            image_indices=None,
            boxes=None,
        )
        if self.vfeat:
            batch.vid = inputs["vid"].contiguous()
            batch.vid_mask = _binary(inputs["vid_mask"]).contiguous()
        if self.sub:
            batch.sub_bert = inputs["sub_bert"].contiguous()
            batch.sub_mask = _binary(inputs["sub_mask"]).contiguous()
        return batch

    def _run(self, model, batch: STAGEBatch):
        # The classifier's input is each hypothesis' pooled representation (contrastive masking's H).
        with scorer_inputs(getattr(model, "classifier", None)) as seen:
            out, _, _, _, _, other = model.forward_main(batch)
        hypothesis = seen[-1] if seen else None
        t_scores = other["temporal_scores"]
        if isinstance(out, (list, tuple)) and not getattr(model, "add_local", True):
            out = out[0]   # training without span proposals (add_local off): one row per sample
        elif isinstance(out, (list, tuple)):  # training: rows = [ground truth, accepted proposals] per sample
            rows, _ = out
            gt_lo, _, _, _, accepted = training_proposals(
                t_scores, batch.target, batch.ts_label, batch.ts_label_mask > 0)
            counts = 1 + accepted.sum(dim=1)
            if int(counts.sum()) != rows.shape[0]:
                raise RuntimeError(f"STAGE returned {rows.shape[0]} training rows; its proposals imply {int(counts.sum())}")
            out = rows[counts.cumsum(0) - counts]
            hypothesis = None if hypothesis is None else hypothesis[counts.cumsum(0) - counts]
        return out, t_scores, other.get("vid_raw_s"), hypothesis

    def forward(self, model, inputs: dict) -> ModelOutput:
        C = inputs["qas_bert"].shape[1]
        group = C if getattr(model, "supports_any_num_candidates", False) else int(getattr(model, "num_a", 5))
        with _plain_forward(model):
            if group == C:
                logits, t_scores, attention, hypothesis = self._run(model, self.model_batch(inputs))
            else:
                pieces = []
                answer = inputs.get(self.answer_field)
                for start in range(0, C, group):
                    real = min(group, C - start)
                    cand = torch.arange(start, start + group).clamp(max=C - 1)  # pad a short group with copies
                    target = None
                    if answer is not None:
                        a = torch.as_tensor(answer).long()
                        target = torch.where((a >= start) & (a < start + real), a - start, torch.zeros_like(a))
                    result = self._run(model, self.model_batch(inputs, cand, target))
                    pieces.append([None if x is None else x[:, :real] for x in result])
                logits, t_scores, attention, hypothesis = (None if parts[0] is None else torch.cat(parts, dim=1)
                                                           for parts in zip(*pieces))
        return ModelOutput(logits=logits, span_logits=(t_scores[..., 0], t_scores[..., 1]), attention=attention,
                           hypothesis=hypothesis)

    def mask_text(self, inputs: dict, which: torch.Tensor, masker) -> dict:
        """Contrastive masking (:meth:`Adapter.mask_text`): hypothesis ``which[b]`` alone, its real
        ``qas_bert`` rows (``qas_mask > 0``; STAGE's hypothesis rows are words, no special tokens)
        through ``masker``. ``forward`` runs it as a batch of one hypothesis per question."""
        out = one_candidate(self, inputs, which)
        maskable = out["qas_mask"][:, 0] > 0
        out["qas_bert"] = masker(out["qas_bert"][:, 0], maskable).unsqueeze(1)
        return out


# --------------------------------------------------------------------------- original fixture


@contextlib.contextmanager
def _dropout_off(model: nn.Module):
    """Every dropout at p=0 (``nn.Dropout`` modules and the float rates the encoder blocks and the
    attention read), as the fixture's train-mode run did; restored afterwards."""
    saved = []
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = 0.0
        elif isinstance(module, (EncoderBlock, StructuredAttention)):
            saved.append((module, "dropout", module.dropout))
            module.dropout = 0.0
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def fixture_batch(inputs: Mapping[str, torch.Tensor], use_hard_negatives: bool = False) -> STAGEBatch:
    """The original's batch from a fixture's ``inputs.safetensors`` (as its generator built it)."""
    N = inputs["qas_bert"].shape[0]
    att = inputs["att_labels"]
    n_img, n_words = inputs["att_labels_num_images"].tolist(), inputs["att_labels_num_words"].tolist()
    return STAGEBatch(
        qas_bert=inputs["qas_bert"], qas_mask=inputs["qas_mask"], qas=inputs["qas"],
        sub_bert=inputs["sub_bert"], sub_mask=inputs["sub_mask"],
        vid=inputs["vid"], vid_mask=inputs["vid_mask"],
        target=inputs["target"],
        ts_label={"st": inputs["ts_label_st"], "ed": inputs["ts_label_ed"]},
        ts_label_mask=inputs["ts_label_mask"],
        att_labels=[[att[n, i, : n_words[n]] for i in range(n_img[n])] for n in range(N)],
        anno_st_idx=inputs["anno_st_idx"].tolist(), q_l=inputs["q_l"].tolist(),
        qid=list(range(N)), vid_name=[f"video{n}" for n in range(N)], image_indices=None, boxes=None,
        use_hard_negatives=use_hard_negatives,
    )


def fixture_model(config: Dict[str, Any]):
    """(model, run) for a jayleicn/TVQAplus fixture: ``STAGE(opt)`` from ``config["opt"]``; ``run``
    computes every output the fixture stores: eval logits / span scores / attention scores, and the
    train-mode outputs with every dropout at 0 (as recorded) and the recorded seeds, so the randomly
    sampled attention negatives are drawn exactly as the original drew them."""
    constructor = str(config.get("constructor", "STAGE(opt)"))
    if not constructor.startswith("STAGE("):
        raise ValueError(f"config.json builds {constructor.split('(')[0]!r}; expected STAGE")
    opt = SimpleNamespace(**config["opt"])
    model = STAGE(opt)
    seed = int(config.get("seeds_used", {}).get("torch.manual_seed right before each train-mode forward", config.get("seed", 0) + 3))
    att_weight, ts_weight = 0.1, 0.5  # main.py's defaults

    def run(model: STAGE, inputs: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        was_training = model.training
        out: Dict[str, torch.Tensor] = {}
        try:
            model.eval()
            logits, _, _, ts_loss, t_scores, other = model.forward_main(fixture_batch(inputs))
            out.update(logits=logits, t_scores=t_scores, t_scores_raw=other["temporal_scores"],
                       temporal_loss_eval=ts_loss.reshape(1))
            for name in ("vid_raw_s", "sub_raw_s"):
                if name in other:
                    out[name] = other[name]

            with _dropout_off(model), torch.random.fork_rng(devices=[]):
                model.train()
                N = inputs["qas_bert"].shape[0]
                hard = fixture_batch(inputs, use_hard_negatives=True)
                torch.manual_seed(seed)
                (rows, targets), att_hard, _, ts_train, t_raw, other_train = model.forward_main(hard)
                cls = F.cross_entropy(rows, targets, reduction="sum") * (N / len(targets))
                out.update(train_logits=rows, train_targets=targets, train_t_scores_raw=t_raw,
                           temporal_loss_train=ts_train.reshape(1), cls_loss_train=cls.reshape(1))
                if model.use_sup_att and model.vfeat_flag:
                    pos, neg = model.att_sample_indices(other_train["vid_raw_s"], hard.att_labels, hard.target,
                                                        hard.anno_st_idx, model.num_negatives, True, model.drop_topk)
                    out.update(att_loss_hard=torch.as_tensor(att_hard).reshape(1), att_pos_indices_hard=pos,
                               att_neg_indices_hard=neg,
                               total_loss_train_hard=(cls + att_weight * att_hard + ts_weight * ts_train).reshape(1))
                    rand = fixture_batch(inputs, use_hard_negatives=False)
                    torch.manual_seed(seed)
                    _, att_random, _, _, _, other_rand = model.forward_main(rand)
                    torch.manual_seed(seed)  # the same draws again, this time to read the indices
                    pos, neg = model.att_sample_indices(other_rand["vid_raw_s"], rand.att_labels, rand.target,
                                                        rand.anno_st_idx, model.num_negatives, False, model.drop_topk)
                    out.update(att_loss_random=torch.as_tensor(att_random).reshape(1), att_pos_indices_random=pos,
                               att_neg_indices_random=neg)
        finally:
            model.train(was_training)
        return out

    return model, run
