"""The adapter protocol: the only place that knows how to call one backbone family.

An adapter says which input fields carry the frame axis (``temporal``), which carry the candidate
axis (``candidate``) and the question (``question``, open-ended mixup), how to run the model
(``forward``), and how the model can see a subset of frames (``subset_mode``):

- ``"mask"``: keep T and narrow a frame mask the model honours exactly (``mask_field``);
- ``"lengths"``: gather kept frames to the front, pad, and pass kept counts (``lengths_field``);
- ``"bucket"``: group rows by kept count and run each group physically sliced, no padding at all.

Whatever the mode, a view whose rows all keep the same number of frames (a single frame, say) is
run physically sliced: a length-1 input, never T frames with T-1 masked.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Dict, Iterable, Optional

import torch

from sparc.frames import bucket_by_count, gather_kept, valid_frames
from sparc.outputs import FIELDS as OUTPUT_FIELDS, ModelOutput, gather_positions, scatter_rows, to_video_frames
from sparc.rows import select_rows

SUBSET_MODES = ("mask", "lengths", "bucket")


def as_model_output(result) -> ModelOutput:
    """Accept a ModelOutput, a logits tensor, or a tuple whose first item is the logits."""
    if isinstance(result, ModelOutput):
        return result
    if torch.is_tensor(result):
        return ModelOutput(logits=result)
    if isinstance(result, (tuple, list)) and result and torch.is_tensor(result[0]):
        return ModelOutput(logits=result[0])
    raise TypeError(f"cannot read logits from a model output of type {type(result).__name__}")


class Adapter:
    """Base class with the default subset machinery driven by ``temporal``.

    Subclasses set the class attributes and implement :meth:`forward`. Batches are dicts; every
    tensor whose first axis is the batch size (and every list of that length) is a per-sample field.
    """

    temporal: Dict[str, int] = {}
    candidate: Dict[str, int] = {}
    question: Dict[str, int] = {}
    subset_mode: str = "bucket"
    lengths_field: Optional[str] = None
    mask_field: Optional[str] = None
    answer_field: str = "answer"
    qid_field: str = "qid"
    open_ended: bool = False
    # A single-frame view can leave temporal parameters without gradient; DDP must then be told.
    find_unused_parameters: bool = False
    # The ModelOutput fields this adapter's forward fills: a technique that supervises another field
    # (span_logits, attention, hypothesis) is refused at wrap time.
    outputs: frozenset = frozenset({"logits"})
    # Contrastive masking (paper 002, 3.2): what ``mask_text`` hands its masker, "ids" (token ids: the
    # tokenizer's mask id replaces a token) or "features" (pre-extracted token features: the technique's
    # learned mask vector replaces a row); None for an adapter without ``mask_text``.
    text_tokens: Optional[str] = None

    # ---- what subclasses provide --------------------------------------------------------------
    def forward(self, model, inputs: dict) -> ModelOutput:
        raise NotImplementedError

    def mode_for(self, model) -> str:
        """The subset mode used for ``model`` (an adapter driving two classes may differ per class)."""
        return self.subset_mode

    def encode_text(self, model, inputs: dict) -> Optional[dict]:
        """The part of ``model``'s forward that does not depend on the frames (question and candidate
        encodings), as a dict of batch-first tensors (or lists of them), or None when the forward cannot
        be split. A training step computes it once and passes it to every view's ``forward(model,
        inputs, text=...)``; an adapter that returns a dict here must accept that keyword."""
        return None

    def mask_text(self, inputs: dict, which: torch.Tensor, masker: Callable) -> dict:
        """Contrastive masking's anchor input: the batch reduced to one hypothesis per row, candidate
        ``which[b]`` of row ``b`` (the ground truth), its text passed through ``masker``, such that
        ``forward(model, result).hypothesis`` is that hypothesis' masked representation ``[B, 1, D]``.

        ``masker(tokens, maskable, mask_id=None) -> tokens``: ``tokens`` the hypothesis' text, ``[B, L]``
        token ids or ``[B, L, E]`` token features; ``maskable [B, L]`` bool, its real tokens (never
        padding; special tokens such as [CLS] / [SEP] left out where the adapter can tell them);
        ``mask_id`` the tokenizer's mask token, for ids. The masker draws the tokens to replace from the
        technique's own generator. Every candidate field keeps its candidate axis, of size 1
        (:func:`one_candidate`), and the answer field becomes 0. An adapter that implements this sets
        :attr:`text_tokens` and lists ``"hypothesis"`` in :attr:`outputs`."""
        raise NotImplementedError(f"{type(self).__name__} has no mask_text hook (contrastive masking)")

    # ---- shapes -------------------------------------------------------------------------------
    def _first_temporal(self):
        if not self.temporal:
            raise ValueError(f"{type(self).__name__} declares no temporal field")
        return next(iter(self.temporal.items()))

    def batch_size(self, inputs: dict) -> int:
        name, _ = self._first_temporal()
        return inputs[name].shape[0]

    def num_frames(self, inputs: dict) -> int:
        name, dim = self._first_temporal()
        return inputs[name].shape[dim]

    def valid_frames(self, inputs: dict) -> torch.Tensor:
        """``[B, T]`` True for real frames (from the lengths or mask field when the batch has one)."""
        name, _ = self._first_temporal()
        device = inputs[name].device
        if self.lengths_field and inputs.get(self.lengths_field) is not None:
            return valid_frames(self.num_frames(inputs), inputs[self.lengths_field], self.batch_size(inputs), device)
        if self.mask_field and inputs.get(self.mask_field) is not None:
            return inputs[self.mask_field].bool()
        return valid_frames(self.num_frames(inputs), None, self.batch_size(inputs), device)

    # ---- batch plumbing -----------------------------------------------------------------------
    def select_batch(self, inputs: dict, rows: torch.Tensor) -> dict:
        """The per-sample fields restricted to ``rows`` (other fields pass through)."""
        B = self.batch_size(inputs)
        out = {}
        for key, value in inputs.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == B:
                out[key] = value[rows.to(value.device)]
            elif isinstance(value, (list, tuple)) and len(value) == B:
                out[key] = [value[i] for i in rows.tolist()]
            else:
                out[key] = value
        return out

    def slice_frames(self, inputs: dict, keep: torch.Tensor) -> dict:
        """Every temporal field physically restricted to the kept frames (rows must keep equally many)."""
        out = dict(inputs)
        for name, dim in self.temporal.items():
            if inputs.get(name) is not None:
                out[name], _ = gather_kept(inputs[name], keep.to(inputs[name].device), dim)
        if self.lengths_field and inputs.get(self.lengths_field) is not None:
            out[self.lengths_field] = keep.sum(dim=1).to(inputs[self.lengths_field])
        if self.mask_field and self.mask_field not in self.temporal and inputs.get(self.mask_field) is not None:
            out[self.mask_field], _ = gather_kept(inputs[self.mask_field], keep.to(inputs[self.mask_field].device), 1)
        return out

    def subset(self, inputs: dict, keep: torch.Tensor) -> dict:
        """The inputs restricted to ``keep`` for the mask and lengths modes (bucket mode runs groups)."""
        mode = self.subset_mode
        if mode == "mask":
            out = dict(inputs)
            mask = inputs.get(self.mask_field)
            keep = keep.to(inputs[self._first_temporal()[0]].device)
            out[self.mask_field] = keep.float() if mask is None else (mask.bool() & keep).to(mask.dtype)
            return out
        if mode == "lengths":
            out = dict(inputs)
            for name, dim in self.temporal.items():
                if inputs.get(name) is not None:
                    out[name], counts = gather_kept(inputs[name], keep.to(inputs[name].device), dim)
            out[self.lengths_field] = keep.sum(dim=1).to(keep.device)
            return out
        raise ValueError(f"subset() serves the mask and lengths modes; {type(self).__name__} uses {mode!r}")

    def forward_with_text(self, model, inputs: dict, text: Optional[dict]) -> ModelOutput:
        """``forward``, reusing the frame-independent work ``text`` of :meth:`encode_text` when given."""
        return self.forward(model, inputs) if text is None else self.forward(model, inputs, text=text)

    def forward_subset(self, model, inputs: dict, keep: torch.Tensor, text: Optional[dict] = None) -> ModelOutput:
        """Run ``model`` on the kept frames of every row (each row keeps at least one frame). Every
        field comes back in batch order, temporal fields laid over the video's T frames (the frames not
        shown hold :data:`sparc.outputs.UNSEEN`), whichever mode ran. ``text``: the rows'
        :meth:`encode_text`, reused by every group."""
        counts = keep.sum(dim=1)
        if (counts == 0).any():
            raise ValueError(f"batch row {int(torch.nonzero(counts == 0)[0])} keeps no frame")
        where = f"{type(self).__name__} subset"
        if bool((counts == counts[0]).all()):
            out = self.forward_with_text(model, self.slice_frames(inputs, keep), text)
            return to_video_frames(out, keep, *gather_positions(keep, int(counts[0])), where=where)
        mode = self.mode_for(model)
        if mode == "mask":
            out = self.forward_with_text(model, self._with_mode("mask").subset(inputs, keep), text)
            positions = torch.arange(keep.shape[1], device=keep.device).expand(keep.shape[0], -1)
            return to_video_frames(out, keep, positions, keep, where=where)
        if mode == "lengths":
            out = self.forward_with_text(model, self._with_mode("lengths").subset(inputs, keep), text)
            return to_video_frames(out, keep, *gather_positions(keep, int(counts.max())), where=where)
        if mode != "bucket":
            raise ValueError(f"unknown subset mode {mode!r}; expected one of {SUBSET_MODES}")
        parts = []
        for count, rows in bucket_by_count(keep):
            group_keep = keep[rows]
            group = self.slice_frames(self.select_batch(inputs, rows), group_keep)
            out = self.forward_with_text(model, group, select_rows(text, rows))
            parts.append((rows, to_video_frames(out, group_keep, *gather_positions(group_keep, count), where=where)))
        return scatter_rows(parts, keep.shape[0], keep)

    def with_subset_mode(self, mode: str) -> "Adapter":
        """A copy of this adapter that runs every subset view in ``mode``, whatever ``mode_for`` would
        pick for the model. All modes give the same outputs on a model that honours its mask or lengths
        (in training, a model with BatchNorm is the exception: its batch statistics are taken over the
        rows each mode runs together, e.g. one bucket group, so the modes differ slightly); they differ in cost, which depends on the backbone and the device (docs/benchmarks.md measures
        the adapters' own mode against bucket mode per backbone). Check a forced mask or lengths mode
        with ``sparc.contract.check_subset_equals_slicing``."""
        if mode not in SUBSET_MODES:
            raise ValueError(f"unknown subset mode {mode!r}; expected one of {SUBSET_MODES}")
        if mode == "lengths" and not self.lengths_field:
            raise ValueError(f"{type(self).__name__} has no lengths_field: it cannot run in lengths mode")
        if mode == "mask" and not self.mask_field:
            raise ValueError(f"{type(self).__name__} has no mask_field: it cannot run in mask mode")
        forced = copy.copy(self)
        forced.subset_mode = mode
        forced.mode_for = lambda model: mode
        return forced

    def _with_mode(self, mode: str) -> "Adapter":
        if self.subset_mode == mode:
            return self
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.subset_mode = mode
        return clone


@contextlib.contextmanager
def served(module, lookup: Callable):
    """While open, ``module`` answers a call from ``lookup(args, kwargs)`` when that returns a result
    (work a training step already did on the same input), and computes it otherwise. Only the
    instance's ``forward`` is replaced, so an original class's code stays untouched."""
    compute = module.forward

    def forward(*args, **kwargs):
        result = lookup(args, kwargs)
        return compute(*args, **kwargs) if result is None else result

    module.forward = forward
    try:
        yield
    finally:
        del module.forward   # the instance attribute: the class's forward is back


def same_tensor(a, b) -> bool:
    """Whether ``a`` and ``b`` hold the same values (the same view of one storage, or equal)."""
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return bool(torch.equal(a.to(b.device), b))


def one_candidate(adapter: Adapter, inputs: dict, which: torch.Tensor) -> dict:
    """``inputs`` with every candidate field (``adapter.candidate``) narrowed to candidate ``which[b]``
    of row ``b``, the candidate axis kept (size 1), and the answer field 0: the one hypothesis left."""
    out = dict(inputs)
    for name, dim in adapter.candidate.items():
        value = inputs.get(name)
        if value is None:
            continue
        value = torch.as_tensor(value)
        shape = [value.shape[0]] + [1] * (value.dim() - 1)
        index = which.to(value.device).long().view(shape).expand(*value.shape[:dim], 1, *value.shape[dim + 1:])
        out[name] = value.gather(dim, index)
    answer = inputs.get(adapter.answer_field)
    if torch.is_tensor(answer):
        out[adapter.answer_field] = torch.zeros_like(answer)
    return out


@contextlib.contextmanager
def scorer_inputs(module):
    """While open, the input of every call of ``module`` (its first argument), in call order: the
    per-candidate representation a backbone's answer scorer reads, recorded without touching the
    model's code. ``module`` None records nothing."""
    seen: list = []
    if module is None:
        yield seen
        return
    handle = module.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


def per_candidate(seen: list, batch_size: int) -> Optional[torch.Tensor]:
    """``[B, C, D]`` from the scorer inputs :func:`scorer_inputs` recorded: a tuple is concatenated on
    its last axis (HGA's BLOCK fusion reads ``(global, local)``); a ``(B, D)`` call is one candidate
    (the originals' loops), ``(B, C, D)`` or candidate-minor ``(B * C, D)`` are C. None if none."""
    parts = []
    for x in seen:
        if isinstance(x, (tuple, list)):
            x = torch.cat(list(x), dim=-1)
        parts.append(x.reshape(batch_size, -1, x.shape[-1]))
    return torch.cat(parts, dim=1) if parts else None


class FunctionAdapter(Adapter):
    """Drive any model with a function: ``FunctionAdapter(lambda m, x: m(x["video"], x["question"]),
    temporal={"video": 1}, subset="bucket")``. The function returns logits, a tuple starting with
    them, or a :class:`ModelOutput`; ``outputs`` names the fields it fills (default logits only; e.g.
    ``("logits", "span_logits")`` for SpanSupervision).

    ``candidate={field: dim}`` names the inputs that carry the answer candidates, for a model that takes
    them as inputs: TemporalGuidedMixup then appends the partner's candidates (EIGV's concat). A model
    that scores a fixed set of C answers from video and question alone declares none, and the mixups
    mix its labels over those C instead."""

    def __init__(
        self,
        forward_fn: Callable,
        temporal: Dict[str, int],
        subset: str = "bucket",
        *,
        candidate: Optional[Dict[str, int]] = None,
        question: Optional[Dict[str, int]] = None,
        lengths_field: Optional[str] = None,
        mask_field: Optional[str] = None,
        answer_field: str = "answer",
        qid_field: str = "qid",
        open_ended: bool = False,
        find_unused_parameters: bool = False,
        outputs: Iterable[str] = ("logits",),
    ):
        if subset not in SUBSET_MODES:
            raise ValueError(f"subset must be one of {SUBSET_MODES}, got {subset!r}")
        if subset == "lengths" and not lengths_field:
            raise ValueError("subset='lengths' needs lengths_field (the input the model reads lengths from)")
        if subset == "mask" and not mask_field:
            raise ValueError("subset='mask' needs mask_field (the frame mask the model honours)")
        self.forward_fn = forward_fn
        self.temporal = dict(temporal)
        self.subset_mode = subset
        self.candidate = dict(candidate or {})
        self.question = dict(question or {})
        self.lengths_field = lengths_field
        self.mask_field = mask_field
        self.answer_field = answer_field
        self.qid_field = qid_field
        self.open_ended = open_ended
        self.find_unused_parameters = find_unused_parameters
        unknown = set(outputs) - set(OUTPUT_FIELDS)
        if unknown or "logits" not in outputs:
            raise ValueError(f"outputs names the ModelOutput fields the function fills, 'logits' first among "
                             f"{OUTPUT_FIELDS}; got {tuple(outputs)}")
        self.outputs = frozenset(outputs)

    def forward(self, model, inputs: dict) -> ModelOutput:
        return as_model_output(self.forward_fn(model, inputs))
