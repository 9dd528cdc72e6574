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
* the decoder's cross-attention keys/values over the question states -> once per (question, frame);
* the decoder runs over each candidate set's prefix tree (:func:`answer_trees`): one position per
  distinct answer prefix whose next token is scored, attending along its own prefix. Every candidate
  starts with ``[CLS]``, so that position (and the first answer token's distribution) is computed once
  per (question, frame), not once per candidate; padding and the last position (whose output is never
  scored) are not computed at all. Its first self-attention block sees only candidate tokens -> once
  per candidate set, shared by every frame;
* the vocabulary projection (the decoder's widest matrix) runs once per tree node. It still covers the
  whole vocabulary: a token's log-probability needs the softmax normaliser over all of it.

The arithmetic is the plain path's (the same sums of log-softmaxed token logits); tests check them equal.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["fusion_kv", "encode_questions", "decoder_loglik", "answer_loglik", "prefix_rows", "answer_trees", "topk_answer_loglik"]

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


def answer_trees(a_ids: torch.Tensor, valid: torch.Tensor):
    """The candidates of each set as a prefix tree: one node per distinct prefix whose next token is
    scored (:func:`prefix_rows`). ``a_ids [Qc, C, La]``, ``valid [Qc, C, La - 1]`` -> ``tokens,
    positions [Qc, U]`` (each node's last token and its position), ``attend [Qc, U, U]`` additive
    (0 where the key node is an ancestor of the query node or itself, -inf elsewhere: causal attention
    along the node's own prefix), ``which [Qc, C, La - 1]`` (the node of every scored position, 0
    where none) and ``real [Qc, U]`` (False on padding: sets with fewer nodes are padded with nodes
    that attend only to themselves)."""
    Qc, C, La = a_ids.shape
    trees = [prefix_rows(a_ids[g].cpu(), valid[g].cpu()) for g in range(Qc)]
    U = max(1, max(rows.shape[0] for rows, _ in trees))
    tokens = torch.zeros(Qc, U, dtype=torch.long)
    positions = torch.zeros(Qc, U, dtype=torch.long)
    allowed = torch.eye(U, dtype=torch.bool).repeat(Qc, 1, 1)
    which = torch.zeros(Qc, C, La - 1, dtype=torch.long)
    real = torch.zeros(Qc, U, dtype=torch.bool)
    for g, (rows, w) in enumerate(trees):
        real[g, : rows.shape[0]] = True
        ids = a_ids[g].cpu()
        for u, (c, t) in enumerate(rows.tolist()):
            tokens[g, u], positions[g, u] = ids[c, t], t
            allowed[g, u, w[c, : t + 1]] = True      # the nodes of ids[c, :1], ..., ids[c, :t + 1]
        which[g] = w.clamp(min=0)
    attend = torch.zeros(Qc, U, U).masked_fill(~allowed, float("-inf"))
    dev = a_ids.device
    return tokens.to(dev), positions.to(dev), attend.to(dev), which.to(dev), real.to(dev)


def _self_attention(layer, x, mask, heads):
    att = layer.attention
    q, k, v = (_heads(f(x), heads) for f in (att.self.query, att.self.key, att.self.value))
    ctx = _merge(_attend(q, k, v, mask))
    return att.output.LayerNorm(att.output.dense(ctx) + x)


def _cross_and_feed_forward(layer, x, k, v, mask, heads):
    """The rest of a transformers ``BertLayer`` (eval) after its self-attention: cross-attention to the
    question states (keys/values given), then the feed-forward block."""
    cross = layer.crossattention
    ctx = _merge(_attend(_heads(cross.self.query(x), heads), k, v, mask))
    x = cross.output.LayerNorm(cross.output.dense(ctx) + x)
    h = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
    return layer.output.LayerNorm(layer.output.dense(h) + x)


def decoder_loglik(model, states: torch.Tensor, q_mask: torch.Tensor, a_ids: torch.Tensor,
                   a_mask: torch.Tensor, return_first: bool = False, max_logits: int = 1 << 22,
                   tree_candidates: int = 64):
    """Summed log-likelihood of every candidate under the answer decoder, teacher-forced:
    ``states [Q, F, Lq, D]`` (from :func:`encode_questions`), ``q_mask [Q, Lq]``, candidates
    ``a_ids, a_mask [Qc, C, La]`` (``[CLS] a [SEP]``, zero-padded) with ``Qc`` = Q (each question its
    own candidates) or 1 (one shared answer set) -> ``[Q, F, C]``; with ``return_first`` also the
    first answer token's log-probability ``[Q, F, C]`` (what ALBEF's ``rank_answer`` adds again).

    The decoder runs over each candidate set's prefix tree (:func:`answer_trees`), not over padded
    candidates: a position is computed once however many candidates share its prefix (every candidate
    shares ``[CLS]``), and padding and the never-scored last position are not computed at all.
    ``max_logits`` bounds the vocabulary logits held at once (memory only). Tree attention is dense
    over a tree's nodes, so large answer sets (open-ended datasets) are cut into trees of at most
    ``tree_candidates`` candidates."""
    if a_ids.shape[1] > tree_candidates:
        parts = [decoder_loglik(model, states, q_mask, a_ids[:, s:s + tree_candidates], a_mask[:, s:s + tree_candidates],
                                True, max_logits, tree_candidates) for s in range(0, a_ids.shape[1], tree_candidates)]
        out, first = torch.cat([p[0] for p in parts], dim=-1), torch.cat([p[1] for p in parts], dim=-1)
        return (out, first) if return_first else out
    dec = model.text_decoder
    bert, head = dec.bert, dec.cls.predictions
    heads = dec.config.num_attention_heads
    Q, Fn, Lq, D = states.shape
    Qc, C, La = a_ids.shape
    target = a_ids[:, :, 1:]                                          # [Qc, C, La - 1]
    valid = (target != model.pad_token_id) & (a_mask[:, :, 1:] > 0)
    tokens, positions, attend, which, real = answer_trees(a_ids, valid)
    U = tokens.shape[1]

    # Layer 0's self-attention sees only the candidates' tokens: once per candidate set.
    x = bert.embeddings(input_ids=tokens, position_ids=positions, token_type_ids=torch.zeros_like(tokens))
    x = _self_attention(bert.encoder.layer[0], x, attend[:, None].to(x.dtype), heads)      # [Qc, U, D]
    x = x[:, None].expand(Qc, Fn, U, D).expand(Q, Fn, U, D).reshape(Q * Fn, U, D)
    self_mask = attend[:, None, None].to(x.dtype).expand(Qc, Fn, 1, U, U).expand(Q, Fn, 1, U, U).reshape(Q * Fn, 1, U, U)
    cross_mask = (1.0 - q_mask.to(states.dtype)) * torch.finfo(states.dtype).min     # [Q, Lq]
    cross_mask = cross_mask[:, None, None, None, :].expand(Q, Fn, 1, 1, Lq).reshape(Q * Fn, 1, 1, Lq)
    flat_states = states.reshape(Q * Fn, Lq, D)
    for i, layer in enumerate(bert.encoder.layer):
        if i > 0:
            x = _self_attention(layer, x, self_mask, heads)
        attn = layer.crossattention.self   # keys/values over the question states: once per (question, frame)
        k, v = _heads(attn.key(flat_states), heads), _heads(attn.value(flat_states), heads)
        x = _cross_and_feed_forward(layer, x, k, v, cross_mask, heads)
    h = head.transform(x).view(Q, Fn, U, D)

    # log p(token | prefix) = logit[node, token] - logsumexp over the whole vocabulary, per node.
    weight, bias = head.decoder.weight, head.bias
    # Only real nodes: the trees of a video's questions differ in size and are padded to the largest.
    real = real[:, None].expand(Qc, Fn, U).expand(Q, Fn, U).reshape(-1)
    rows = h.reshape(-1, D)[real]
    lse_real = torch.empty(rows.shape[0], dtype=torch.float32, device=states.device)
    step = max(1, max_logits // weight.shape[0])    # rows per vocabulary pass: cache-sized, memory-bounded
    for r in range(0, rows.shape[0], step):
        lse_real[r:r + step] = torch.logsumexp(F.linear(rows[r:r + step], weight, bias).float(), dim=-1)
    lse = torch.zeros(Q * Fn * U, dtype=torch.float32, device=states.device)
    lse[real] = lse_real
    lse = lse.view(Q, Fn, U)
    node = which.reshape(Qc, 1, -1).expand(Q, Fn, -1)                 # [Q, F, C * (La - 1)]
    tok = target.reshape(Qc, -1)
    # The scored token's logit from its node's row: h[node] . W[token] + b[token].
    h_sel = h.gather(2, node[..., None].expand(-1, -1, -1, D))
    picked = (h_sel * weight[tok][:, None]).sum(-1).float() + bias[tok][:, None].float()
    ll = picked - lse.gather(2, node)
    ll = ll.view(Q, Fn, C, La - 1) * valid.reshape(Qc, 1, C, La - 1)
    out = ll.sum(-1)
    return (out, ll[..., 0]) if return_first else out


def topk_answer_loglik(model, states: torch.Tensor, q_mask: torch.Tensor, a_ids: torch.Tensor,
                       a_mask: torch.Tensor, k: int):
    """ALBEF's ``rank_answer`` search, batched: the first answer token's distribution once per
    (question, frame), then only the ``k`` candidates whose first token is most likely are decoded
    (for large open-ended answer sets, most of the decoder's work is skipped). Arguments as
    :func:`decoder_loglik` -> ``(loglik, first, keep)``, each ``[Q, F, k]``: the summed and the
    first-token log-likelihoods of the kept candidates and their indices into the C candidates."""
    Q, Fn, Lq, D = states.shape
    Qc, C, La = a_ids.shape
    # [CLS] + first token alone: a one-node tree per set, its only scored token the first one.
    _, first_all = decoder_loglik(model, states, q_mask, a_ids[:, :, :2], a_mask[:, :, :2], return_first=True,
                                  tree_candidates=max(C, 1))
    keep = first_all.topk(k, dim=-1).indices                                        # [Q, F, k]
    pick = keep[..., None].expand(Q, Fn, k, La)
    ids = a_ids.expand(Q, C, La)[:, None].expand(Q, Fn, C, La).gather(2, pick)
    mask = a_mask.expand(Q, C, La)[:, None].expand(Q, Fn, C, La).gather(2, pick)
    # Each (question, frame) now has its own candidate set: decode them as Q * F one-frame questions.
    ll, first = decoder_loglik(model, states.reshape(Q * Fn, 1, Lq, D), q_mask.repeat_interleave(Fn, dim=0),
                               ids.reshape(Q * Fn, k, La), mask.reshape(Q * Fn, k, La), return_first=True)
    return ll.view(Q, Fn, k), first.view(Q, Fn, k), keep


def answer_loglik(model, kv: KV, q_ids: torch.Tensor, q_mask: torch.Tensor, a_ids: torch.Tensor,
                  a_mask: torch.Tensor, return_first: bool = False):
    """Every question against every frame and every candidate: ``[Q, F, C]`` summed log-likelihoods.
    ``kv`` from :func:`fusion_kv`; ``q_ids, q_mask [Q, Lq]``; ``a_ids, a_mask [Qc, C, La]``."""
    states = encode_questions(model, kv, q_ids, q_mask)
    return decoder_loglik(model, states, q_mask, a_ids, a_mask, return_first)

