"""The techniques by the short names the demo's configs give them: "T" temporal guidance (guided CE +
consistency KL), "S" spatial distillation, "TGM" temporal-guided mixup, "mixup" vanilla mixup
(SpARC Table 7's "normal"), "span" and "attention" STAGE's span and attention supervision,
"contrastive" contrastive masking (the self-supervised pre-training paper's 3.2). Each
name's ``build(threshold, **kwargs)`` makes the technique from the config's causal-frame threshold
and the technique's own keyword arguments; a technique that selects no frames of its own ignores the
threshold."""

from __future__ import annotations

from sparc.registry import Registry
from sparc.techniques import (AttentionSupervision, ContrastiveMasking, Mixup, SpanSupervision, SpatialDistillation,
                              TemporalGuidance, TemporalGuidedMixup)

__all__ = ["TECHNIQUES"]

TECHNIQUES = Registry("technique")

TECHNIQUES.register("T", build=lambda threshold, **kw: TemporalGuidance(threshold=threshold, **kw))
TECHNIQUES.register("S", build=lambda threshold, **kw: SpatialDistillation(**kw))
# Mixing weights λ ~ Beta(0.1, 0.1): SpARC Table 6.
TECHNIQUES.register("TGM", build=lambda threshold, **kw: TemporalGuidedMixup(**{"alpha": 0.1, "beta": 0.1, **kw}))
TECHNIQUES.register("mixup", build=lambda threshold, **kw: Mixup(**{"alpha": 0.1, "beta": 0.1, **kw}))
# STAGE's weights (TVQA+ 4.3): L = L_ans + 0.1 L_att + 0.5 L_span.
TECHNIQUES.register("span", build=lambda threshold, **kw: SpanSupervision(**{"weight": 0.5, **kw}))
TECHNIQUES.register("attention", build=lambda threshold, **kw: AttentionSupervision(**{"weight": 0.1, **kw}))
# Paper 002 4.1: λ_cont = 0.1, each token masked with probability 0.2 (ContrastiveMasking's defaults).
TECHNIQUES.register("contrastive", build=lambda threshold, **kw: ContrastiveMasking(**kw))
