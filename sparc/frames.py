"""Which frames a view sees: causal-frame selection, frame masks, gathering and single-frame draws.

Everything here is a pure function of tensors. A "keep" mask is a bool tensor ``[B, T]``; padding
frames (beyond a video's length) are never kept.
"""

from __future__ import annotations

from typing import Optional

import torch

EMPTY_POLICIES = ("all", "top1", "skip")


def valid_frames(num_frames: int, lengths: Optional[torch.Tensor], batch_size: int, device=None) -> torch.Tensor:
    """``[B, T]`` bool: True for real frames. ``lengths=None`` means every video fills all T frames."""
    if lengths is None:
        return torch.ones(batch_size, num_frames, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]


def _answer_prob(priors: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """``P[b, t, a[b]]`` as ``[B, T]``."""
    if priors.dim() != 3:
        raise ValueError(f"priors must be [B, T, C], got shape {tuple(priors.shape)}")
    answer = torch.as_tensor(answer, device=priors.device).long()
    if answer.shape != priors.shape[:1]:
        raise ValueError(f"answer must be [B] = [{priors.shape[0]}] candidate indices, got shape {tuple(answer.shape)} "
                         "(field: answer)")
    num_candidates = priors.shape[-1]
    if ((answer < 0) | (answer >= num_candidates)).any():
        bad = int(torch.nonzero((answer < 0) | (answer >= num_candidates))[0])
        raise ValueError(f"answer index {int(answer[bad])} of batch row {bad} is out of range for {num_candidates} candidates (field: answer)")
    return priors.gather(2, answer[:, None, None].expand(-1, priors.shape[1], 1)).squeeze(2)


def select_causal_frames(
    priors: torch.Tensor,
    answer: torch.Tensor,
    threshold: float = 0.5,
    empty: str = "all",
    lengths: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal frames of SpARC 3.2.1: ``keep[b, t] = P[b, t, a[b]] > threshold``.

    ``empty`` decides a sample whose frames all fall at or below the threshold: ``"all"`` keeps every
    valid frame (its guided prediction becomes the whole-video prediction), ``"top1"`` keeps its
    single most confident frame, ``"skip"`` keeps nothing (the sample gets no guided term).
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}")
    p_answer = _answer_prob(priors, answer)
    valid = valid_frames(priors.shape[1], lengths, priors.shape[0], priors.device)
    keep = (p_answer > threshold) & valid
    none_kept = ~keep.any(dim=1)
    if none_kept.any():
        if empty == "all":
            keep = torch.where(none_kept[:, None], valid, keep)
        elif empty == "top1":
            best = p_answer.masked_fill(~valid, float("-inf")).argmax(dim=1)
            top1 = torch.nn.functional.one_hot(best, priors.shape[1]).bool() & valid
            keep = torch.where(none_kept[:, None], top1, keep)
    return keep


def top_k_frames(
    priors: torch.Tensor, answer: torch.Tensor, k: int, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Keep the ``k`` valid frames with the highest ``P[b, t, a[b]]`` (fewer if a video is shorter)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    p_answer = _answer_prob(priors, answer)
    valid = valid_frames(priors.shape[1], lengths, priors.shape[0], priors.device)
    scores = p_answer.masked_fill(~valid, float("-inf"))
    k = min(k, priors.shape[1])
    idx = scores.topk(k, dim=1).indices
    keep = torch.zeros_like(valid).scatter_(1, idx, True)
    return keep & valid


def span_frames(
    start: torch.Tensor, end: torch.Tensor, frame_times: torch.Tensor, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Keep the frames whose timestamp lies in the ground-truth span ``[start, end]`` (TVQA/TVQA+).

    ``frame_times`` is ``[T]`` (shared) or ``[B, T]`` seconds. A span that covers no frame keeps the
    frame nearest to its centre, so every sample has at least one frame.
    """
    start = torch.as_tensor(start, dtype=torch.float32)
    end = torch.as_tensor(end, dtype=torch.float32)
    frame_times = torch.as_tensor(frame_times, dtype=torch.float32)
    if frame_times.dim() == 1:
        frame_times = frame_times[None].expand(start.shape[0], -1)
    valid = valid_frames(frame_times.shape[1], lengths, start.shape[0], frame_times.device)
    keep = (frame_times >= start[:, None]) & (frame_times <= end[:, None]) & valid
    centre = (start + end) / 2
    nearest = (frame_times - centre[:, None]).abs().masked_fill(~valid, float("inf")).argmin(dim=1)
    fallback = torch.nn.functional.one_hot(nearest, frame_times.shape[1]).bool()
    return torch.where(keep.any(dim=1, keepdim=True), keep, fallback)


def span_position_frames(
    start: torch.Tensor, end: torch.Tensor, num_frames: int, lengths: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Keep the frames at positions ``start[b] .. end[b]`` (0-indexed, end inclusive): a span already
    laid on the frame axis, as STAGE's ``ts_label_st`` / ``ts_label_ed`` are. Raises ValueError (naming
    the batch row) for a span that is not ``0 <= start <= end`` or that ends past the row's last real
    frame: a label on frames the sample does not have is a bug upstream, not a selection."""
    start = torch.as_tensor(start).long().reshape(-1)
    end = torch.as_tensor(end).long().reshape(-1).to(start.device)
    valid = valid_frames(num_frames, lengths, start.shape[0], start.device)
    last = valid.sum(dim=1) - 1
    bad = (start < 0) | (end < start) | (end > last)
    if bool(bad.any()):
        b = int(torch.nonzero(bad)[0])
        raise ValueError(f"batch row {b}: span ({int(start[b])}, {int(end[b])}) is not 0 <= start <= end <= "
                         f"{int(last[b])} (the row's last real frame)")
    pos = torch.arange(num_frames, device=start.device)[None, :]
    return (pos >= start[:, None]) & (pos <= end[:, None]) & valid


def sample_single_frame(valid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One frame index per sample, uniform over that sample's valid frames (``valid``: ``[B, T]`` bool)."""
    counts = valid.sum(dim=1)
    if (counts == 0).any():
        raise ValueError(f"batch row {int(torch.nonzero(counts == 0)[0])} has no valid frame to sample")
    u = torch.rand(valid.shape[0], generator=generator, device=generator.device).to(valid.device)
    rank = (u * counts).long().clamp(max=counts - 1)  # the rank-th valid frame
    order = torch.cumsum(valid.long(), dim=1) - 1
    return ((order == rank[:, None]) & valid).long().argmax(dim=1)


def one_frame_keep(index: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[B, T]`` keep mask with exactly the frame ``index[b]`` of each sample."""
    return torch.nn.functional.one_hot(index, num_frames).bool()


# ---- subsetting: mask, lengths and bucket modes --------------------------------------------------

def gather_kept(x: torch.Tensor, keep: torch.Tensor, dim: int = 1):
    """Move each sample's kept frames to the front (temporal order preserved), pad to the batch's
    largest kept count with zeros. Returns ``(gathered, lengths)``; ``x``'s batch axis is 0."""
    counts = keep.sum(dim=1)
    width = max(int(counts.max()), 1) if counts.numel() else 1
    # Stable sort puts kept frames first without reordering them.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :width]
    x_moved = x.movedim(dim, 1)
    index = order.to(x.device).view(order.shape + (1,) * (x_moved.dim() - 2)).expand((-1, -1) + x_moved.shape[2:])
    gathered = x_moved.gather(1, index)
    pad = torch.arange(width, device=x.device)[None, :] >= counts.to(x.device)[:, None]
    gathered = gathered.masked_fill(pad.view(pad.shape + (1,) * (x_moved.dim() - 2)), 0)
    return gathered.movedim(1, dim).contiguous(), counts


def bucket_by_count(keep: torch.Tensor):
    """Group batch rows by their number of kept frames: ``[(count, row_indices), ...]``."""
    counts = keep.sum(dim=1)
    return [(int(c), torch.nonzero(counts == c).squeeze(1)) for c in torch.unique(counts).tolist()]


def slice_kept(x: torch.Tensor, keep: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Physically keep the frames of rows that all keep the same number of frames (no padding)."""
    counts = keep.sum(dim=1)
    if counts.numel() and not bool((counts == counts[0]).all()):
        raise ValueError("slice_kept needs every row to keep the same number of frames; bucket first")
    gathered, _ = gather_kept(x, keep, dim)
    return gathered
