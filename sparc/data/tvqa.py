"""TVQA and TVQA+ questions (jayleicn/TVQA, jayleicn/TVQAplus), and STAGE's frame sampling and span
labels (``TVQAplus@d2dc721: utils.get_all_img_ids``, ``tvqa_dataset.get_ts_label``).

The two releases differ where readers trip:

- TVQA ``tvqa_{split}.jsonl``: one JSON object per line, ``answer_idx`` an **int**, ``ts`` a **string**
  ``"76.01-84.2"`` (``"NaN-NaN"`` where no span was annotated; TVQA's ``convert_ts`` then uses
  [10, 30], and the table says so in ``ts_missing``), ``show_name``;
- TVQA+ ``tvqa_plus_{split}.json``: a JSON list, ``answer_idx`` a **string**, ``ts`` a **list**
  ``[st, ed]`` in seconds (refined, not TVQA's), ``bbox`` ``{frame: [{img_id, top, left, width, height,
  label}]}`` with frames 1-indexed at 3 fps.

Test splits have no ``answer_idx`` (``answer`` -1) and, for TVQA+, no ``ts`` (``ts_missing``).
"""

from __future__ import annotations

import json
import math
import os
from typing import List, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]
MISSING_SPAN = (10.0, 30.0)     # TVQA's convert_ts for a NaN span
FPS = 3                         # released frames
STAGE_INTERVAL = 6              # STAGE samples every 6th 3-fps frame (0.5 fps)
MAX_FRAMES = 300                # and reads at most the first 300 3-fps frames


def _entries(path: PathLike) -> List[Tuple[str, dict]]:
    text = open(path).read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        return [(f"entry {n}", e) for n, e in enumerate(data)]
    out = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append((f"line {line_no}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not JSON ({e})") from None
    return out


def _span(ts, where: str) -> Tuple[float, float, bool]:
    """(start, end, missing) from TVQA's ``"st-ed"`` string or TVQA+'s list."""
    if ts is None:
        return MISSING_SPAN + (True,)
    if isinstance(ts, str):
        parts = ts.split("-")
        if len(parts) != 2:
            raise ValueError(f"{where}: ts {ts!r} is not 'start-end' (field: ts)")
        try:
            st, ed = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{where}: ts {ts!r} is not 'start-end' in seconds (field: ts)") from None
    elif isinstance(ts, (list, tuple)) and len(ts) == 2:
        st, ed = float(ts[0]), float(ts[1])
    else:
        raise ValueError(f"{where}: ts {ts!r} is neither 'start-end' nor [start, end] (field: ts)")
    if math.isnan(st) or math.isnan(ed):
        return MISSING_SPAN + (True,)
    if ed < st:
        raise ValueError(f"{where}: ts ends ({ed}) before it starts ({st}) (field: ts)")
    return st, ed, False


def read_tvqa_table(path: PathLike):
    """TVQA (jsonl) or TVQA+ (JSON list) questions as a ``datasets.Dataset`` in file order, every
    question kept: ``qid`` (string), ``vid_name``, ``show_name`` ("" when absent), ``question``,
    ``candidates`` (5), ``answer`` (int; -1 without ``answer_idx``), ``ts_start``, ``ts_end`` (seconds),
    ``ts_missing``, and ``bbox`` (TVQA+'s boxes as JSON text; "{}" for TVQA)."""
    import datasets

    columns = {k: [] for k in ("qid", "vid_name", "show_name", "question", "candidates", "answer", "ts_start",
                               "ts_end", "ts_missing", "bbox")}
    seen = set()
    for where, e in _entries(path):
        qid = str(e.get("qid", "")) if isinstance(e, dict) else ""
        where = f"{path}, {where} (qid {qid or '?'})"
        for field in ("qid", "vid_name", "q", "a0", "a1", "a2", "a3", "a4"):
            if not isinstance(e, dict) or e.get(field) in (None, ""):
                raise ValueError(f"{where}: no {field!r} (field: {field})")
        if qid in seen:
            raise ValueError(f"{where}: question {qid} appears twice (field: qid)")
        seen.add(qid)
        answer = e.get("answer_idx")
        if answer is None:
            answer = -1
        elif not str(answer).isdigit() or int(answer) > 4:          # an int in TVQA, a string in TVQA+
            raise ValueError(f"{where}: answer_idx {answer!r} is not a candidate index 0..4 (field: answer_idx)")
        st, ed, missing = _span(e.get("ts"), where)
        columns["qid"].append(qid)
        columns["vid_name"].append(str(e["vid_name"]))
        columns["show_name"].append(str(e.get("show_name", "")))
        columns["question"].append(str(e["q"]))
        columns["candidates"].append([str(e[f"a{k}"]) for k in range(5)])
        columns["answer"].append(int(answer))
        columns["ts_start"].append(st)
        columns["ts_end"].append(ed)
        columns["ts_missing"].append(missing)
        columns["bbox"].append(json.dumps(e.get("bbox", {})))
    return datasets.Dataset.from_dict(columns)


def stage_frame_ids(first_annotated: int, num_frames: int, interval: int = STAGE_INTERVAL) -> List[int]:
    """The 1-indexed 3-fps frames STAGE reads (``get_all_img_ids``): every ``interval``-th, in the phase
    that includes the first annotated frame, up to the clip's last frame and at most frame 300."""
    start = first_annotated % interval or interval
    return list(range(start, min(num_frames + 1, MAX_FRAMES + 1), interval))


def span_label(start: float, end: float, num_frames: int, frame_ids: Sequence[int], fps: int = FPS) -> Tuple[int, int]:
    """STAGE's span label (``get_ts_label``): the span in seconds as (first, last) positions in
    ``frame_ids``. Times become 3-fps frame numbers (rescaled to 300 frames for a longer clip), searched
    in the sampled ids, clamped to the last position, the end made inclusive unless equal to the start.
    STAGE passes the sampled frames as 0-indexed positions (``indices - 1`` of ``stage_frame_ids``), so
    pass ``[f - 1 for f in stage_frame_ids(...)]`` to get its labels (:mod:`sparc.data.tvqa_stage` does)."""
    if num_frames > MAX_FRAMES:
        start, end = (MAX_FRAMES / num_frames * fps * x for x in (start, end))
    else:
        start, end = fps * start, fps * end
    ids = np.asarray(frame_ids)
    first = int(np.searchsorted(ids, start, side="left"))
    last = int(np.searchsorted(ids, end, side="right"))
    if not first < len(ids):
        first -= 1
    if not last < len(ids):
        last -= 1
    return (first, last) if first == last else (first, last - 1)


__all__ = ["read_tvqa_table", "stage_frame_ids", "span_label", "MISSING_SPAN"]
