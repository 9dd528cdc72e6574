"""The memory-attention network (paper 003; no public code, so no original-code fixture): its demo size."""

from __future__ import annotations

from sparc.backbones import BACKBONES
from sparc.backbones.base import DemoBackbone, appearance_motion_batch


def build_memory(bench, hidden: int):
    """A small memory-attention model (multiple choice; memories and hidden size shrunk)."""
    from sparc.adapters.memory import MemoryAttention

    d = bench.config.feature_dim
    return MemoryAttention(appearance_dim=d, motion_dim=d, hidden_size=hidden, word_dim=hidden,
                           video_memory_size=8, text_memory_size=8, max_len_q=8, task="multiple_choice",
                           bert_dim=bench.config.word_dim)


def memory_adapter():
    from sparc.adapters.memory import MemoryAdapter

    return MemoryAdapter()


BACKBONES.register("memory", title="memory-attention",
                   demo=DemoBackbone(build_memory, memory_adapter, appearance_motion_batch))
