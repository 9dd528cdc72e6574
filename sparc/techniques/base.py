"""What every technique shares: hyperparameters, its own random generator, and checkpointable state."""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn


class Technique(nn.Module):
    """A training-time technique. ``augment(step)`` may rewrite the batch (mixups run first);
    ``loss_terms(step)`` returns named, already weighted loss terms.

    Each technique owns a ``torch.Generator`` (seeded from seed + process index by the loop) so its
    random draws never disturb the model's RNG; the generator state rides in ``state_dict`` (extra
    state) so a resumed run draws exactly what the uninterrupted run would have drawn.
    """

    augments = False              # rewrites the batch before any view is computed
    replaces_answer_loss = False  # supplies the answer supervision itself (the plain CE is dropped)
    selects_frames = False        # owns the causal-frame selection

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.generator.manual_seed(seed)

    def bind(self, adapter) -> None:
        """Called once by ``wrap`` with the adapter: settle anything that depends on what the adapter
        declares, and refuse a pairing that cannot work before the first step runs."""

    def augment(self, step) -> None:
        pass

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        return {}

    # A plain uint8 tensor, so checkpoints in safetensors format can hold it.
    def get_extra_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu().to(torch.uint8))
