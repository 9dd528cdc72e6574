"""The image-QA teacher protocol SpARC's priors come from."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageQATeacher(Protocol):
    """``encode_images`` runs once per frame and its state is reused by every question about those
    frames; ``score`` returns ``probs [frames, C]``: for each frame, a distribution over the question's
    candidates (softmax over the candidates)."""

    def encode_images(self, frames: Any) -> Any: ...

    def score(self, image_state: Any, questions: Any, candidates: Any) -> torch.Tensor: ...
