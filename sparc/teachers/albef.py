"""Reference ALBEF VQA model (the paper's image-QA teacher) and :class:`ALBEFTeacher`.

Li et al., "Align before Fuse: Vision and Language Representation Learning with Momentum
Distillation", NeurIPS 2021.

Checkpoint-compatible with salesforce/ALBEF @ b9727e4 (``models/model_vqa.py``, ``models/xbert.py``,
``models/vit.py``): every ``visual_encoder.*``, ``text_encoder.*`` and ``text_decoder.*`` key of a
``vqa.pth`` loads 1:1. It is an independent implementation:

* vision: timm's ``VisionTransformer`` (ALBEF's ViT uses timm's parameter names);
* text encoder: a small BERT written here with xbert's parameter names. Layers from
  ``fusion_layer`` on add cross-attention to the image tokens while keeping *bidirectional*
  self-attention (transformers' ``BertModel`` ties cross-attention to causal self-attention);
* answer decoder: transformers' ``BertLMHeadModel`` (causal, cross-attention to the question
  encoding).

Loading (:meth:`ALBEF.load_state_dict`, :func:`load_albef_checkpoint`) drops the momentum copies
``*_m.*`` (training-only), drops the decoder's ``position_ids`` buffer (persistent in xbert, not
in transformers 5) and resamples ``visual_encoder.pos_embed`` bicubically when the checkpoint was
trained at another resolution (as ALBEF's ``interpolate_pos_embed``); everything else is strict.
A pretraining checkpoint (``ALBEF.pth``) is turned into VQA weights as VQA.py does
(:func:`albef_pretrain_to_vqa`).

Quirks of the original kept here (see :meth:`ALBEF.rank_answer`): its answer ranking counts the
first answer token twice and ranks only the ``k`` candidates with the highest first-token
probability; it uses the first candidate's first token as the start token for every question;
questions are ``[CLS] q`` without ``[SEP]``. :meth:`ALBEF.cand_loglik` is the plain summed token
log-likelihood that the teacher uses.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from sparc.teachers.likelihood import LikelihoodTeacher, Tokens, ids_and_mask, pad_sequences

__all__ = [
    "ALBEF",
    "ALBEFImageState",
    "ALBEFTeacher",
    "BERT_BASE_CONFIG",
    "CheckpointMismatchError",
    "albef_pretrain_to_vqa",
    "XBertEncoder",
    "fixture_model",
    "albef_checkpoint_mismatch",
    "load_albef_checkpoint",
    "prepare_albef_state_dict",
    "read_albef_checkpoint",
    "resample_pos_embed",
]

#: ALBEF's ``configs/config_bert.json`` (bert-base-uncased plus ``fusion_layer``/``encoder_width``).
BERT_BASE_CONFIG: Dict[str, Any] = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
    "fusion_layer": 6,
    "encoder_width": 768,
}

MOMENTUM_PREFIXES = ("visual_encoder_m.", "text_encoder_m.", "text_decoder_m.")
# Persistent in xbert (so present in every ALBEF checkpoint), a non-persistent buffer in transformers 5.
_DECODER_POSITION_IDS = "text_decoder.bert.embeddings.position_ids"


# --------------------------------------------------------------------------- text encoder (xbert names)


class _Cfg:
    """Attribute access over a BERT config dict."""

    def __init__(self, d: Mapping[str, Any]):
        self.__dict__.update(BERT_BASE_CONFIG)
        self.__dict__.update(d)


class _Embeddings(nn.Module):
    def __init__(self, cfg: _Cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        # Persistent, as in xbert: ALBEF checkpoints carry it.
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings)[None])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        x = self.word_embeddings(input_ids)
        x = x + self.token_type_embeddings(torch.zeros_like(input_ids))
        x = x + self.position_embeddings(self.position_ids[:, :L])
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    """Multi-head attention with xbert's ``query``/``key``/``value`` names; ``mask`` is additive."""

    def __init__(self, cfg: _Cfg, kv_width: int):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, kv: Optional[torch.Tensor] = None) -> torch.Tensor:
        kv = x if kv is None else kv
        q, k, v = self._split(self.query(x)), self._split(self.key(kv)), self._split(self.value(kv))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask
        ctx = self.dropout(scores.softmax(dim=-1)) @ v
        B, _, L, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(B, L, -1)


class _AddNorm(nn.Module):
    """xbert's ``BertSelfOutput`` / ``BertOutput``: dense, dropout, residual LayerNorm."""

    def __init__(self, cfg: _Cfg, in_width: int):
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: _Cfg, kv_width: int):
        super().__init__()
        self.self = _SelfAttention(cfg, kv_width)
        self.output = _AddNorm(cfg, cfg.hidden_size)

    def forward(self, x, mask, kv=None):
        return self.output(self.self(x, mask, kv), x)


class _Intermediate(nn.Module):
    def __init__(self, cfg: _Cfg):
        super().__init__()
        if cfg.hidden_act != "gelu":
            raise ValueError(f"hidden_act {cfg.hidden_act!r}: only BERT's erf 'gelu' is supported")
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: _Cfg, cross: bool):
        super().__init__()
        self.attention = _Attention(cfg, cfg.hidden_size)
        if cross:
            self.crossattention = _Attention(cfg, cfg.encoder_width)
        self.intermediate = _Intermediate(cfg)
        self.output = _AddNorm(cfg, cfg.intermediate_size)

    def forward(self, x, mask, image=None, image_mask=None):
        x = self.attention(x, mask)
        if hasattr(self, "crossattention"):
            x = self.crossattention(x, image_mask, image)
        return self.output(self.intermediate(x), x)


class _LayerStack(nn.Module):
    def __init__(self, cfg: _Cfg):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, i >= cfg.fusion_layer) for i in range(cfg.num_hidden_layers))


class XBertEncoder(nn.Module):
    """ALBEF's text encoder (xbert ``BertModel(add_pooling_layer=False)``, mode ``multi_modal``):
    bidirectional self-attention everywhere; layers ``>= fusion_layer`` cross-attend to the image."""

    def __init__(self, bert_config: Mapping[str, Any]):
        super().__init__()
        self.config = _Cfg(bert_config)
        self.embeddings = _Embeddings(self.config)
        self.encoder = _LayerStack(self.config)

    @staticmethod
    def _additive(mask: torch.Tensor, fill: float, dtype) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].to(dtype)) * fill

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """-> last hidden state ``[B, L, hidden]``."""
        x = self.embeddings(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # xbert: (1 - m) * -10000 for self-attention; finfo.min (invert_attention_mask) for the image.
        mask = self._additive(attention_mask, -10000.0, x.dtype)
        image_mask = None
        if encoder_hidden_states is not None:
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=x.device)
            image_mask = self._additive(encoder_attention_mask, torch.finfo(x.dtype).min, x.dtype)
        for i, layer in enumerate(self.encoder.layer):
            if i >= self.config.fusion_layer and encoder_hidden_states is None:
                raise ValueError("the fusion layers need encoder_hidden_states (image tokens)")
            x = layer(x, mask, encoder_hidden_states, image_mask)
        return x


# --------------------------------------------------------------------------- the VQA model


def resample_pos_embed(pos_embed: torch.Tensor, num_patches: int, num_extra_tokens: int = 1) -> torch.Tensor:
    """``pos_embed [1, extra + n*n, D]`` -> ``[1, extra + num_patches, D]``: the extra (class)
    tokens unchanged, the square grid resampled bicubically (align_corners=False), as ALBEF's
    ``interpolate_pos_embed``."""
    old = int((pos_embed.shape[-2] - num_extra_tokens) ** 0.5)
    new = int(num_patches ** 0.5)
    if old == new:
        return pos_embed
    D = pos_embed.shape[-1]
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    grid = grid.reshape(1, old, old, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False).to(pos_embed.dtype)
    return torch.cat([extra, grid.permute(0, 2, 3, 1).reshape(1, new * new, D)], dim=1)


class ALBEF(nn.Module):
    """ALBEF's VQA model (``model_vqa.ALBEF`` at inference; no momentum copies).

    ``bert_config``: ALBEF's config_bert.json as a dict (defaults: :data:`BERT_BASE_CONFIG`);
    the decoder uses the same config with ``decoder_layers`` layers, all cross-attending.
    """

    def __init__(
        self,
        image_res: int = 384,
        vision_width: int = 768,
        vision_depth: int = 12,
        vision_heads: int = 12,
        bert_config: Optional[Mapping[str, Any]] = None,
        decoder_layers: int = 6,
        patch_size: int = 16,
    ):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BertConfig, BertLMHeadModel

        bert_config = dict(BERT_BASE_CONFIG if bert_config is None else bert_config)
        self.bert_config = bert_config
        self.visual_encoder = VisionTransformer(
            img_size=image_res, patch_size=patch_size, embed_dim=vision_width, depth=vision_depth,
            num_heads=vision_heads, mlp_ratio=4.0, qkv_bias=True, num_classes=0, global_pool="",
        )
        self.text_encoder = XBertEncoder(bert_config)
        hf = {k: v for k, v in bert_config.items() if k not in ("fusion_layer", "encoder_width", "architectures")}
        hf.update(num_hidden_layers=decoder_layers, is_decoder=True, add_cross_attention=True,
                  tie_word_embeddings=True)
        dec_cfg = BertConfig(**hf)
        dec_cfg._attn_implementation = "eager"
        self.text_decoder = BertLMHeadModel(dec_cfg)
        head = self.text_decoder.cls.predictions
        # ALBEF (transformers 4.8) ties these; make sure they are tied whatever transformers does.
        head.decoder.weight = self.text_decoder.bert.embeddings.word_embeddings.weight
        head.decoder.bias = head.bias
        self.pad_token_id = int(bert_config.get("pad_token_id", 0))

    # ---- loading ----------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """ALBEF checkpoints load as they are: momentum copies dropped, pos_embed resampled."""
        return super().load_state_dict(prepare_albef_state_dict(self, state_dict), strict=strict, assign=assign)

    # ---- the three stages -------------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """``image [B, 3, H, W]`` -> image tokens ``[B, 1 + P, D]`` (after the final LayerNorm)."""
        return self.visual_encoder.forward_features(image)

    def encode_question(self, image_embeds, question_ids, question_mask) -> torch.Tensor:
        """-> question states ``[B, Lq, hidden]`` (the text encoder, cross-attending to the image)."""
        image_atts = torch.ones(image_embeds.shape[:2], dtype=torch.long, device=image_embeds.device)
        return self.text_encoder(question_ids, question_mask, image_embeds, image_atts)

    def decode(self, answer_ids, answer_mask, question_states, question_mask) -> torch.Tensor:
        """Teacher-forced decoder logits ``[N, La, V]`` (row n: answer n given question n)."""
        return self.text_decoder(
            input_ids=answer_ids, attention_mask=answer_mask, encoder_hidden_states=question_states,
            encoder_attention_mask=question_mask, use_cache=False,
        ).logits

    # ---- scoring ----------------------------------------------------------------------------------
    def cand_loglik(self, question_states, question_mask, answer_ids, answer_mask, return_logits: bool = False):
        """Every question against every candidate: summed log p(a_1..a_m, [SEP] | a_0, q, image)
        under teacher forcing, ``[Bq, A]`` (pad tokens excluded). ``answer_ids [A, La]`` are
        ``[CLS] a [SEP]``, zero-padded. With ``return_logits`` also the logits ``[Bq, A, La, V]``."""
        Bq, A = question_states.shape[0], answer_ids.shape[0]
        qs = question_states.repeat_interleave(A, dim=0)
        qm = question_mask.repeat_interleave(A, dim=0)
        ids = answer_ids.repeat(Bq, 1)
        logits = self.decode(ids, answer_mask.repeat(Bq, 1), qs, qm)
        logp = logits[:, :-1].log_softmax(dim=-1)
        target = ids[:, 1:]
        tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1) * (target != self.pad_token_id)
        ll = tok.sum(dim=1).view(Bq, A)
        if return_logits:
            return ll, logits.view(Bq, A, *logits.shape[1:])
        return ll

    def first_token_prob(self, question_states, question_mask, answer_ids) -> torch.Tensor:
        """ALBEF's start pass: the decoder on ``answer_ids[0, 0]`` alone (the same start token for
        every question, the original's choice); -> softmax probability of each candidate's first
        answer token ``answer_ids[:, 1]``, ``[Bq, A]``."""
        Bq = question_states.shape[0]
        start = answer_ids[0, 0].repeat(Bq, 1)
        logits = self.decode(start, torch.ones_like(start), question_states, question_mask)[:, 0]
        return logits.softmax(dim=-1).index_select(1, answer_ids[:, 1])

    @staticmethod
    def rank_log_scores(first_token_prob: torch.Tensor, cand_loglik: torch.Tensor) -> torch.Tensor:
        """ALBEF's ``log_probs_sum``: log(first-token prob) + summed log-likelihood, which counts the
        first answer token twice."""
        return first_token_prob.log() + cand_loglik

    @staticmethod
    def rank_answer_from_scores(first_token_prob, log_scores, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """ALBEF's ``rank_answer`` from precomputed scores: keep the ``k`` candidates with the highest
        first-token probability, softmax their ``log_scores``, sort. -> ``(topk_ids, topk_probs)``."""
        _, keep = first_token_prob.topk(k, dim=1)
        probs = log_scores.gather(1, keep).softmax(dim=-1)
        probs, order = probs.topk(k, dim=1)
        return keep.gather(1, order), probs

    def rank_answer(self, question_states, question_mask, answer_ids, answer_mask, k: int):
        """``model_vqa.ALBEF.rank_answer``. -> ``(topk_ids [Bq, k], topk_probs [Bq, k])``."""
        ftp = self.first_token_prob(question_states, question_mask, answer_ids)
        ll = self.cand_loglik(question_states, question_mask, answer_ids, answer_mask)
        return self.rank_answer_from_scores(ftp, self.rank_log_scores(ftp, ll), k)

    def forward(self, image, question_ids, question_mask, answer_ids, answer_mask, k: int):
        """Inference as ``model(image, question, answer, train=False, k=k)``."""
        image_embeds = self.encode_image(image)
        states = self.encode_question(image_embeds, question_ids, question_mask)
        return self.rank_answer(states, question_mask, answer_ids, answer_mask, k)


# --------------------------------------------------------------------------- checkpoints


def prepare_albef_state_dict(
    model: ALBEF, state_dict: Mapping[str, torch.Tensor]
) -> "OrderedDict[str, torch.Tensor]":
    """An ALBEF VQA state_dict made loadable into ``model``: ``{"model": sd}`` unwrapped, momentum
    copies (``*_m.*``) and the decoder's ``position_ids`` dropped, ``pos_embed`` resampled to the
    model's resolution. Nothing else is changed (a missing or unexpected key still fails strict
    loading)."""
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    if any(k.startswith("text_encoder.bert.") for k in state_dict) and not any(
        k.startswith("text_decoder.") for k in state_dict
    ):
        state_dict = albef_pretrain_to_vqa(state_dict, model.text_encoder.config.fusion_layer)
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(MOMENTUM_PREFIXES) or key == _DECODER_POSITION_IDS:
            continue
        out[key] = value
    key = "visual_encoder.pos_embed"
    if key in out:
        ve = model.visual_encoder
        extra = ve.pos_embed.shape[-2] - ve.patch_embed.num_patches
        out[key] = resample_pos_embed(out[key], ve.patch_embed.num_patches, extra)
    return out


def albef_pretrain_to_vqa(
    state_dict: Mapping[str, torch.Tensor], fusion_layer: int = 6
) -> "OrderedDict[str, torch.Tensor]":
    """A pretraining checkpoint (``ALBEF.pth``: ``text_encoder`` is a ``BertForMaskedLM``) turned
    into VQA weights as ALBEF's VQA.py does: ``text_encoder.bert.*`` -> ``text_encoder.*``; the
    decoder starts as the multimodal part of the encoder: embeddings and MLM head copied, encoder
    layer ``fusion_layer + i`` -> decoder layer ``i`` (VQA.py hard-codes 6, bert-base's
    ``fusion_layer``). Keys of the pretraining heads (``vision_proj``, ``itm_head``, queues, ...)
    and momentum copies are dropped."""
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith("visual_encoder."):
            out[key] = value
            continue
        if not key.startswith("text_encoder."):
            continue
        rest = key[len("text_encoder."):]
        if rest.startswith("bert."):
            out["text_encoder." + rest[len("bert."):]] = value
            parts = rest.split(".")  # bert.encoder.layer.N.<...>
            if parts[1:3] == ["encoder", "layer"]:
                n = int(parts[3])
                if n < fusion_layer:
                    continue
                parts[3] = str(n - fusion_layer)
            out["text_decoder." + ".".join(parts)] = value
        else:  # the MLM head: cls.predictions.*
            out["text_decoder." + rest] = value
    return out


def read_albef_checkpoint(path: Union[str, Path], trust_checkpoint: bool = False) -> Mapping[str, Any]:
    """The raw contents of a checkpoint file: ``.safetensors``, or a torch file read with
    ``weights_only=True`` unless ``trust_checkpoint`` (see :func:`load_albef_checkpoint`).
    A missing path is a ``FileNotFoundError`` and a directory an ``IsADirectoryError``, both naming it,
    before any loader runs (torch's unpickling error would otherwise be the first thing reported)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a directory; the ALBEF teacher expects a checkpoint "
                                "file (vqa.pth, ALBEF.pth or .safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if trust_checkpoint:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends, depending on the object
        raise ValueError(f"{path}: the checkpoint pickles objects other than tensors ({type(e).__name__}); "
                         "if you trust its source, load it with trust_checkpoint=True (--trust-checkpoint)") from e


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint that does not fit the model (other sizes, missing or extra keys): a ValueError of the
    input, and a RuntimeError as ``nn.Module.load_state_dict`` raises, for callers that catch that."""


def _shape(t) -> List[int]:
    return list(t.shape)


def albef_checkpoint_mismatch(model: ALBEF, state_dict: Mapping[str, Any], strict: bool = True,
                              examples: int = 2) -> Optional[str]:
    """Why ``state_dict`` (as read from a checkpoint) cannot load into ``model``, in one line: how many
    tensors differ in shape (and, with ``strict``, how many keys are missing or unexpected), with
    ``examples`` keys of each and both shapes; ``None`` when it fits. ``model`` may live on the meta
    device: only its shapes are read."""
    sd = prepare_albef_state_dict(model, state_dict)
    own = model.state_dict()
    shapes = [k for k in own if k in sd and hasattr(sd[k], "shape") and _shape(sd[k]) != _shape(own[k])]
    raw = state_dict.get("model", state_dict) if isinstance(state_dict.get("model"), Mapping) else state_dict
    parts = []
    if shapes:
        # the file's own shape where the key is the file's (pos_embed is shown before its resampling)
        shown = "; ".join(f"{k}: checkpoint {_shape(raw[k] if k in raw else sd[k])}, model {_shape(own[k])}"
                          for k in shapes[:examples])
        parts.append(f"{len(shapes)} tensor(s) differ in shape, e.g. {shown}")
    if strict:
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from the checkpoint, e.g. {', '.join(missing[:examples])}")
        if unexpected:
            parts.append(f"{len(unexpected)} checkpoint key(s) the model does not have, e.g. "
                         f"{', '.join(unexpected[:examples])}")
    return "; ".join(parts) or None


def load_albef_checkpoint(model: ALBEF, state_dict_or_path: Union[str, Path, Mapping[str, Any]],
                          strict: bool = True, trust_checkpoint: bool = False):
    """Load ``vqa.pth`` (a path: ``.safetensors`` or a torch file with the weights under
    ``"model"``) or a state_dict into ``model``; see :func:`prepare_albef_state_dict`.

    Torch files are read with ``weights_only=True`` (no code runs while unpickling). A checkpoint that
    also pickles other objects (ALBEF's training script saves its config and optimizer next to the
    weights) then fails with a message; pass ``trust_checkpoint=True`` for a file from a source you
    trust to unpickle it fully. A checkpoint of another model size is a :class:`CheckpointMismatchError`
    of one line (:func:`albef_checkpoint_mismatch`) instead of torch's list of every differing tensor."""
    sd = state_dict_or_path
    where = "state_dict"
    if isinstance(sd, (str, Path)):
        where = f"checkpoint {str(sd)!r}"
        sd = read_albef_checkpoint(sd, trust_checkpoint)
    problem = albef_checkpoint_mismatch(model, sd, strict=strict)
    if problem:
        raise CheckpointMismatchError(f"{where} does not fit the configured ALBEF: {problem}")
    return model.load_state_dict(sd, strict=strict)


# --------------------------------------------------------------------------- fixture


def fixture_model(config: Dict[str, Any]):
    """``(model, run)`` for ``fixtures/original/albef`` (see its config.json)."""
    over = config["runtime_overrides"]
    bert = dict(over["bert_config_json"])
    sizes = config["sizes"]
    # "... embed_dim/depth/num_heads = 32/2/2 replace the hard-coded 768/12/12 ..."
    m = re.search(r"embed_dim/depth/num_heads\s*=\s*(\d+)/(\d+)/(\d+)", over.get("VisionTransformer", ""))
    width, depth, heads = (int(g) for g in m.groups()) if m else (768, 12, 12)
    model = ALBEF(
        image_res=int(over["albef_config"]["image_res"]),
        vision_width=width,
        vision_depth=depth,
        vision_heads=heads,
        bert_config=bert,
        decoder_layers=int(sizes["text_decoder_layers"]),
    )

    def run(model: ALBEF, inputs):
        qi, qm = inputs["question_input_ids"], inputs["question_attention_mask"]
        ai, am = inputs["answer_input_ids"], inputs["answer_attention_mask"]
        image_embeds = model.encode_image(inputs["image"])
        states = model.encode_question(image_embeds, qi, qm)
        ftp = model.first_token_prob(states, qm, ai)
        ll, logits = model.cand_loglik(states, qm, ai, am, return_logits=True)
        scores = model.rank_log_scores(ftp, ll)
        ids, probs = model.rank_answer_from_scores(ftp, scores, ai.shape[0])
        ids3, probs3 = model.rank_answer_from_scores(ftp, scores, 3)
        return {
            "image_embeds": image_embeds,
            "question_states": states,
            "first_token_prob": ftp,
            "cand_loglik": ll,
            "rank_log_scores": scores,
            "rank_topk_ids": ids,
            "rank_topk_probs": probs,
            "rank_k_small_topk_ids": ids3,
            "rank_k_small_topk_probs": probs3,
            "decoder_logits": logits,
        }

    return model, run


# --------------------------------------------------------------------------- the teacher

@dataclass
class ALBEFImageState:
    """What :meth:`ALBEFTeacher.encode_images` keeps per frame for every question: the image tokens
    ``[F, 1 + P, D]`` and the keys/values of the fusion layers' cross-attention over them."""

    image_embeds: torch.Tensor
    kv: list

    def __len__(self) -> int:
        return self.image_embeds.shape[0]


SCORINGS = ("sum", "mean", "albef_rank")


class ALBEFTeacher(LikelihoodTeacher):
    """:class:`~sparc.teachers.base.ImageQATeacher` over an :class:`ALBEF` VQA model.

    ``encode_images(frames)`` runs the vision transformer once per frame and caches the fusion layers'
    cross-attention keys/values (:class:`ALBEFImageState`); ``score(image_state, question(s),
    candidates)`` scores every question against every frame and every candidate in batched passes
    (:mod:`sparc.teachers.albef_batched`) and returns, per frame, the softmax over the candidates of:

    * ``scoring="sum"`` (default): the summed token log-likelihood under the decoder (answer tokens
      plus ``[SEP]``; :meth:`ALBEF.cand_loglik`'s number);
    * ``"mean"``: the same divided by the number of scored tokens (``length_normalize=True``);
    * ``"albef_rank"``: ALBEF's ``rank_answer`` arithmetic - the first answer token counted twice,
      and only the ``rank_k`` candidates with the highest first-token probability kept (the others
      get probability 0; ``rank_k=None`` keeps all).

    Questions and candidates are strings (needs ``tokenizer``, a BERT tokenizer: questions become
    ``[CLS] q`` without ``[SEP]`` as in ALBEF, candidates ``[CLS] a [SEP]``) or token ids already in
    that form: ``question`` ``[Lq]`` (or ``(ids, mask)``), ``candidates`` ``[C, La]`` zero-padded
    (or ``(ids, mask)``). A list of Q questions with Q candidate lists gives ``[Q, F, C]``; pass one
    shared candidate list (open-ended answer sets) as ``shared_candidates=``.

    ``max_rows`` bounds the decoder's batch (questions x frames x candidates x answer tokens) and
    ``frame_chunk`` the frames per vision pass; both change memory, not results.
    """

    tokenizer_hint = "ALBEFTeacher(model, tokenizer=BertTokenizer...)"

    def __init__(self, model: ALBEF, tokenizer: Any = None, length_normalize: bool = False,
                 frame_chunk: int = 64, device: Union[str, torch.device, None] = None, scoring: Optional[str] = None,
                 rank_k: Optional[int] = None, max_rows: int = 65536):
        super().__init__(model, tokenizer, length_normalize, frame_chunk, device)
        scoring = scoring or ("mean" if length_normalize else "sum")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.scoring, self.rank_k, self.max_rows = scoring, rank_k, max_rows
        self.length_normalize = scoring == "mean"
        self.image_res = model.visual_encoder.patch_embed.img_size[0]

    # ---- images: preprocess (bicubic, CLIP mean/std) from LikelihoodTeacher ----------------------
    @torch.no_grad()
    def encode_images(self, frames: torch.Tensor) -> ALBEFImageState:
        """``frames [F, 3, H, W]`` (or uint8 ``[F, H, W, 3]``) -> image tokens and fusion keys/values,
        reusable by every question about these frames."""
        from sparc.teachers.albef_batched import fusion_kv

        x = self.preprocess(frames).to(self.device)
        dtype = next(self.model.visual_encoder.parameters()).dtype
        embeds = torch.cat([self.model.encode_image(c.to(dtype)) for c in x.split(self.frame_chunk)], dim=0)
        return ALBEFImageState(embeds, fusion_kv(self.model, embeds))

    # ---- text -------------------------------------------------------------------------------------
    def _question(self, question: Union[str, Tokens]) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(question, str):
            tok = self._need_tokenizer()
            limit = self.model.text_encoder.config.max_position_embeddings
            ids = [tok.cls_token_id] + tok.encode(question, add_special_tokens=False)[: limit - 1]
            ids = torch.tensor(ids)
            return ids[None], torch.ones_like(ids)[None]
        ids, mask = ids_and_mask(question, self.model.pad_token_id)
        return ids.reshape(1, -1), mask.reshape(1, -1)

    def _candidates(self, candidates) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(candidates, (list, tuple)) and candidates and isinstance(candidates[0], str):
            tok = self._need_tokenizer()
            return pad_sequences([[tok.cls_token_id] + tok.encode(c, add_special_tokens=False) + [tok.sep_token_id]
                                  for c in candidates], self.model.pad_token_id)
        return ids_and_mask(candidates, self.model.pad_token_id)

    @staticmethod
    def _stack(pairs) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[(ids [1 or C, L], mask)]`` -> ``[N, C, Lmax]`` right-padded with zeros."""
        L = max(ids.shape[-1] for ids, _ in pairs)
        ids = torch.stack([F.pad(i, (0, L - i.shape[-1])) for i, _ in pairs])
        mask = torch.stack([F.pad(m, (0, L - m.shape[-1])) for _, m in pairs])
        return ids, mask

    # ---- scores -----------------------------------------------------------------------------------
    @torch.no_grad()
    def log_scores_many(self, image_state: ALBEFImageState, questions: list, candidates=None,
                        shared_candidates=None) -> torch.Tensor:
        """Scores before the softmax, ``[Q, F, C]``: every question against every frame and every
        candidate (``candidates`` one list per question, or ``shared_candidates`` one list for all)."""
        from sparc.teachers.albef_batched import answer_loglik

        q_ids, q_mask = self._stack([self._question(q) for q in questions])
        q_ids, q_mask = q_ids[:, 0].to(self.device), q_mask[:, 0].to(self.device)
        if shared_candidates is not None:
            a_ids, a_mask = (t[None] for t in self._candidates(shared_candidates))
        else:
            if len(candidates) != len(questions):
                raise ValueError(f"{len(questions)} questions but {len(candidates)} candidate lists")
            sets = [self._candidates(c) for c in candidates]
            if len({ids.shape[0] for ids, _ in sets}) > 1:  # different candidate counts: one at a time
                return torch.stack([self.log_scores_many(image_state, [q], shared_candidates=c)[0]
                                    for q, c in zip(questions, candidates)])
            a_ids, a_mask = self._stack(sets)
        a_ids, a_mask = a_ids.to(self.device), a_mask.to(self.device)
        Q, Fn = q_ids.shape[0], len(image_state)
        C, La = a_ids.shape[1:]
        if self.scoring == "albef_rank" and self.rank_k is not None and self.rank_k < C:
            return self._ranked(image_state, q_ids, q_mask, a_ids, a_mask)
        step = max(1, self.max_rows // max(1, Fn * C * La))   # questions per decoder pass
        parts, firsts = [], []
        for s in range(0, Q, step):
            sl = slice(s, s + step)
            a_sl = slice(None) if a_ids.shape[0] == 1 else sl
            ll, first = answer_loglik(self.model, image_state.kv, q_ids[sl], q_mask[sl], a_ids[a_sl], a_mask[a_sl],
                                      return_first=True)
            parts.append(ll)
            firsts.append(first)
        ll, first = torch.cat(parts), torch.cat(firsts)
        if self.scoring == "mean":
            n_tok = (a_ids[:, :, 1:] != self.model.pad_token_id).sum(-1).clamp(min=1)   # [Qc, C]
            ll = ll / n_tok[:, None, :]
        elif self.scoring == "albef_rank":
            ll = ALBEF.rank_log_scores(first.exp(), ll)
        return ll

    def _ranked(self, image_state, q_ids, q_mask, a_ids, a_mask) -> torch.Tensor:
        """``albef_rank`` with ``rank_k``: only each (question, frame)'s top-k first tokens are decoded;
        the other candidates score -inf (probability 0), as in ALBEF's ``rank_answer``."""
        from sparc.teachers.albef_batched import encode_questions, topk_answer_loglik

        Q, Fn, (C, La) = q_ids.shape[0], len(image_state), a_ids.shape[1:]
        out = torch.full((Q, Fn, C), float("-inf"), device=self.device)
        step = max(1, self.max_rows // max(1, Fn * (self.rank_k + 1) * La))
        for s in range(0, Q, step):
            sl = slice(s, s + step)
            a_sl = slice(None) if a_ids.shape[0] == 1 else sl
            states = encode_questions(self.model, image_state.kv, q_ids[sl], q_mask[sl])
            ll, first, keep = topk_answer_loglik(self.model, states, q_mask[sl], a_ids[a_sl], a_mask[a_sl], self.rank_k)
            out[sl] = out[sl].scatter(-1, keep, ALBEF.rank_log_scores(first.exp(), ll))
        return out

    def log_scores(self, image_state: ALBEFImageState, question, candidates) -> torch.Tensor:
        """Per-frame candidate scores ``[F, C]`` of one question."""
        return self.log_scores_many(image_state, [question], shared_candidates=candidates)[0]

    def score(self, image_state: ALBEFImageState, questions, candidates=None, shared_candidates=None) -> torch.Tensor:
        """``probs [F, C]`` for one question, ``[Q, F, C]`` for a list: softmax over the candidates."""
        if not isinstance(questions, list):
            return self.log_scores(image_state, questions, candidates).softmax(dim=-1)
        return self.log_scores_many(image_state, questions, candidates, shared_candidates).softmax(dim=-1)
