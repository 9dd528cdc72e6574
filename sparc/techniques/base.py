"""What every technique shares: its declarations, its own random generator, and checkpointable state.

A training forward runs in two phases. Phase 1: the one :class:`Augmentation` (if any) rewrites the
step's batch, targets and priors. Phase 2: every technique returns its named, weighted loss terms,
reading the views it needs from the step. Before phase 1 the step selects the causal frames once,
from the clean batch, with the selector the techniques declare (``frames``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn


class Technique(nn.Module):
    """A training-time technique: ``loss_terms(step)`` returns named, already weighted loss terms.

    Declarations ``wrap`` reads (class or instance attributes):

    - ``frames``: the :class:`~sparc.selection.FrameSelector` this technique insists on, or None;
    - ``needs_frames``: it reads ``step.keep`` (True whenever ``frames`` is set; a technique that
      follows whatever the step selects sets it without ``frames``, and the step then uses
      ``CausalFrames()``);
    - ``answer_term``: the name of the term that *is* the answer supervision, for a technique that
      takes it over (TemporalGuidance's ``"guided"``); the wrapper's plain answer loss is then dropped;
    - ``supervises``: the ModelOutput fields beyond the logits it puts a loss on (``wrap`` refuses an
      adapter whose ``outputs`` lack one); ``label_fields``: the batch fields it reads as labels
      (``wrap`` refuses an augmentation that does not keep them valid, :attr:`Augmentation.keeps_labels`).

    Each technique owns a ``torch.Generator`` (seeded from seed + process index by the loop) so its
    random draws never disturb the model's RNG; the generator state rides in ``state_dict`` (extra
    state) so a resumed run draws exactly what the uninterrupted run would have drawn.
    """

    frames = None
    answer_term: Optional[str] = None
    supervises: Tuple[str, ...] = ()      # ModelOutput fields it puts a loss on, besides logits
    label_fields: Tuple[str, ...] = ()    # batch fields it reads as labels

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    @property
    def needs_frames(self) -> bool:
        return self.frames is not None

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self.generator.manual_seed(seed)

    def bind(self, adapter) -> None:
        """Called once by ``wrap`` with the adapter: settle anything that depends on what the adapter
        declares, and refuse a pairing that cannot work before the first step runs."""

    def loss_terms(self, step) -> Dict[str, torch.Tensor]:
        return {}

    # A plain uint8 tensor, so checkpoints in safetensors format can hold it.
    def get_extra_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu().to(torch.uint8))


class Augmentation(Technique):
    """Phase 1: ``augment(step)`` rewrites the step's batch (``step.replace_batch``) before any view.

    ``wrap`` runs at most one augmentation: two mixups would mix the already mixed batch and score
    4C candidates. An augmentation that can follow another says so in :meth:`composes_after`."""

    keeps_labels: Tuple[str, ...] = ()    # label fields still valid for the rewritten batch

    def augment(self, step) -> None:
        raise NotImplementedError

    def composes_after(self, other: "Augmentation") -> bool:
        """True if this augmentation may run on a batch ``other`` has already rewritten."""
        return False


class ViewSupervision(Technique):
    """Phase 2: a weighted loss on one output field (``supervises[0]``) of one view of the step:
    ``view="whole"`` the whole video, ``"causal"`` the step's causal frames (then it reads ``step.keep``).
    Holds what span and attention supervision share: the checked ``weight`` and ``view``, and the view's
    output with a clear error when the adapter's forward left the field empty."""

    VIEWS = ("whole", "causal")

    def __init__(self, weight: float, view: str = "whole", seed: int = 0):
        super().__init__(seed)
        name = type(self).__name__
        if isinstance(weight, bool) or not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{name} weight must be a finite number >= 0, got {weight!r}")
        if view not in self.VIEWS:
            raise ValueError(f"{name} view must be one of {self.VIEWS}, got {view!r}")
        self.weight, self.view = float(weight), view

    @property
    def needs_frames(self) -> bool:
        return self.view == "causal"

    def supervised_output(self, step):
        """The view's ``ModelOutput``, its ``supervises[0]`` field checked to be there."""
        out = step.whole() if self.view == "whole" else step.causal()
        field = self.supervises[0]
        if getattr(out, field) is None:
            raise ValueError(f"{type(self).__name__}: {type(step.adapter).__name__}'s {self.view} view returned no "
                             f"{field} (field: {field})")
        return out
