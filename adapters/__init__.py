"""Backbone adapters and reference models (installed as ``sparc.adapters``).

Reference models keep the original public classes' constructors, forward signatures and state_dict
keys: HGA and HME (doc-doc/NExT-QA), VGT (sail-sg/VGT), STAGE (jayleicn/TVQAplus), and
MemoryAttention (from its paper; no public code). Each adapter drives the reference model and the
original class; ``FunctionAdapter`` drives any other model.
"""

from sparc.adapters.base import Adapter, FunctionAdapter, as_model_output
from sparc.adapters.hga import HGA, HGAAdapter
from sparc.adapters.hme import HME
from sparc.adapters.memory import MemoryAdapter, MemoryAttention
from sparc.adapters.stage import STAGE, STAGEAdapter
from sparc.adapters.vgt import VGT, VGTAdapter

__all__ = [
    "Adapter", "FunctionAdapter", "as_model_output",
    "HGA", "HGAAdapter", "HME", "MemoryAttention", "MemoryAdapter", "STAGE", "STAGEAdapter", "VGT", "VGTAdapter",
]
