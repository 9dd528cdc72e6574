"""Image-QA teachers: anything with ``encode_images`` and ``score`` (see :class:`ImageQATeacher`).

``ALBEF``, ``ALBEFTeacher``, ``load_albef_checkpoint`` (``sparc.teachers.albef``) and ``BlipTeacher``
(``sparc.teachers.hf_vqa``) are imported on first use: they need timm / transformers, which
``import sparc`` does not load.
"""

from sparc.teachers.base import ImageQATeacher
from sparc.teachers.frame_qa import FrameQATeacher

_LAZY = {"ALBEF": "sparc.teachers.albef", "ALBEFTeacher": "sparc.teachers.albef",
         "load_albef_checkpoint": "sparc.teachers.albef", "BlipTeacher": "sparc.teachers.hf_vqa"}

__all__ = ["ImageQATeacher", "FrameQATeacher", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparc.teachers' has no attribute {name!r}")
