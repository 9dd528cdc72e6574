"""Image-QA teachers: anything with ``encode_images`` and ``score`` (see :class:`ImageQATeacher`)."""

from sparc.teachers.base import ImageQATeacher
from sparc.teachers.frame_qa import FrameQATeacher

__all__ = ["ImageQATeacher", "FrameQATeacher"]
