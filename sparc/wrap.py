"""``sparc.wrap(model, adapter, techniques)``: a model that trains with the techniques and evaluates bare.

Training forward: the augmenting techniques (mixups) rewrite the step first, then every technique
adds its named, weighted loss terms; each view (whole video, causal frames, single frame) is computed
once and shared. Eval forward: exactly the bare model's whole-video forward through the adapter.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch
from torch import nn

from sparc.losses import guided_ce, hinge_loss
from sparc.outputs import ModelOutput, StepOutput
from sparc.step import Step
from sparc.techniques.base import Technique
from sparc.techniques.temporal_guidance import TemporalGuidance
from sparc.techniques.temporal_guided_mixup import TemporalGuidedMixup


def _task_loss(name: Union[str, Callable]) -> Callable:
    if callable(name):
        return name
    if name == "ce":
        return guided_ce
    if name == "hinge":
        def hinge(logits, target):
            if target.dim() != 1:
                raise ValueError("task_loss='hinge' needs hard labels; mixups produce soft ones, use 'ce'")
            return hinge_loss(logits, target)
        return hinge
    raise ValueError(f"task_loss must be 'ce', 'hinge' or a callable, got {name!r}")


def _qid(batch: dict, qid_field: str, row: int) -> str:
    qids = batch.get(qid_field)
    if qids is None:
        return f"<batch row {row}>"
    value = qids[row]
    return str(value.item() if torch.is_tensor(value) else value)


class SparcModel(nn.Module):
    """The wrapped model. ``model`` stays reachable as ``.model`` (save its ``state_dict`` for deployment)."""

    def __init__(self, model: nn.Module, adapter, techniques: Iterable[Technique] = (),
                 task_loss: Union[str, Callable] = "ce"):
        super().__init__()
        self.model = model
        self.adapter = adapter
        self.techniques = nn.ModuleList(list(techniques))
        for t in self.techniques:
            if not isinstance(t, Technique):
                raise TypeError(f"{type(t).__name__} is not a sparc Technique")
        self.task_loss = _task_loss(task_loss)
        self._selector = self._pick_selector()

    def _pick_selector(self):
        guides = [t for t in self.techniques if isinstance(t, TemporalGuidance)]
        if len(guides) > 1:
            raise ValueError("wrap at most one TemporalGuidance: the causal frames are selected once per step")
        mixups = [t for t in self.techniques if isinstance(t, TemporalGuidedMixup) and t.selects_frames]
        if guides:
            for m in mixups:
                if (m.threshold is not None and m.threshold != guides[0].threshold) or (m.empty not in (None, guides[0].empty)):
                    raise ValueError("TemporalGuidedMixup's threshold/empty disagree with TemporalGuidance's; "
                                     "leave them None to share TemporalGuidance's selection")
            return guides[0]
        return mixups[0] if mixups else None

    def reseed(self, seed: int) -> None:
        """Give every technique its own stream derived from ``seed`` (the loop passes seed + process index)."""
        for i, t in enumerate(self.techniques):
            t.reseed(seed * 1009 + i)

    def ddp_kwargs(self) -> dict:
        """Keyword arguments for DistributedDataParallel (``DistributedDataParallelKwargs``)."""
        return {"find_unused_parameters": bool(getattr(self.adapter, "find_unused_parameters", False))}

    # ---- input checks -------------------------------------------------------------------------
    def _num_candidates(self, batch: dict, priors: Optional[torch.Tensor]) -> int:
        for name, dim in self.adapter.candidate.items():
            if batch.get(name) is not None:
                return batch[name].shape[dim]
        if priors is not None:
            return priors.shape[2]
        return int(getattr(self.adapter, "num_answers", 0) or 0) or -1

    def _check(self, batch: dict, priors: Optional[torch.Tensor], answer: torch.Tensor, num_candidates: int) -> None:
        qf = self.adapter.qid_field
        if num_candidates > 0:
            bad = torch.nonzero((answer < 0) | (answer >= num_candidates)).flatten()
            if bad.numel():
                r = int(bad[0])
                raise ValueError(f"qid {_qid(batch, qf, r)}: answer index {int(answer[r])} is out of range "
                                 f"for {num_candidates} candidates (field: {self.adapter.answer_field})")
        if priors is None:
            return
        T = self.adapter.num_frames(batch)
        frame_field = next(iter(self.adapter.temporal))
        if priors.dim() != 3 or priors.shape[0] != answer.shape[0]:
            raise ValueError(f"priors must be [B, T, C] with B={answer.shape[0]}, got {tuple(priors.shape)} (field: priors)")
        if priors.shape[1] != T:
            raise ValueError(f"qid {_qid(batch, qf, 0)}: priors have {priors.shape[1]} frames but field "
                             f"{frame_field!r} has {T} (field: priors)")
        if num_candidates > 0 and priors.shape[2] != num_candidates:
            raise ValueError(f"qid {_qid(batch, qf, 0)}: priors have {priors.shape[2]} candidates but the "
                             f"batch has {num_candidates} (field: priors)")
        finite = torch.isfinite(priors).flatten(1).all(dim=1)
        if not finite.all():
            r = int(torch.nonzero(~finite)[0])
            raise ValueError(f"qid {_qid(batch, qf, r)}: priors contain NaN or inf (field: priors)")

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, batch: dict, priors: Optional[torch.Tensor] = None, answer: Optional[torch.Tensor] = None):
        if not self.training:
            return self.adapter.forward(self.model, batch)
        if answer is None:
            answer = batch[self.adapter.answer_field]
        answer = torch.as_tensor(answer).long()
        num_candidates = self._num_candidates(batch, priors)
        self._check(batch, priors, answer, num_candidates)
        if priors is not None:
            priors = priors.to(answer.device, torch.float32)
        select = self._selector.select if self._selector is not None else None
        step = Step(self.model, self.adapter, batch, priors, answer, num_candidates, select)

        for t in self.techniques:
            if t.augments:
                t.augment(step)
        terms = {}
        if not any(t.replaces_answer_loss for t in self.techniques):
            terms["answer"] = self.task_loss(step.whole().logits, step.target)
        for t in self.techniques:
            for name, value in t.loss_terms(step).items():
                if name in terms:
                    raise ValueError(f"two techniques both produce the loss term {name!r}")
                terms[name] = value
        loss = sum(terms.values()) if terms else step.whole().logits.sum() * 0.0
        return StepOutput(loss=loss, logits=step.whole().logits, terms=terms, keep=step._keep)


def wrap(model: nn.Module, adapter, techniques: Iterable[Technique] = (), task_loss: Union[str, Callable] = "ce") -> SparcModel:
    """Wrap ``model`` so that training applies ``techniques`` and evaluation is the bare model."""
    return SparcModel(model, adapter, techniques, task_loss)


__all__ = ["wrap", "SparcModel", "ModelOutput", "StepOutput"]
