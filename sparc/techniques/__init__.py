"""Composable training-time techniques; each turns a step into named, weighted loss terms."""

from sparc.techniques.base import Augmentation, Technique
from sparc.techniques.contrastive_masking import ContrastiveMasking
from sparc.techniques.spatial_distillation import SpatialDistillation
from sparc.techniques.temporal_guidance import TemporalGuidance
from sparc.techniques.temporal_guided_mixup import Mixup, TemporalGuidedMixup

__all__ = ["Technique", "Augmentation", "TemporalGuidance", "SpatialDistillation", "TemporalGuidedMixup", "Mixup",
           "ContrastiveMasking"]
