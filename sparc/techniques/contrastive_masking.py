"""Contrastive masking (the self-supervised pre-training and contrastive learning paper for multiple-choice
video QA, 3.2 "Contrastive Learning", eqs. 8-10; its 4.1 sets the numbers): the ground-truth hypothesis'
text is masked token by token, encoded by the same model, and must pick out its own unmasked
representation among the C hypotheses of the question.

``scores = H · h_anchor`` over the C hypothesis representations ``H [B, C, D]`` of the unmasked input
(the whole-video view's ``ModelOutput.hypothesis``), ``h_anchor`` the same model's representation of the
masked ground-truth hypothesis; ``L_cont = CE(scores, a)``; the step adds ``λ_cont · L_cont`` with
``λ_cont = 0.1`` and masks each real token with probability 0.2 (4.1).

Neither side is detached. The paper trains the anchor "using the same BERT and BiGRU" and adds
``λ_cont · L_cont`` to the total loss (eq. 10) with no stop-gradient anywhere, as the supervised
contrastive loss it builds on (Khosla et al. 2020) trains both the anchor and the contrasted
representations; a detached anchor would also leave the learned mask vector without any gradient.

Where the hypothesis text is pre-extracted token features (STAGE's ``qas_bert``, HGA's and HME's BERT
features), a masked token's row is replaced by a learned mask vector, a parameter of this technique (so
it lives in the wrapped module: DDP and checkpoints carry it); where it is token ids (VGT), by the
tokenizer's mask id, and the technique keeps no vector. The adapter supplies the two hooks:
``ModelOutput.hypothesis`` and ``mask_text(inputs, which, masker)`` (docs/adapters.md).
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional

import torch
from torch import nn

from sparc.losses import contrastive_loss
from sparc.techniques.base import Technique

TEXT_TOKENS = ("ids", "features")
# BERT initialises its embeddings N(0, 0.02^2) (initializer_range): the mask vector starts as one.
MASK_INIT_STD = 0.02


class ContrastiveMasking(Technique):
    """``weight · CE(H · h_anchor, a)``: ``H [B, C, D]`` the whole-video view's hypothesis
    representations, ``h_anchor`` the model's representation of the ground-truth hypothesis with each
    real token masked with probability ``prob`` (redrawn every step from this technique's generator).

    ``feature_dim``: the width of the adapter's text features, for the learned mask vector; it is
    dropped at ``bind`` for an adapter whose text is token ids (``text_tokens == "ids"``)."""

    supervises = ("hypothesis",)
    # The correct-answer index picks the hypothesis to mask and is the CE target: a mixup that rewrites
    # the batch first leaves it describing neither mixed sample.
    label_fields = ("answer",)

    def __init__(self, weight: float = 0.1, prob: float = 0.2, feature_dim: Optional[int] = 768, seed: int = 0):
        super().__init__(seed)
        for name, value in (("weight", weight), ("prob", prob)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"ContrastiveMasking {name} must be a finite number >= 0, got {value!r}")
        if prob > 1:
            raise ValueError(f"ContrastiveMasking prob is a probability per token, in [0, 1]; got {prob!r}")
        if feature_dim is not None and (isinstance(feature_dim, bool) or not isinstance(feature_dim, numbers.Integral)
                                        or feature_dim < 1):
            raise ValueError(f"ContrastiveMasking feature_dim must be a positive int (the text features' width) or "
                             f"None (token ids), got {feature_dim!r}")
        self.weight, self.prob = float(weight), float(prob)
        self.mask_vector: Optional[nn.Parameter] = None
        if feature_dim is not None:
            init = torch.Generator().manual_seed(seed)
            self.mask_vector = nn.Parameter(torch.randn(int(feature_dim), generator=init) * MASK_INIT_STD)
        self.adapter_name = "the adapter"

    def bind(self, adapter) -> None:
        name = type(adapter).__name__
        missing = []
        if "hypothesis" not in getattr(adapter, "outputs", ()):
            missing.append("the per-candidate hypothesis representations (ModelOutput.hypothesis [B, C, D], "
                           "'hypothesis' in adapter.outputs)")
        tokens = getattr(adapter, "text_tokens", None)
        if tokens not in TEXT_TOKENS or not callable(getattr(adapter, "mask_text", None)):
            missing.append("mask_text(inputs, which, masker) with text_tokens 'ids' or 'features'")
        if missing:
            raise ValueError(f"ContrastiveMasking needs two hooks of the adapter, and {name} lacks "
                             f"{' and '.join(missing)}; the adapters with both: STAGEAdapter, VGTAdapter, HGAAdapter "
                             "and MemoryAdapter, multiple choice (docs/adapters.md)")
        if tokens == "ids":
            self.mask_vector = None          # the tokenizer's mask id replaces tokens: no vector to train
        elif self.mask_vector is None:
            raise ValueError(f"ContrastiveMasking: {name} hands it text features, whose masked rows become a learned "
                             "mask vector; give feature_dim (the features' width, 768 for BERT-base)")
        self.adapter_name = name

    def mask(self, tokens: torch.Tensor, maskable: torch.Tensor, mask_id: Optional[int] = None) -> torch.Tensor:
        """The masker ``mask_text`` calls: each ``maskable`` token replaced with probability ``prob``."""
        # Drawn on the CPU from the technique's generator, so every device draws the same tokens.
        chosen = draw_mask(maskable.detach().cpu(), self.prob, self.generator).to(tokens.device)
        return mask_tokens(tokens, chosen, mask_id, self.mask_vector, self.adapter_name)

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        if step.target.dim() != 1:
            raise ValueError("ContrastiveMasking reads hard answers: the step's targets are soft (a mixup rewrote "
                             "the batch); wrap it without a mixup")
        hypotheses = step.whole().hypothesis
        B, C = step.answer.shape[0], step.num_candidates
        check_hypotheses(hypotheses, B, C, f"{self.adapter_name}'s whole-video forward")
        answer = step.answer.to(hypotheses.device)
        masked = step.adapter.mask_text(step.batch, answer, self.mask)
        anchor = step.adapter.forward(step.model, masked).hypothesis
        check_hypotheses(anchor, B, 1, f"{self.adapter_name}'s forward on mask_text's batch")
        loss = contrastive_loss(hypotheses, anchor[:, 0].to(hypotheses.dtype), answer)
        return {"contrastive": self.weight * loss}


# ---- pure functions ------------------------------------------------------------------------------

def draw_mask(maskable: torch.Tensor, prob: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``[B, L]`` bool: each ``maskable`` token independently with probability ``prob`` (one uniform draw
    per position, maskable or not, so the stream's use does not depend on the text's lengths)."""
    u = torch.rand(maskable.shape, generator=generator, device=maskable.device)
    return maskable.bool() & (u < prob)


def mask_tokens(tokens: torch.Tensor, chosen: torch.Tensor, mask_id: Optional[int] = None,
                mask_vector: Optional[torch.Tensor] = None, who: str = "the adapter") -> torch.Tensor:
    """``tokens`` with the ``chosen [B, L]`` positions replaced: ids ``[B, L]`` by ``mask_id``, features
    ``[B, L, E]`` by ``mask_vector [E]`` (through ``torch.where``, so the vector receives the gradient)."""
    if tuple(chosen.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"{who}'s mask_text: maskable is {tuple(chosen.shape)}, the text {tuple(tokens.shape)}; "
                         "it is [B, L] for text [B, L] or [B, L, E]")
    if tokens.is_floating_point():
        if mask_vector is None:
            raise ValueError(f"{who}'s hypothesis text is token features, but ContrastiveMasking has no mask vector "
                             "(the adapter declares text_tokens='ids', or feature_dim was None)")
        if tokens.dim() != 3 or mask_vector.shape[-1] != tokens.shape[-1]:
            raise ValueError(f"{who}'s hypothesis text features are {tuple(tokens.shape)}, ContrastiveMasking's mask "
                             f"vector is {mask_vector.shape[-1]} wide: build it with feature_dim={tokens.shape[-1]}")
        return torch.where(chosen[..., None], mask_vector.to(tokens), tokens)
    if mask_id is None:
        raise ValueError(f"{who}'s hypothesis text is token ids and its mask_text gave no mask id")
    if tokens.dim() != 2:
        raise ValueError(f"{who}'s hypothesis token ids are {tuple(tokens.shape)}; expected [B, L]")
    return tokens.masked_fill(chosen, int(mask_id))


def check_hypotheses(hypotheses: Optional[torch.Tensor], batch_size: int, num_candidates: int, where: str) -> None:
    """A ``[B, C, D]`` tensor, or an error saying which forward gave what."""
    expected = (batch_size, num_candidates)
    if hypotheses is None or hypotheses.dim() != 3 or tuple(hypotheses.shape[:2]) != expected:
        got = None if hypotheses is None else tuple(hypotheses.shape)
        raise ValueError(f"ContrastiveMasking: {where} returned hypothesis {got}; expected [{batch_size}, "
                         f"{num_candidates}, D] (field: hypothesis)")


__all__ = ["ContrastiveMasking", "draw_mask", "mask_tokens", "check_hypotheses"]
