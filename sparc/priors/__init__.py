"""Teacher-prior storage: sharded, atomic, memory-mapped (see :mod:`sparc.priors.store`)."""

from .store import PriorStore, PriorStoreWriter

__all__ = ["PriorStore", "PriorStoreWriter"]
