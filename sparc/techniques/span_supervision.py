"""Span supervision (TVQA+ / STAGE 4.3, "Temporal Supervision"; the span loss of the self-supervised
pre-training and contrastive learning paper, its eq. 7): the ground-truth hypothesis' start and end
frame probabilities are trained towards the annotated span.

``L_span = -1/(2N) Σ_i (log p_start[y1_i] + log p_end[y2_i])``, ``p = softmax`` of the model's span
logits of hypothesis ``y_ans`` over the frames. At inference the span of a hypothesis is the pair
``s <= e`` with the largest ``p_start[s] · p_end[e]`` (:func:`sparc.data.tvqa_inference.find_max_pair`,
which the TVQA+ recipe turns into seconds for the official mIoU and ASA).

Means, not sums: STAGE's code sums its three losses over the batch (``CrossEntropyLoss(reduction=
"sum")``), its paper writes means (``1/N``). With Adam, multiplying the whole loss by the batch size
changes the update only through ``eps``, and the ratios between the terms are the same either way;
sparc's answer loss and SpARC's terms are means, so the paper's means keep w_span = 0.5 meaning what
the paper tuned it to.
"""

from __future__ import annotations

from typing import Dict

import torch

from sparc.losses import span_loss
from sparc.techniques.base import ViewSupervision


class SpanSupervision(ViewSupervision):
    """``w_span · L_span`` on a view's span logits of the ground-truth hypothesis.

    ``view``: ``"whole"`` (the whole video, STAGE's) or ``"causal"`` (the step's causal frames: a row
    whose labelled start or end frame the view did not show adds nothing). Rows flagged by the batch's
    ``missing_field`` (TVQA's ``ts_missing``: no span was annotated and the label is TVQA's [10, 30] s
    stand-in) add nothing either; STAGE trains on them, sparc does not learn a made-up span."""

    supervises = ("span_logits",)

    def __init__(self, weight: float = 0.5, view: str = "whole", start_field: str = "ts_label_st",
                 end_field: str = "ts_label_ed", missing_field: str = "ts_missing", seed: int = 0):
        super().__init__(weight, view, seed)
        self.start_field, self.end_field, self.missing_field = start_field, end_field, missing_field
        self.label_fields = (start_field, end_field)

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        out = self.supervised_output(step)
        start_logits, end_logits = out.span_logits                      # [B, C, T] each
        start, end, use = span_targets(step.batch, self.start_field, self.end_field, self.missing_field,
                                       start_logits.shape[-1], out.frames, step.adapter.qid_field)
        rows = torch.arange(start_logits.shape[0], device=start_logits.device)
        answer = step.answer.to(start_logits.device)
        start_logits, end_logits = start_logits[rows, answer], end_logits[rows, answer]   # the GT hypothesis
        use = use.to(start_logits.device)
        if not bool(use.any()):
            return {"span": start_logits.sum() * 0.0}                   # keeps the graph (DDP sees the params)
        loss = span_loss(start_logits[use], end_logits[use], start.to(use.device)[use], end.to(use.device)[use])
        return {"span": self.weight * loss}


# ---- pure functions ------------------------------------------------------------------------------

def span_targets(batch: dict, start_field: str, end_field: str, missing_field: str, num_frames: int,
                 shown, qid_field: str = "qid"):
    """``(start [B], end [B], use [B] bool)`` from the batch's span labels (frame positions), checked:
    ``0 <= start <= end < T``; ``use`` drops rows flagged missing and rows whose start or end frame the
    view did not show (``shown [B, T]``, None for all)."""
    for field in (start_field, end_field):
        if batch.get(field) is None:
            raise ValueError(f"SpanSupervision reads the span label from the batch, which has no {field!r} "
                             f"(field: {field})")
    start = torch.as_tensor(batch[start_field]).long().reshape(-1)
    end = torch.as_tensor(batch[end_field]).long().reshape(-1)
    bad = (start < 0) | (end < start) | (end >= num_frames)
    if bool(bad.any()):
        b = int(torch.nonzero(bad)[0])
        qids = batch.get(qid_field)
        qid = qids[b] if qids is not None else b
        raise ValueError(f"question {qid}: span label ({int(start[b])}, {int(end[b])}) is not 0 <= start <= end < "
                         f"{num_frames} frames (fields: {start_field}, {end_field})")
    use = torch.ones_like(start, dtype=torch.bool)
    if batch.get(missing_field) is not None:
        use &= ~torch.as_tensor(batch[missing_field], dtype=torch.bool).reshape(-1).cpu()
    if shown is not None:
        shown = shown.cpu()
        rows = torch.arange(start.shape[0])
        use &= shown[rows, start] & shown[rows, end]
    return start, end, use


__all__ = ["SpanSupervision", "span_targets"]
