"""Composable training-time techniques; each turns a step into named, weighted loss terms."""

from sparc.techniques.attention_supervision import AttentionSupervision
from sparc.techniques.base import Augmentation, Technique, ViewSupervision
from sparc.techniques.contrastive_masking import ContrastiveMasking
from sparc.techniques.spatial_distillation import SpatialDistillation
from sparc.techniques.span_supervision import SpanSupervision
from sparc.techniques.temporal_guidance import TemporalGuidance
from sparc.techniques.temporal_guided_mixup import Mixup, TemporalGuidedMixup

__all__ = ["Technique", "Augmentation", "ViewSupervision", "TemporalGuidance", "SpatialDistillation", "TemporalGuidedMixup", "Mixup",
           "SpanSupervision", "AttentionSupervision", "ContrastiveMasking"]
