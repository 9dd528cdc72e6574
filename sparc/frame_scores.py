"""Which frames a trained model answers from, for any backbone: the probability the model gives its
own whole-video answer when shown one frame alone (the one-frame views SpatialDistillation trains),
per frame. It needs no attention output, so HGA, HME, VGT and memory-attention are scored alike and
the scores compare directly with the teacher's per-frame probabilities (``sparc.grounding``)."""

from __future__ import annotations

from typing import Tuple

import torch

from sparc.step import Step


@torch.no_grad()
def single_frame_scores(wrapped, batch: dict) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(scores [B, T], valid [B, T], answer [B])`` for an eval batch of a wrapped model
    (``sparc.wrap``): ``answer`` the whole-video prediction, ``scores[b, t]`` its softmax probability
    from frame ``t`` alone (0 at padding). The model is left in the mode it was in."""
    was_training = wrapped.training
    wrapped.eval()
    try:
        adapter = wrapped.adapter
        placeholder = torch.zeros(adapter.valid_frames(batch).shape[0], dtype=torch.long)
        step = Step(wrapped.model, adapter, batch, None, placeholder, num_candidates=0, share_text=True)
        valid = step.valid
        whole = step.whole().logits
        answer = whole.argmax(dim=-1)
        rows = torch.arange(whole.shape[0], device=whole.device)
        scores = torch.zeros(valid.shape, dtype=torch.float32, device=whole.device)
        for t in range(valid.shape[1]):
            index = torch.where(valid[:, t], torch.full_like(valid[:, t], t, dtype=torch.long), 0)
            probs = step.single(index).logits.float().softmax(dim=-1)
            scores[:, t] = torch.where(valid[:, t].to(whole.device), probs[rows, answer], 0.0)
        return scores, valid, answer
    finally:
        wrapped.train(was_training)


__all__ = ["single_frame_scores"]
