"""ALBEF's candidate log-likelihoods for every (question, frame, candidate) of a video in batched passes,
reusing everything that does not change between them.

What the plain path (:meth:`ALBEF.encode_question` + :meth:`ALBEF.cand_loglik`, one question at a time)
recomputes, and where this module computes it once instead:

* the image side of the text encoder's cross-attention: keys and values of the fusion layers depend on
  the frame alone -> :func:`fusion_kv`, once per frame, shared by every question;
* the text-only layers below ``fusion_layer`` depend on the question alone -> once per question, not
  per (question, frame);
* a fusion layer's cross-attention takes all questions' tokens as rows against one frame's keys
  (``[F, H, Q * Lq, P]``), no copy of the keys per question;
* the decoder's cross-attention keys/values over the question states -> once per (question, frame),
  shared by its candidates; the decoder's first self-attention block sees only candidate tokens ->
  once per candidate, shared by every frame;
* the vocabulary projection (the decoder's widest matrix) runs only on rows that predict a real answer
  token, and once per distinct answer prefix of a question: every candidate starts with ``[CLS]``, so
  the first answer token's distribution is computed once per (question, frame), not once per candidate.

The arithmetic is the plain path's (the same sums of log-softmaxed token logits); tests check them equal.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch

__all__ = ["fusion_kv", "encode_questions", "decoder_loglik", "answer_loglik", "prefix_rows"]

KV = List[Tuple[torch.Tensor, torch.Tensor]]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[..., L, H * d]`` -> ``[..., H, L, d]``."""
    *lead, L, width = x.shape
    return x.view(*lead, L, heads, width // heads).transpose(-3, -2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``[..., H, L, d]`` -> ``[..., L, H * d]``."""
    *lead, H, L, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, L, H * d)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1) @ v


# --------------------------------------------------------------------------- text encoder


def fusion_kv(model, image_embeds: torch.Tensor) -> KV:
    """Keys and values of every fusion layer's cross-attention over ``image_embeds [F, P, D]``:
    a list (one per fusion layer) of ``(K, V)``, each ``[F, H, P, d]``."""
    enc = model.text_encoder
    heads = enc.config.num_attention_heads
    out = []
    for layer in enc.encoder.layer[enc.config.fusion_layer:]:
        attn = layer.crossattention.self
        out.append((_heads(attn.key(image_embeds), heads), _heads(attn.value(image_embeds), heads)))
    return out


def encode_questions(model, kv: KV, q_ids: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
    """The text encoder for every question against every frame: ``q_ids, q_mask [Q, Lq]``, ``kv`` from
    :func:`fusion_kv` over F frames -> question states ``[Q, F, Lq, hidden]``."""
    enc = model.text_encoder
    cfg = enc.config
    heads = cfg.num_attention_heads
    x = enc.embeddings(q_ids)
    # xbert's self-attention mask: (1 - m) * -10000.
    self_mask = (1.0 - q_mask[:, None, None, :].to(x.dtype)) * -10000.0
    for layer in enc.encoder.layer[: cfg.fusion_layer]:   # text only: once per question
        x = layer(x, self_mask)
    Q, Lq, D = x.shape
    Fn = kv[0][0].shape[0] if kv else 1
    x = x.unsqueeze(1).expand(Q, Fn, Lq, D).reshape(Q * Fn, Lq, D)
    mask = self_mask.repeat_interleave(Fn, dim=0)
    for layer, (k, v) in zip(enc.encoder.layer[cfg.fusion_layer:], kv):
        x = layer.attention(x, mask)
        cross = layer.crossattention
        # Rows are (question, token) pairs of one frame, so a frame's keys serve every question.
        q = _heads(cross.self.query(x).view(Q, Fn, Lq, D).transpose(0, 1).reshape(Fn, Q * Lq, D), heads)
        ctx = _merge(_attend(q, k, v))                                  # [F, Q * Lq, D]
        ctx = ctx.view(Fn, Q, Lq, D).transpose(0, 1).reshape(Q * Fn, Lq, D)
        x = cross.output(ctx, x)
        x = layer.output(layer.intermediate(x), x)
    return x.view(Q, Fn, Lq, D)


# --------------------------------------------------------------------------- decoder


def prefix_rows(ids: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distinct answer prefixes of one candidate set. ``ids [C, La]``; ``valid [C, La - 1]`` marks the
    positions t whose next token ``ids[:, t + 1]`` is scored. -> ``(rows, which)``: ``rows [U, 2]`` the
    (candidate, position) that represents each distinct prefix ``ids[c, :t + 1]`` among valid
    positions, ``which [C, La - 1]`` the index into ``rows`` of every position (-1 where not valid)."""
    C, L = ids.shape
    which = torch.full((C, L - 1), -1, dtype=torch.long)
    rows: List[Tuple[int, int]] = []
    seen = {}
    ids_l, valid_l = ids.tolist(), valid.tolist()
    for c in range(C):
        for t in range(L - 1):
            if not valid_l[c][t]:
                continue
            key = tuple(ids_l[c][: t + 1])
            if key not in seen:
                seen[key] = len(rows)
                rows.append((c, t))
            which[c, t] = seen[key]
    return torch.tensor(rows, dtype=torch.long).view(-1, 2), which


def _decoder_layer(layer, x, causal, cross_kv, cross_mask, heads, shape):
    """One transformers ``BertLayer`` of the decoder (eval). ``x [Q * F * C, La, D]``; cross-attention
    keys ``[Q * F, H, Lq, d]`` shared by the C candidates; ``causal`` None when ``x`` already went
    through this layer's self-attention."""
    Q, Fn, C, La, D = shape
    if causal is not None:
        x = _self_attention(layer, x, causal, heads)
    k, v = cross_kv
    cross = layer.crossattention
    q = _heads(cross.self.query(x).view(Q * Fn, C * La, D), heads)     # candidates' tokens as rows
    ctx = _merge(_attend(q, k, v, cross_mask)).view(Q * Fn * C, La, D)
    x = cross.output.LayerNorm(cross.output.dense(ctx) + x)
    h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
    return layer.output.LayerNorm(layer.output.dense(h) + x)


def _self_attention(layer, x, causal, heads):
    att = layer.attention
    q, k, v = (_heads(f(x), heads) for f in (att.self.query, att.self.key, att.self.value))
    ctx = _merge(_attend(q, k, v, causal))
    return att.output.LayerNorm(att.output.dense(ctx) + x)


def decoder_loglik(model, states: torch.Tensor, q_mask: torch.Tensor, a_ids: torch.Tensor,
                   a_mask: torch.Tensor, return_first: bool = False):
    """Summed log-likelihood of every candidate under the answer decoder, teacher-forced:
    ``states [Q, F, Lq, D]`` (from :func:`encode_questions`), ``q_mask [Q, Lq]``, candidates
    ``a_ids, a_mask [Qc, C, La]`` (``[CLS] a [SEP]``, zero-padded) with ``Qc`` = Q (each question its
    own candidates) or 1 (one shared answer set) -> ``[Q, F, C]``; with ``return_first`` also the
    first answer token's log-probability ``[Q, F, C]`` (what ALBEF's ``rank_answer`` adds again)."""
    dec = model.text_decoder
    bert, head = dec.bert, dec.cls.predictions
    cfg = dec.config
    heads = cfg.num_attention_heads
    Q, Fn, Lq, D = states.shape
    Qc, C, La = a_ids.shape
    layers = bert.encoder.layer
    causal = torch.full((La, La), float("-inf"), device=states.device).triu(1).to(states.dtype)

    # The first layer's self-attention sees only the candidates' tokens: once per candidate set.
    x = bert.embeddings(input_ids=a_ids.view(Qc * C, La))
    x = _self_attention(layers[0], x, causal, heads).view(Qc, 1, C, La, D)
    x = x.expand(Q, Fn, C, La, D).reshape(Q * Fn * C, La, D)

    cross_mask = (1.0 - q_mask.to(states.dtype)) * torch.finfo(states.dtype).min     # [Q, Lq]
    cross_mask = cross_mask[:, None, None, None, :].expand(Q, Fn, 1, 1, Lq).reshape(Q * Fn, 1, 1, Lq)
    flat_states = states.reshape(Q * Fn, Lq, D)
    for i, layer in enumerate(layers):
        attn = layer.crossattention.self
        kv = (_heads(attn.key(flat_states), heads), _heads(attn.value(flat_states), heads))
        x = _decoder_layer(layer, x, None if i == 0 else causal, kv, cross_mask, heads, (Q, Fn, C, La, D))
    x = x.view(Q, Fn, C, La, D)

    target = a_ids[:, :, 1:]                                       # [Qc, C, La - 1]
    valid = (target != model.pad_token_id) & (a_mask[:, :, 1:] > 0)
    weight, bias = head.decoder.weight, head.bias
    out = torch.zeros(Q, Fn, C, dtype=torch.float32, device=states.device)
    first = torch.zeros_like(out)
    for g in range(Qc):
        rows, which = prefix_rows(a_ids[g].cpu(), valid[g].cpu())
        rows, which = rows.to(states.device), which.to(states.device)
        qs = slice(None) if Qc == 1 else slice(g, g + 1)
        h = head.transform(x[qs][:, :, rows[:, 0], rows[:, 1]])     # [q, F, U, D]: one row per prefix
        lse = torch.logsumexp((h @ weight.t() + bias).float(), dim=-1)  # [q, F, U]
        pos = which.clamp(min=0)
        tok = target[g]                                               # [C, La - 1]
        # The scored token's logit, from the row of its prefix: h[u] . W[token] + b[token].
        h_pos = h[:, :, pos]                                          # [q, F, C, La - 1, D]
        logit = (h_pos * weight[tok]).sum(-1) + bias[tok]
        ll = (logit.float() - lse[:, :, pos]) * valid[g]
        out[qs] = ll.sum(-1)
        first[qs] = ll[..., 0]
    return (out, first) if return_first else out


def answer_loglik(model, kv: KV, q_ids: torch.Tensor, q_mask: torch.Tensor, a_ids: torch.Tensor,
                  a_mask: torch.Tensor, return_first: bool = False):
    """Every question against every frame and every candidate: ``[Q, F, C]`` summed log-likelihoods.
    ``kv`` from :func:`fusion_kv`; ``q_ids, q_mask [Q, Lq]``; ``a_ids, a_mask [Qc, C, La]``."""
    states = encode_questions(model, kv, q_ids, q_mask)
    return decoder_loglik(model, states, q_mask, a_ids, a_mask, return_first)

