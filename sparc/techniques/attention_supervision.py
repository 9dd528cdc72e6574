"""Attention supervision (TVQA+ / STAGE 4.3, "Spatial Supervision"): a concept word of the ground-truth
hypothesis should attend more to the regions that show it than to the others.

A region is positive for a word in an annotated frame when its IoU with a ground-truth box of that
word reaches 0.5 (the batch's ``att_labels``: the TVQA+ reader builds them as STAGE's ``mk_att_label``
does). Every positive is paired with ``num_negatives`` (2) negatives of the same frame and word; the
LSE loss ``L_att = 1/N Σ_i Σ_pairs log(1 + exp(α (M_rn − M_rp)))`` sums the pairs of every annotated
frame and concept word of an example and averages over the N examples
(:func:`sparc.losses.lse_attention_loss`; α = 20 as STAGE's code, whose attention scores are cosines).
At inference the regions scoring above 0.2 are the predicted boxes of a word (the TVQA+ recipe writes
them for the official grounding mAP).

Negatives are drawn from the technique's generator, uniformly with replacement among the frame's real
regions (the batch's ``vid_mask``) that are not positive for the word: STAGE draws among every cell of
its per-example padded label, padded regions included (a padded negative there scores -1e10 and adds
0 to the sum, a wasted draw). ``hard_negatives=True`` takes the highest-scoring negatives instead, as
STAGE's hard mode; where a frame has fewer negatives than ``num_negatives`` × positives, STAGE's slice
comes out short and its pairs misalign, and here the hardest negatives are reused in turn. A (frame,
word) with positives but no negative region gives no pair.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from sparc.losses import lse_attention_loss
from sparc.techniques.base import ViewSupervision


class AttentionSupervision(ViewSupervision):
    """``w_att · L_att`` on a view's attention of the ground-truth hypothesis (``attention [B, C, T, L,
    R]``: per frame, hypothesis token and region). ``view`` as SpanSupervision's: frames a view did not
    show give no pair."""

    supervises = ("attention",)

    def __init__(self, weight: float = 0.1, alpha: float = 20.0, num_negatives: int = 2, hard_negatives: bool = False,
                 view: str = "whole", labels_field: str = "att_labels", regions_field: str = "vid_mask", seed: int = 0):
        super().__init__(weight, view, seed)
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"AttentionSupervision alpha must be a finite number > 0, got {alpha!r}")
        if not isinstance(num_negatives, int) or isinstance(num_negatives, bool) or num_negatives < 1:
            raise ValueError(f"AttentionSupervision num_negatives must be an integer >= 1, got {num_negatives!r}")
        self.alpha, self.num_negatives, self.hard_negatives = float(alpha), num_negatives, bool(hard_negatives)
        self.labels_field, self.regions_field = labels_field, regions_field
        self.label_fields = (labels_field,)

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        out = self.supervised_output(step)
        rows = torch.arange(out.attention.shape[0], device=out.attention.device)
        scores = out.attention[rows, step.answer.to(rows.device)]          # [B, T, L, R]: the GT hypothesis
        labels, regions = attention_inputs(step.batch, self.labels_field, self.regions_field, tuple(scores.shape))
        shown = out.frames if out.frames is not None else step.valid
        b, t, w, pos, neg = attention_pairs(labels, regions, shown.cpu(), self.num_negatives, self.generator,
                                            scores.detach().cpu() if self.hard_negatives else None)
        if b.numel() == 0:
            return {"attention": scores.sum() * 0.0}                       # no annotated box in this batch
        b, t, w, pos, neg = (x.to(scores.device) for x in (b, t, w, pos, neg))
        loss = lse_attention_loss(scores[b, t, w, pos], scores[b, t, w, neg], scores.shape[0], self.alpha)
        return {"attention": self.weight * loss}


# ---- pure functions ------------------------------------------------------------------------------

def attention_inputs(batch: dict, labels_field: str, regions_field: str, shape: Tuple[int, ...]):
    """``(positive [B, T, L, R] bool, regions [B, T, R] bool)`` on the CPU, checked against the
    attention's shape."""
    for field in (labels_field, regions_field):
        if batch.get(field) is None:
            raise ValueError(f"AttentionSupervision reads {field!r} from the batch, which has none (field: {field})")
    labels = torch.as_tensor(batch[labels_field]).detach().cpu()
    regions = torch.as_tensor(batch[regions_field]).detach().cpu()
    if tuple(labels.shape) != shape:
        raise ValueError(f"attention labels of shape {tuple(labels.shape)} for attention of shape {shape} "
                         f"([B, T, L, R]: frames, hypothesis tokens, regions) (field: {labels_field})")
    if tuple(regions.shape) != (shape[0], shape[1], shape[3]):
        raise ValueError(f"region mask of shape {tuple(regions.shape)}, expected {(shape[0], shape[1], shape[3])} "
                         f"([B, T, R]) (field: {regions_field})")
    return labels > 0, regions > 0


def attention_pairs(positive: torch.Tensor, regions: torch.Tensor, frames: torch.Tensor, num_negatives: int,
                    generator: torch.Generator, scores: Optional[torch.Tensor] = None):
    """The (positive, negative) pairs of STAGE's attention loss as index tensors ``(b, t, l, r_pos,
    r_neg)`` ``[P]``. For each (example, shown frame, word) with positives ``p_0..p_{n-1}``: pair ``i``
    of the ``n·k`` pairs (k = ``num_negatives``) takes positive ``p_{i mod n}`` and a negative among
    the frame's real regions not positive for the word: drawn uniformly with replacement from
    ``generator``, or (``scores`` given) the ``i``-th highest-scoring one, cycling when there are
    fewer than ``n·k``. Rows are visited in (b, t, l) order, so the draws are reproducible."""
    out = [[] for _ in range(5)]
    usable = positive & regions[:, :, None, :] & frames[:, :, None, None]
    for b, t, w in torch.nonzero(usable.any(dim=-1)).tolist():
        pos = torch.nonzero(usable[b, t, w]).squeeze(1)
        negatives = torch.nonzero(regions[b, t] & ~positive[b, t, w]).squeeze(1)
        if negatives.numel() == 0:
            continue
        count = pos.numel() * num_negatives
        pos = pos.repeat(num_negatives)
        if scores is None:
            neg = negatives[torch.randint(0, negatives.numel(), (count,), generator=generator)]
        else:
            order = torch.argsort(scores[b, t, w, negatives], descending=True, stable=True)
            neg = negatives[order][torch.arange(count) % negatives.numel()]
        for store, value in zip(out, (torch.full((count,), b), torch.full((count,), t), torch.full((count,), w), pos, neg)):
            store.append(value)
    if not out[0]:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty, empty, empty
    return tuple(torch.cat(parts).long() for parts in out)


__all__ = ["AttentionSupervision", "attention_pairs", "attention_inputs"]
