"""``Step``: one training step's shared state, the argument every technique receives.

A step holds the batch (rewritten by at most one augmentation), the hard answers and the targets
(soft after a mixup), the teacher priors, the causal frames ``keep`` (selected once, from the clean
batch, before any augmentation) and the *views*: the model's output on a subset of each sample's
frames. A view is computed at most once per step and shared by every technique that asks for it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from sparc.frames import one_frame_keep
from sparc.outputs import FIELDS, ModelOutput
from sparc.rows import select_rows

_NOT_YET = object()


class Step:
    """What a technique reads (and an augmentation rewrites) during one training forward.

    Read: ``batch``, ``answer`` (hard labels of the clean batch, ``[B]``), ``target`` (``[B]`` indices,
    or ``[B, C]`` soft labels after a mixup), ``priors`` (``[B, T, C]`` or None), ``keep`` (the causal
    frames ``[B, T]``), ``valid`` (real frames ``[B, T]``), ``num_candidates``.
    Views: ``view(frames)`` with ``frames`` None (the whole video), a ``[B, T]`` bool mask, or a
    ``[B]`` frame index (one frame per sample); ``whole()``, ``causal()`` and ``single(index)`` name
    the three SpARC uses. Every view returns a full :class:`~sparc.outputs.ModelOutput` in batch
    order, its temporal fields laid over the video's T frames, in every subset mode.
    Rewrite (augmentations only, before any view): :meth:`replace_batch`.
    """

    def __init__(self, model, adapter, batch: dict, priors: Optional[torch.Tensor], answer: torch.Tensor,
                 num_candidates: int, keep: Optional[torch.Tensor] = None, candidates_from: str = "the batch",
                 share_text: bool = True):
        self.model = model
        self.adapter = adapter
        self.batch = batch
        self.priors = priors
        self.answer = answer
        self.target: torch.Tensor = answer
        self.num_candidates = num_candidates
        # Where num_candidates came from, for the error when the model's logits disagree with it.
        self.candidates_from = candidates_from
        self._keep = keep
        self._views: List[Tuple[Optional[torch.Tensor], ModelOutput]] = []
        self.share_text = share_text
        self._text = _NOT_YET

    # ---- selection ----------------------------------------------------------------------------
    @property
    def valid(self) -> torch.Tensor:
        return self.adapter.valid_frames(self.batch)

    @property
    def keep(self) -> torch.Tensor:
        """The causal frames ``[B, T]``, selected by the wrap's frame selector before augmentation."""
        if self._keep is None:
            raise RuntimeError("this step selected no causal frames: no wrapped technique declares that it reads "
                               "them (Technique.frames / needs_frames), and wrap() was given no frames= selector")
        return self._keep

    @property
    def has_keep(self) -> bool:
        return self._keep is not None

    def require_priors(self, who: str) -> torch.Tensor:
        if self.priors is None:
            raise ValueError(f"{who} needs teacher priors: call the wrapped model with priors=store.lookup(batch['qid'])")
        return self.priors

    # ---- augmentation -------------------------------------------------------------------------
    def replace_batch(self, batch: dict, target: torch.Tensor, priors: Optional[torch.Tensor],
                      num_candidates: int, candidates_from: Optional[str] = None) -> None:
        """Make an augmented batch the step's batch; the views computed so far no longer apply."""
        self.batch, self.target, self.priors, self.num_candidates = batch, target, priors, num_candidates
        if candidates_from is not None:
            self.candidates_from = candidates_from
        self._views.clear()
        self._text = _NOT_YET

    # ---- the frame-independent work, shared by every view ------------------------------------------
    @property
    def text(self) -> Optional[dict]:
        """The adapter's ``encode_text`` of this step's batch (question and candidate encodings),
        computed once at the first view and reused by all; None where the adapter cannot split it."""
        if self._text is _NOT_YET:
            self._text = self.adapter.encode_text(self.model, self.batch) if self.share_text else None
        return self._text

    # ---- views --------------------------------------------------------------------------------
    def _check_width(self, view: str, out: ModelOutput) -> ModelOutput:
        """A model whose logits are not [B, C] for the step's C would fail later as an opaque shape
        mismatch inside a loss; say which C was expected and why."""
        C, logits = self.num_candidates, out.logits
        if C > 0 and logits.dim() == 2 and logits.shape[1] != C:
            raise ValueError(
                f"the model's {view} forward through {type(self.adapter).__name__} returned logits of shape "
                f"{tuple(logits.shape)}, but this step scores {C} candidates ({self.candidates_from}); the model "
                f"must return [B, {C}] (field: logits)")
        return out

    def _frames_mask(self, frames) -> Optional[torch.Tensor]:
        """None for the whole video, else a ``[B, T]`` bool mask within the valid frames."""
        if frames is None:
            return None
        valid = self.valid
        frames = torch.as_tensor(frames)
        if frames.dim() == 1 and not frames.dtype == torch.bool:
            if frames.shape[0] != valid.shape[0]:
                raise ValueError(f"a one-frame view takes one frame index per sample ([{valid.shape[0]}]), "
                                 f"got shape {tuple(frames.shape)}")
            frames = one_frame_keep(frames.to(valid.device).long(), valid.shape[1])
        if frames.shape != valid.shape or frames.dtype != torch.bool:
            raise ValueError(f"a view's frames are a [B, T] = {list(valid.shape)} bool mask or [B] frame indices, "
                             f"got {frames.dtype} of shape {tuple(frames.shape)}")
        frames = frames.to(valid.device)
        outside = (frames & ~valid).any(dim=1)
        if bool(outside.any()):
            raise ValueError(f"batch row {int(torch.nonzero(outside)[0])}: a view can show only a video's real "
                             "frames, not its padding")
        return frames

    def _cached(self, mask: Optional[torch.Tensor]) -> Optional[ModelOutput]:
        for key, out in self._views:
            if (key is None and mask is None) or (key is not None and mask is not None and torch.equal(key, mask)):
                return out
        return None

    def view(self, frames=None) -> ModelOutput:
        """The model on ``frames`` of each sample (None: the whole video), computed once per step.

        Rows that show every valid frame, or none, are the whole-video output (the same input, or
        nothing to show: ``frames`` of the result says what each row was shown)."""
        mask = self._frames_mask(frames)
        hit = self._cached(mask)
        if hit is not None:
            return hit
        if mask is None:
            out = self.adapter.forward_with_text(self.model, self.batch, self.text)
            out.frames = self.valid if out.frames is None else out.frames
            out = self._check_width("whole-video", out)
        else:
            out = self._subset_view(mask)
        self._views.append((mask, out))
        return out

    def _subset_view(self, mask: torch.Tensor) -> ModelOutput:
        valid = self.valid
        shown = torch.where(mask.any(dim=1, keepdim=True), mask, valid)
        partial = (shown != valid).any(dim=1)
        if not bool(partial.any()):
            return self.view(None)
        if bool(partial.all()):
            out = self.adapter.forward_subset(self.model, self.batch, shown, self.text)
            return self._check_width("subset", out)
        rows = torch.nonzero(partial).squeeze(1)
        sub = self._check_width("subset", self.adapter.forward_subset(
            self.model, self.adapter.select_batch(self.batch, rows), shown[rows], select_rows(self.text, rows)))
        whole = self.view(None)
        fields = {name: _put_rows(getattr(whole, name), getattr(sub, name), rows) for name in FIELDS}
        return ModelOutput(frames=shown, **fields)

    def whole(self) -> ModelOutput:
        """M(V, Q): the model on the whole video."""
        return self.view(None)

    def causal(self) -> ModelOutput:
        """M(V_c, Q): the model on the causal frames ``keep``."""
        return self.view(self.keep)

    def single(self, index: torch.Tensor) -> ModelOutput:
        """M({f_i}, Q): the model on frame ``index[b]`` of each sample."""
        return self.view(index)


def _put_rows(whole, sub, rows: torch.Tensor):
    """``whole`` with ``rows`` replaced by ``sub`` (tensors or tuples of them; None when either lacks it)."""
    if whole is None or sub is None:
        return None
    if isinstance(whole, (tuple, list)):
        return type(whole)(_put_rows(w, s, rows) for w, s in zip(whole, sub))
    return whole.index_copy(0, rows.to(whole.device), sub.to(whole.dtype))
