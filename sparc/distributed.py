"""Leaving a multi-process (``accelerate launch``) run cleanly."""

from __future__ import annotations

import sys


def end_process_group() -> None:
    """Shut a multi-process run's process group down before the interpreter exits: left to exit, gloo's
    threads can be torn down while still joinable and abort the process (SIGABRT after a finished run)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


__all__ = ["end_process_group"]
