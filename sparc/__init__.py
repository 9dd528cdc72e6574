"""sparc: training-time spatial and temporal guidance for any video question-answering model.

``import sparc`` stays light (torch, numpy, einops only); the training loop, the teachers and the
dataset readers import accelerate / transformers / timm / datasets where they are used.
"""

from sparc.frames import sample_single_frame, select_causal_frames, span_frames, top_k_frames
from sparc.mixup import mixup, temporal_guided_mixup
from sparc.outputs import ModelOutput, StepOutput
from sparc.priors import PriorStore
from sparc.selection import CausalFrames, FrameSelector, Intersection, SpanFrames, TopKFrames, Union
from sparc.step import Step
from sparc.techniques import (AttentionSupervision, Augmentation, ContrastiveMasking, Mixup, SpanSupervision,
                              SpatialDistillation, TemporalGuidance, TemporalGuidedMixup, Technique)
from sparc.wrap import SparcModel, wrap

__version__ = "0.1.0"

__all__ = [
    "wrap", "SparcModel", "ModelOutput", "StepOutput", "PriorStore",
    "Technique", "Augmentation", "Step", "TemporalGuidance", "SpatialDistillation", "TemporalGuidedMixup", "Mixup",
    "SpanSupervision", "AttentionSupervision", "ContrastiveMasking",
    "FrameSelector", "CausalFrames", "TopKFrames", "SpanFrames", "Intersection", "Union",
    "select_causal_frames", "top_k_frames", "span_frames", "sample_single_frame",
    "mixup", "temporal_guided_mixup",
]
