"""The benchmarks' official metrics, ported arithmetic for arithmetic (no benchmark code is imported):
one module per benchmark, every function importable from here."""

from sparc.metrics.agqa import agqa_accuracy
from sparc.metrics.dramaqa import dramaqa_accuracy
from sparc.metrics.msqa import msqa_accuracy
from sparc.metrics.nextqa import NEXTQA_GROUPS, NEXTQA_TYPES, atp_hard_accuracy, nextqa_accuracy, read_nextqa_rows
from sparc.metrics.tgifqa import tgifqa_metrics
from sparc.metrics.tvqaplus import tvqaplus_metrics

__all__ = ["nextqa_accuracy", "atp_hard_accuracy", "tgifqa_metrics", "tvqaplus_metrics", "msqa_accuracy", "dramaqa_accuracy", "agqa_accuracy",
           "read_nextqa_rows", "NEXTQA_GROUPS", "NEXTQA_TYPES"]
