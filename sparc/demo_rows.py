"""The demo's rows named by short names: ``sparc demo --techniques sparc,span,attention,contrastive
--frames gt "teacher&gt" "teacher|gt"``.

The ablation design (docs/synthetic.md, "STAGE's techniques and ground-truth frames"):

- ``--techniques A,B,C``: plain, then the techniques added one at a time in the order given, each row
  keeping the ones before it: ``+A``, ``+A+B``, ``+A+B+C`` (the last row has them all). Names are those of
  :data:`sparc.technique_names.TECHNIQUES`, plus ``sparc`` for SpARC's objective, temporal guidance
  and spatial distillation together (the recipes' ``--techniques sparc``).
- ``--frames CHOICE ...``: every choice other than ``teacher`` adds a row that trains the first
  technique row reading causal frames (``+sparc`` when sparc comes first) on that selection
  (:func:`sparc.selection.frames_choice`): ``+sparc [gt]``, ``+sparc [teacher&gt]``, ...; each is
  compared with plain and, paired by seed, with the same techniques on the teacher's frames.

A row is a :class:`Row` (label, techniques, frames). The demo (:mod:`sparc.demo`) checks every row on a
batch of four before the teacher trains, so one that cannot run on the backbone (a technique whose output
the adapter lacks, frames the batch has no labels for) fails in seconds. This module knows no backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

# Short names that stand for several techniques.
ALIASES: Dict[str, Tuple[Tuple[str, dict], ...]] = {"sparc": (("T", {}), ("S", {}))}


@dataclass(frozen=True)
class Row:
    """One row of the table: its label, its techniques as ``(name, kwargs)`` pairs of
    :data:`~sparc.technique_names.TECHNIQUES`, and the frames choice its causal frames come from."""

    label: str
    techniques: Tuple[Tuple[str, dict], ...]
    frames: str = "teacher"


def known_names() -> Tuple[str, ...]:
    from sparc.technique_names import TECHNIQUES

    return tuple(ALIASES) + TECHNIQUES.names("build")


def parse_names(spec: str) -> List[str]:
    """``"sparc,span"`` -> ``["sparc", "span"]``, every name known, none twice."""
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:
        raise ValueError(f"--techniques {spec!r}: give comma-separated names, e.g. sparc,span,attention,contrastive")
    unknown = [n for n in names if n not in known_names()]
    if unknown:
        raise ValueError(f"--techniques: unknown technique {unknown[0]!r}; choose from {', '.join(known_names())}")
    if len(set(names)) != len(names):
        raise ValueError(f"--techniques {spec!r} names a technique twice")
    return names


def expand(name: str) -> Tuple[Tuple[str, dict], ...]:
    return ALIASES.get(name, ((name, {}),))


def build(techniques: Sequence, threshold: float) -> list:
    """The techniques of ``(name, kwargs)`` pairs or bare names of
    :data:`~sparc.technique_names.TECHNIQUES`, built with the causal-frame ``threshold``."""
    from sparc.technique_names import TECHNIQUES

    made = []
    for item in techniques:
        name, kwargs = (item, {}) if isinstance(item, str) else item
        made.append(TECHNIQUES.get(name, "build")(threshold, **kwargs))
    return made


def reads_frames(techniques: Sequence[Tuple[str, dict]], threshold: float) -> bool:
    """Whether any of the techniques reads the step's causal frames."""
    return any(t.needs_frames for t in build(techniques, threshold))


def technique_rows(spec: str, frames: Sequence[str] = (), threshold: float = 0.5) -> Tuple[Row, ...]:
    """The rows of ``--techniques spec --frames ...`` (the module docstring), plain not included."""
    from sparc.selection import FRAME_CHOICES

    names = parse_names(spec)
    rows, techniques = [], ()
    for i, name in enumerate(names):
        techniques = techniques + expand(name)
        rows.append(Row("+" + "+".join(names[:i + 1]), techniques))
    bad = [f for f in frames if f not in FRAME_CHOICES]
    if bad:
        raise ValueError(f"--frames: unknown choice {bad[0]!r}; choose from {', '.join(FRAME_CHOICES)}")
    others = list(dict.fromkeys(f for f in frames if f != "teacher"))
    if others:
        base = next((r for r in rows if reads_frames(r.techniques, threshold)), None)
        if base is None:
            raise ValueError(f"--frames {' '.join(others)}: none of the rows of --techniques {spec!r} reads causal "
                             f"frames (add sparc, i.e. temporal guidance)")
        rows += [Row(f"{base.label} [{choice}]", base.techniques, choice) for choice in others]
    return tuple(rows)


def row_of(rows: Sequence[Row], configs: Dict[str, tuple], label: str) -> Row:
    """The row ``label``: one of ``rows``, else one of the named ``configs`` (label -> techniques)."""
    for row in rows:
        if row.label == label:
            return row
    if label in configs:
        return Row(label, configs[label])
    raise ValueError(f"unknown demo row {label!r}; choose from {list(configs)} or name techniques (--techniques)")


def build_row(row: Row, threshold: float):
    """``(techniques, frames selector or None)`` for ``sparc.wrap``: built for the teacher's frames
    and, for another choice, pointed at its selection (:func:`sparc.selection.declare_frames`)."""
    from sparc.selection import CausalFrames, declare_frames, frames_choice

    techniques = build(row.techniques, threshold)
    if row.frames == "teacher":
        return techniques, None
    selector = frames_choice(row.frames, threshold)
    return declare_frames(techniques, selector, CausalFrames(threshold)), selector


# ---- which frames each choice selects --------------------------------------------------------------

def span_batch(split) -> dict:
    """The fields of a split's STAGE batches that the ground-truth selections read."""
    first, last = split.span
    return {"ts_label_st": torch.from_numpy(first), "ts_label_ed": torch.from_numpy(last),
            "ts_missing": torch.zeros(len(first), dtype=torch.bool)}


def selection_report(choices: Sequence[str], store, split, threshold: float,
                     groups: Dict[str, np.ndarray]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per frames choice and question group (``groups``: name -> rows), against the true causal frames:
    precision, recall, the share of frames kept and of questions that keep every frame (the teacher's
    fallback when no frame passes its threshold)."""
    from sparc.selection import SelectionInputs, frames_choice

    priors = store.lookup(split.qids)
    answer = torch.from_numpy(split.answer)
    valid = torch.ones(split.causal.shape, dtype=torch.bool)
    inputs = SelectionInputs(span_batch(split), priors, answer, valid)
    out = {}
    for choice in choices:
        keep = frames_choice(choice, threshold)(inputs).numpy()
        out[choice] = {}
        for group, rows in groups.items():
            k, truth = keep[rows], split.causal[rows]
            out[choice][group] = {"precision": float((k & truth).sum() / max(k.sum(), 1)),
                                  "recall": float((k & truth).sum() / max(truth.sum(), 1)),
                                  "kept_fraction": float(k.mean()),
                                  "all_frames_rate": float(k.all(axis=1).mean())}
    return out


def format_selection(report: Dict[str, Dict[str, Dict[str, float]]], split_name: str = "train") -> str:
    lines = [f"causal frames of each --frames choice against the true causal frames ({split_name}; "
             "precision / recall, % of frames kept, % of questions that keep every frame):"]
    groups = list(next(iter(report.values())))
    lines.append(f"  {'frames':<12}" + "".join(f"{g:>28}" for g in groups))
    for choice, by_group in report.items():
        cells = [f"{q['precision']:.2f} / {q['recall']:.2f}, {q['kept_fraction']:4.0%}, {q['all_frames_rate']:4.0%}"
                 for q in by_group.values()]
        lines.append(f"  {choice:<12}" + "".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)


def format_against_teacher(compared: Dict[str, Dict]) -> str:
    lines = ["against the same techniques on the teacher's frames (paired by seed, the same rule):"]
    for label, v in compared.items():
        lines.append(f"  {label}: {v['verdict']} ({v['delta']:+.1f} points vs {v['reference']}: "
                     + ", ".join(f"{d:+.1f}" for d in v["delta_per_seed"]) + ")")
    return "\n".join(lines)


__all__ = ["ALIASES", "Row", "build", "technique_rows", "row_of", "build_row", "selection_report",
           "format_selection", "format_against_teacher"]
