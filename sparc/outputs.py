"""The two result types every layer speaks: what a backbone returns, and what a training step returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch


@dataclass
class ModelOutput:
    """A backbone's forward, as an adapter reports it.

    ``logits`` ``[B, C]`` (C candidates, or the open-ended answer set); the optional fields serve the
    STAGE-style techniques: ``span_logits`` (start, end) per hypothesis, ``[B, C, T]`` each (for a
    ``[B, T]`` span loss take the correct hypothesis' row), ``attention`` over regions (STAGE:
    ``[B, C, T, L, R]``, per hypothesis token), ``hypothesis`` ``[B, C, D]`` per-candidate
    representations for contrastive masking.
    """

    logits: torch.Tensor
    span_logits: Optional[Any] = None
    attention: Optional[torch.Tensor] = None
    hypothesis: Optional[torch.Tensor] = None


@dataclass
class StepOutput:
    """A training forward of a wrapped model: the total loss, its named weighted terms, the
    whole-video logits, and the causal-frame mask the step used (None when nothing selected frames)."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    keep: Optional[torch.Tensor] = None
