"""Backbone adapters and reference models (installed as ``sparc.adapters``)."""

from sparc.adapters.base import Adapter, FunctionAdapter, as_model_output
from sparc.adapters.hga import HGA, HGAAdapter

__all__ = ["Adapter", "FunctionAdapter", "as_model_output", "HGA", "HGAAdapter"]
