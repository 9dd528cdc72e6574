"""Spatial distillation (SpARC 3.2.2): one random frame's prediction matches the image-QA teacher's."""

from __future__ import annotations

from typing import Dict

import torch

from sparc.frames import sample_single_frame
from sparc.losses import spatial_distillation
from sparc.techniques.base import Technique


class SpatialDistillation(Technique):
    """``w_s · L_s`` with ``L_s = -Σ_c P[b, i, c] · log softmax(M({f_i}, Q))_c``; ``i`` uniform over the
    sample's valid frames, redrawn every step from this technique's generator."""

    def __init__(self, weight: float = 1.0, temperature: float = 1.0, seed: int = 0):
        super().__init__(seed)
        self.weight, self.temperature = weight, temperature

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        priors = step.require_priors("SpatialDistillation")
        # The draw runs on the generator's device (CPU), so every device draws the same frames.
        index = sample_single_frame(step.valid.cpu(), self.generator).to(priors.device)
        logits = step.single(index).logits
        teacher = priors[torch.arange(priors.shape[0], device=priors.device), index]
        return {"spatial": self.weight * spatial_distillation(logits, teacher.to(logits.dtype), self.temperature)}
