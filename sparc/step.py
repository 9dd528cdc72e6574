"""One training step's shared state: the (possibly augmented) batch, its targets and priors, the
causal-frame selection, and every forward "view" computed at most once and shared by all techniques."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from sparc.outputs import ModelOutput


class Step:
    def __init__(self, model, adapter, batch: dict, priors: Optional[torch.Tensor], answer: torch.Tensor,
                 num_candidates: int, select_keep: Optional[Callable[["Step"], torch.Tensor]] = None):
        self.model = model
        self.adapter = adapter
        self.batch = batch
        self.priors = priors
        self.answer = answer                  # hard labels of the un-augmented batch, [B]
        self.target: torch.Tensor = answer    # [B] indices, or [B, C] soft labels after a mixup
        self.num_candidates = num_candidates
        # Where num_candidates came from, for the error when the model's logits disagree with it.
        self.candidates_from = "the batch"
        self._select_keep = select_keep
        self._keep: Optional[torch.Tensor] = None
        self._views: Dict[str, object] = {}

    # ---- selection ----------------------------------------------------------------------------
    @property
    def valid(self) -> torch.Tensor:
        return self.adapter.valid_frames(self.batch)

    @property
    def keep(self) -> torch.Tensor:
        """The causal frames ``[B, T]``, selected once per step (before any augmentation changes them)."""
        if self._keep is None:
            if self._select_keep is None:
                raise RuntimeError("no technique selects causal frames; add TemporalGuidance or give a threshold")
            self._keep = self._select_keep(self)
        return self._keep

    def require_priors(self, who: str) -> torch.Tensor:
        if self.priors is None:
            raise ValueError(f"{who} needs teacher priors: call the wrapped model with priors=store.lookup(batch['qid'])")
        return self.priors

    # ---- views --------------------------------------------------------------------------------
    def _check_width(self, view: str, logits: torch.Tensor) -> torch.Tensor:
        """A model whose logits are not [B, C] for the step's C would fail later as an opaque shape
        mismatch inside a loss; say which C was expected and why."""
        C = self.num_candidates
        if C > 0 and logits.dim() == 2 and logits.shape[1] != C:
            raise ValueError(
                f"the model's {view} forward through {type(self.adapter).__name__} returned logits of shape "
                f"{tuple(logits.shape)}, but this step scores {C} candidates ({self.candidates_from}); the model "
                f"must return [B, {C}] (field: logits)")
        return logits

    def _cached(self, name: str, compute):
        if name not in self._views:
            self._views[name] = compute()
        return self._views[name]

    def whole(self) -> ModelOutput:
        """M(V, Q): the model on the whole video."""
        def compute():
            out = self.adapter.forward(self.model, self.batch)
            self._check_width("whole-video", out.logits)
            return out
        return self._cached("whole", compute)

    def causal(self) -> torch.Tensor:
        """M(V_c, Q) logits ``[B, C]`` on the causal frames. Rows that keep every valid frame reuse the
        whole-video logits (the same input; computing it twice would only add cost)."""
        def compute():
            keep, valid = self.keep, self.valid.to(self.keep.device)
            whole = self.whole().logits
            partial = keep.any(dim=1) & (keep != valid).any(dim=1)
            if not partial.any():
                return whole
            rows = torch.nonzero(partial).squeeze(1)
            sub = self.adapter.select_batch(self.batch, rows)
            out = self.adapter.forward_subset(self.model, sub, keep[rows])
            return whole.index_copy(0, rows.to(whole.device), out.logits.to(whole.dtype))
        return self._cached("causal", compute)

    def single(self, index: torch.Tensor) -> torch.Tensor:
        """M({f_i}, Q) logits on one frame per sample; the index is fixed by the first caller."""
        def compute():
            keep = torch.nn.functional.one_hot(index, self.adapter.num_frames(self.batch)).bool()
            return self._check_width("single-frame", self.adapter.forward_subset(self.model, self.batch, keep).logits)
        if "single" in self._views and not torch.equal(self._views["single_index"], index):
            raise RuntimeError("the single-frame view was already computed for other frames this step")
        self._views["single_index"] = index
        return self._cached("single", compute)
