"""Choosing a fixed number of frames from a variable-length per-frame feature sequence."""

from __future__ import annotations

import numpy as np


def uniform_frames(available: int, count: int) -> np.ndarray:
    """``count`` frame positions spread evenly over ``available`` frames (both ends included,
    rounded down; a shorter sequence repeats frames). The readers that sample per-frame features
    use it, and the teacher's priors must be extracted on the same positions (each prior row is
    one model frame)."""
    if available < 1 or count < 1:
        raise ValueError(f"need at least one frame to sample from and to, got {available} -> {count}")
    return np.floor(np.linspace(0, available - 1, count)).astype(np.int64)


__all__ = ["uniform_frames"]
