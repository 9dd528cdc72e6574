"""The backbones sparc's entry points know by name (``sparc demo --backbone``, the benchmarks, the
adapter contract tests), in one registry, :data:`BACKBONES`.

Each module of this package registers one backbone: its ``title``, its ``demo`` build
(:class:`~sparc.backbones.base.DemoBackbone`: the model at demo size, its adapter, its batches of the
synthetic benchmark) and the ``fixtures`` of the original code it rebuilds (``config.json`` model
name -> builder, read by :func:`sparc.testing.original_fixture`). ``benchmarks/backbones/<name>.py``
adds the ``paper`` size. Every module here is imported with the package, so a new backbone is a new
file; the adapters themselves are imported only when a builder runs.
"""

import importlib
import pkgutil

from sparc.registry import Registry

__all__ = ["BACKBONES"]

BACKBONES = Registry("backbone")

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
