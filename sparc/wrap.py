"""``sparc.wrap(model, adapter, techniques)``: a model that trains with the techniques and evaluates bare.

Training forward: the causal frames are selected once from the clean batch (the selector the
techniques declare, or ``frames=``); phase 1, the one augmentation (a mixup) rewrites the step;
phase 2, every technique adds its named, weighted loss terms, reading views (whole video, causal
frames, one frame) that are computed once and shared. Eval forward: exactly the bare model's
whole-video forward through the adapter.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import torch
from torch import nn

from sparc.losses import guided_ce, hinge_loss
from sparc.outputs import ModelOutput, StepOutput
from sparc.selection import CausalFrames, FrameSelector, SelectionInputs
from sparc.step import Step
from sparc.techniques.base import Augmentation, Technique

# Tolerance on a prior row's sum: the store accepts 1e-3 before its float16 cast, which moves a row's
# sum by at most 2^-11 of it; 5e-3 also admits softmaxes computed in bfloat16. Logits fail by far.
PRIOR_ROW_ATOL = 5e-3


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


def _name(t) -> str:
    return type(t).__name__


def resolve_frames(techniques, frames: Optional[FrameSelector]) -> Optional[FrameSelector]:
    """The one selector of a step: ``frames`` if given, else the one the techniques declare; the
    declarations must agree (selectors compare by value). ``CausalFrames()`` when a technique reads
    ``step.keep`` and nobody names a selector; None when no technique reads it."""
    if frames is not None and not isinstance(frames, FrameSelector):
        raise TypeError(f"frames must be a FrameSelector (CausalFrames, TopKFrames, SpanFrames, ...), "
                        f"got {type(frames).__name__}")
    declared = [("wrap(frames=...)", frames)] if frames is not None else []
    declared += [(_name(t), t.frames) for t in techniques if t.frames is not None]
    for who, selector in declared[1:]:
        if selector != declared[0][1]:
            raise ValueError(f"selections disagree: the causal frames are selected once per step, but {declared[0][0]} asks for "
                             f"{declared[0][1]!r} and {who} for {selector!r}; give one of them (the other "
                             f"follows the step's selection when left unset)")
    if declared:
        return declared[0][1]
    return CausalFrames() if any(t.needs_frames for t in techniques) else None


def check_phases(techniques) -> None:
    """At most one augmentation unless the later one declares it composes; one answer-loss owner."""
    augmentations = [t for t in techniques if isinstance(t, Augmentation)]
    for earlier, later in zip(augmentations, augmentations[1:]):
        if not later.composes_after(earlier):
            raise ValueError(f"{_name(earlier)} and {_name(later)} both rewrite the batch: the second would mix "
                             f"an already mixed batch. Wrap one augmentation (or give {_name(later)} a "
                             f"composes_after that accepts {_name(earlier)})")
    owners = [t for t in techniques if t.answer_term is not None]
    if len(owners) > 1:
        raise ValueError(f"{_name(owners[0])} and {_name(owners[1])} both take over the answer loss "
                         f"(answer_term {owners[0].answer_term!r} and {owners[1].answer_term!r}); wrap one of them")


def check_supervision(techniques, adapter) -> None:
    """Every output field a technique supervises is one the adapter fills, and no augmentation rewrites
    the batch under a technique that reads labels from it (they would no longer describe the mixed
    sample: its span or boxes would be mixed a second time by meaning, or not at all)."""
    outputs = getattr(adapter, "outputs", frozenset({"logits"}))
    for t in techniques:
        missing = [f for f in t.supervises if f not in outputs]
        if missing:
            raise ValueError(f"{_name(t)} supervises the model's {missing[0]}, which {type(adapter).__name__} does not "
                             f"return (its outputs: {sorted(outputs)}); use an adapter whose backbone has it "
                             f"(STAGEAdapter), or declare it (FunctionAdapter(..., outputs=...))")
    augmentations = [t for t in techniques if isinstance(t, Augmentation)]
    for t in techniques:
        for a in augmentations:
            if a is t:
                continue
            lost = [f for f in t.label_fields if f not in a.keeps_labels]
            if lost:
                raise ValueError(f"{_name(t)} reads the batch's {', '.join(lost)} as labels, but {_name(a)} rewrites "
                                 f"the batch before it and does not keep them valid for the mixed samples; wrap "
                                 f"{_name(t)} without {_name(a)} (or give {_name(a)} keeps_labels naming them)")


class SparcModel(nn.Module):
    """The wrapped model. ``model`` stays reachable as ``.model`` (save its ``state_dict`` for deployment)."""

    def __init__(self, model: nn.Module, adapter, techniques: Iterable[Technique] = (),
                 task_loss: Union[str, Callable] = "ce", frames: Optional[FrameSelector] = None,
                 share_text: bool = True):
        super().__init__()
        self.share_text = share_text
        self.model = model
        self.adapter = adapter
        self.techniques = nn.ModuleList(list(techniques))
        for t in self.techniques:
            if not isinstance(t, Technique):
                raise TypeError(f"{type(t).__name__} is not a sparc Technique")
        check_phases(self.techniques)
        check_supervision(self.techniques, adapter)
        self.frames = resolve_frames(self.techniques, frames)
        for t in self.techniques:
            t.bind(adapter)
        self.task_loss = _task_loss(task_loss)

    def reseed(self, seed: int) -> None:
        """Give every technique its own stream derived from ``seed`` (the loop passes seed + process index)."""
        for i, t in enumerate(self.techniques):
            t.reseed(seed * 1009 + i)

    def ddp_kwargs(self, batch: Optional[dict] = None, priors: Optional[torch.Tensor] = None) -> dict:
        """Keyword arguments for DistributedDataParallel (``DistributedDataParallelKwargs``).

        Given a batch (and its priors), ``find_unused_parameters`` is what a probe training step on it
        finds (:meth:`unused_parameters`), or-ed with the adapter's declaration; without one, only the
        declaration. The probe is the reliable answer: which parameters a step trains depends on the
        model class (an original's WeightDrop), the techniques and their views, not on the adapter alone."""
        unused = bool(getattr(self.adapter, "find_unused_parameters", False))
        if batch is not None and not unused:
            unused = bool(self.unused_parameters(batch, priors))
        return {"find_unused_parameters": unused}

    def unused_parameters(self, batch: dict, priors: Optional[torch.Tensor] = None) -> list:
        """Names of the model's trainable parameters that one training step on ``batch`` leaves without
        a gradient. The step leaves no trace: every random stream (global, CUDA, the techniques'),
        every buffer (BatchNorm statistics), the gradients and the train/eval mode are restored."""
        params = dict(self.model.named_parameters())
        grads = {name: p.grad for name, p in params.items()}
        buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        generators = [t.generator.get_state() for t in self.techniques]
        mode = self.training
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:
            with torch.random.fork_rng(devices=devices):
                for p in params.values():
                    p.grad = None
                self.train()
                self(batch, priors=priors).loss.backward()
                # Read after the step: a module may register new parameters as it runs (the original
                # HGA's WeightDrop does, at every forward).
                return [name for name, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        finally:
            for name, p in self.model.named_parameters():
                p.grad = grads.get(name)
            for name, b in self.model.named_buffers():
                if name in buffers:
                    b.data.copy_(buffers[name])
            for t, state in zip(self.techniques, generators):
                t.generator.set_state(state)
            self.train(mode)

    # ---- input checks -------------------------------------------------------------------------
    def _num_candidates(self, batch: dict, priors: Optional[torch.Tensor]):
        """C, and where it came from (for error messages)."""
        for name, dim in self.adapter.candidate.items():
            value = batch.get(name)
            if value is None:
                continue
            if not torch.is_tensor(value) or value.dim() <= dim:
                shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise ValueError(f"{type(self.adapter).__name__} reads the candidates on axis {dim} of field {name!r} "
                                 f"(adapter.candidate), which is {shape}; it must be a tensor with the candidates "
                                 f"on that axis (field: {name})")
            return value.shape[dim], f"field {name!r} has {value.shape[dim]}"
        if priors is not None:
            if priors.dim() != 3:
                raise ValueError(f"priors must be [B, T, C], got {tuple(priors.shape)} (field: priors)")
            return priors.shape[2], f"the priors' last axis has {priors.shape[2]}"
        n = int(getattr(self.adapter, "num_answers", 0) or 0)
        return (n, f"{type(self.adapter).__name__}.num_answers is {n}") if n else (-1, "unknown")

    def _answer(self, batch: dict) -> torch.Tensor:
        field = self.adapter.answer_field
        if field not in batch:
            raise ValueError(f"the batch has no {field!r} field, where {type(self.adapter).__name__} reads the "
                             f"correct answer index of each question (adapter.answer_field); the batch has "
                             f"{sorted(map(str, batch))}. Add it, or pass answer=... (field: {field})")
        return batch[field]

    def _answer_indices(self, batch: dict, answer) -> torch.Tensor:
        """The answers as ``[B]`` int64, or an error naming the field: a field of another shape (token
        ids, one-hot rows) would otherwise fail deep inside a loss or a range check."""
        field = self.adapter.answer_field
        where = f"the {field!r} field" if answer is batch.get(field) else "answer=..."
        try:
            answer = torch.as_tensor(answer)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where} must hold one correct-answer index per question; it cannot be read as a "
                             f"tensor ({e}) (field: {field})") from None
        B = self.adapter.batch_size(batch)
        if answer.dim() != 1 or answer.shape[0] != B or answer.is_floating_point() or answer.is_complex():
            raise ValueError(
                f"{where} must be one integer answer index per question, shape [{B}]; got {answer.dtype} of shape "
                f"{tuple(answer.shape)}. If the field holds something else (VGT's candidate tokens are 'answer'), "
                f"give the adapter the field with the indices (adapter.answer_field) (field: {field})")
        return answer.long()

    def _check_features(self, batch: dict) -> None:
        """NaN/inf in a temporal field: one reduction per field; the row is located only on failure."""
        for name in self.adapter.temporal:
            x = batch.get(name)
            if not torch.is_tensor(x) or not x.is_floating_point() or bool(torch.isfinite(x).all()):
                continue
            r = int(torch.nonzero(~torch.isfinite(x).flatten(1).all(dim=1))[0])
            raise ValueError(f"qid {_qid(batch, self.adapter.qid_field, r)}: field {name!r} contains NaN or inf "
                             f"(field: {name})")

    def _check(self, batch: dict, priors: Optional[torch.Tensor], answer: torch.Tensor, num_candidates: int) -> None:
        qf = self.adapter.qid_field
        if num_candidates > 0:
            bad = torch.nonzero((answer < 0) | (answer >= num_candidates)).flatten()
            if bad.numel():
                r = int(bad[0])
                raise ValueError(f"qid {_qid(batch, qf, r)}: answer index {int(answer[r])} is out of range "
                                 f"for {num_candidates} candidates (field: {self.adapter.answer_field})")
        self._check_features(batch)
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
        self._check_prior_values(batch, priors)

    def _check_prior_values(self, batch: dict, priors: torch.Tensor) -> None:
        """Priors are the teacher's probabilities: finite, in [0, 1], each valid frame's row summing to 1
        within PRIOR_ROW_ATOL (frames past a video's length may be the store's zero padding). One sum
        over the candidates and one min/max; rows are located only when something is wrong."""
        qf = self.adapter.qid_field
        p = priors.float()
        sums = p.sum(dim=2)                                   # NaN/inf anywhere in a row reach its sum
        finite = torch.isfinite(sums)
        lo, hi = p.aminmax() if bool(finite.all()) else (p.new_zeros(()), p.new_zeros(()))
        valid = self.adapter.valid_frames(batch).to(p.device)
        off = ((sums - 1).abs() > PRIOR_ROW_ATOL) & valid
        if bool(finite.all()) and float(lo) >= 0 and float(hi) <= 1 + PRIOR_ROW_ATOL and not bool(off.any()):
            return
        if not bool(finite.all()):
            r = int(torch.nonzero(~finite.all(dim=1))[0])
            raise ValueError(f"qid {_qid(batch, qf, r)}: priors contain NaN or inf (field: priors)")
        what = "must be probabilities (softmax over candidates)"
        outside = ((p < 0) | (p > 1 + PRIOR_ROW_ATOL)).flatten(1).any(dim=1)
        if bool(outside.any()):
            r = int(torch.nonzero(outside)[0])
            raise ValueError(f"qid {_qid(batch, qf, r)}: priors {what}; got values outside [0, 1] "
                             f"(min {float(p[r].min()):.4g}, max {float(p[r].max()):.4g}) (field: priors)")
        r, t = (int(i) for i in torch.nonzero(off)[0])
        raise ValueError(f"qid {_qid(batch, qf, r)}: priors {what}; got rows summing to {float(sums[r, t]):.6g} "
                         f"(frame {t}; each frame's row must sum to 1 within {PRIOR_ROW_ATOL:g}) (field: priors)")

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, batch: dict, priors: Optional[torch.Tensor] = None, answer: Optional[torch.Tensor] = None):
        if not self.training:
            return self.adapter.forward(self.model, batch)
        if answer is None:
            answer = self._answer(batch)
        answer = self._answer_indices(batch, answer)
        if priors is not None:
            priors = torch.as_tensor(priors)               # numpy arrays from the user's own code
        num_candidates, candidates_from = self._num_candidates(batch, priors)
        self._check(batch, priors, answer, num_candidates)
        if priors is not None:
            priors = priors.to(answer.device, torch.float32)
        keep = None
        if self.frames is not None:  # from the clean batch, before any augmentation rewrites it
            keep = self.frames(SelectionInputs(batch, priors, answer, self.adapter.valid_frames(batch)))
        # With techniques, several views share the frame-independent work; a plain wrap is the bare
        # model's own training forward.
        step = Step(self.model, self.adapter, batch, priors, answer, num_candidates, keep, candidates_from,
                    share_text=self.share_text and len(self.techniques) > 0)

        for t in self.techniques:                      # phase 1
            if isinstance(t, Augmentation):
                t.augment(step)
        terms = {}                                     # phase 2
        if not any(t.answer_term is not None for t in self.techniques):
            terms["answer"] = self.task_loss(step.whole().logits, step.target)
        for t in self.techniques:
            for name, value in t.loss_terms(step).items():
                if name in terms:
                    raise ValueError(f"two techniques both produce the loss term {name!r}")
                terms[name] = value
        loss = sum(terms.values()) if terms else step.whole().logits.sum() * 0.0
        return StepOutput(loss=loss, logits=step.whole().logits, terms=terms, keep=keep)

def wrap(model: nn.Module, adapter, techniques: Iterable[Technique] = (), task_loss: Union[str, Callable] = "ce",
         frames: Optional[FrameSelector] = None, share_text: bool = True) -> SparcModel:
    """Wrap ``model`` so that training applies ``techniques`` and evaluation is the bare model.
    ``frames`` names the causal-frame selector of every step (default: the one the techniques
    declare, ``CausalFrames(0.5)`` when they declare none). ``share_text=False`` re-encodes the
    question and candidates in every view (the adapter's ``encode_text`` unused): the same values in
    eval mode, one dropout draw per view in training, and the cost the sharing saves."""
    return SparcModel(model, adapter, techniques, task_loss, frames, share_text)


__all__ = ["wrap", "SparcModel", "ModelOutput", "StepOutput"]
