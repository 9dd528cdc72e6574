"""Questions as the teacher jobs read them (``sparc extract-priors``, ``sparc teacher-finetune``,
``sparc diagnose-misfocus``): one record per question with its video, text, candidates and answer.

Readers for the released annotation layouts (format picked from the file):

* NExT-QA / ATP-hard CSV: ``video, question, answer, qid, type, a0..a4`` (``qid`` counts within a
  video, so the record's qid is ``<video>_<qid>``, as NExT-QA's own loaders key it);
* TGIF-QA tab-separated CSV: Action/Transition ``gif_name, question, a1..a5, answer, vid_id, key``;
  FrameQA ``gif_name, question, answer, type, vid_id, key, ...`` (open-ended); qid ``<vid_id>_<key>``;
* TVQA / TVQA+ JSON: ``qid, q, a0..a4, answer_idx, vid_name``;
* MSVD-QA / MSRVTT-QA JSON (Xu et al. 2017): a list of ``id, video_id, question, answer`` (open-ended;
  MSRVTT-QA's entries add ``category_id``, which tells the two apart); qid ``str(id)``, video
  ``vid<video_id>`` for MSVD-QA (the names its ``youtube_mapping.txt`` gives the YouTube clips, and
  the ``vid<N>.avi`` files Xu et al.'s feature extraction reads) and ``video<video_id>`` for
  MSRVTT-QA (MSR-VTT's own ``video<N>.mp4``); the question's first word is its ``type``;
* AGQA 2.0 ``{split}_balanced.txt``: one JSON object keyed by question id (``question, answer,
  video_id, ans_type, ...``), open-ended, decoded one question at a time
  (:func:`sparc.data.agqa.iter_questions`); video the Charades id, type the ``ans_type``;
* DramaQA ``AnotherMissOhQA_{split}_set.json``: a list of ``qid, que, answers (5), correct_idx, vid,
  shot_contained, q_level_logic``; qid ``str(qid)``, video the frame folder of the question's shot or
  shots (:func:`sparc.data.dramaqa_features.frames_key`), type ``level_<q_level_logic>``;
* anything else as JSON (a list) or JSON lines with ``qid, video, question`` and either
  ``candidates`` (a list) with ``answer`` an index, or an open-ended ``answer`` string.

Open-ended datasets have no per-question candidates: every question is scored against one global
answer set, the answers that occur more than once in train (SpARC 3.1, :func:`open_answer_set`).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = ["VideoQuestion", "read_questions", "group_by_video", "open_answer_set", "answers_by_count", "with_answer_set"]


@dataclass(frozen=True)
class VideoQuestion:
    """``answer``: index into ``candidates`` (multiple choice) or the answer string (open-ended,
    ``candidates is None`` until :func:`with_answer_set` gives it the global set)."""

    qid: str
    video: str
    question: str
    candidates: Optional[Tuple[str, ...]]
    answer: Union[int, str]
    type: Optional[str] = None
    fields: Dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def answer_index(self) -> int:
        if isinstance(self.answer, int):
            return self.answer
        if self.candidates is None:
            raise ValueError(f"qid {self.qid!r}: open-ended question without an answer set (field: candidates)")
        try:
            return self.candidates.index(self.answer)
        except ValueError:
            raise ValueError(f"qid {self.qid!r}: answer {self.answer!r} is not in the answer set "
                             f"(field: answer)") from None

    @property
    def answer_text(self) -> str:
        return self.answer if isinstance(self.answer, str) else self.candidates[self.answer]


def _require(row: Dict[str, str], name: str, qid: str, path) -> str:
    value = row.get(name)
    if value is None or str(value).strip() == "":
        raise ValueError(f"{path}: qid {qid!r}: missing or empty field {name!r}")
    return str(value).strip()


def _choice(row, answer_field: str, candidates: Sequence[str], qid: str, path, one_based: bool = False) -> int:
    text = _require(row, answer_field, qid, path)
    try:
        index = int(text) - (1 if one_based else 0)
    except ValueError:
        # TGIF-QA Action/Transition give the answer as an index; some exports give the text instead.
        if text in candidates:
            return list(candidates).index(text)
        raise ValueError(f"{path}: qid {qid!r}: answer {text!r} is neither an index nor a candidate "
                         f"(field: {answer_field})") from None
    if not 0 <= index < len(candidates):
        raise ValueError(f"{path}: qid {qid!r}: answer index {text} is out of range for {len(candidates)} "
                         f"candidates (field: {answer_field})")
    return index


def _nextqa(row, path) -> VideoQuestion:
    video = _require(row, "video", "?", path)
    qid = f"{video}_{_require(row, 'qid', '?', path)}"
    cands = tuple(_require(row, f"a{i}", qid, path) for i in range(5))
    return VideoQuestion(qid, video, _require(row, "question", qid, path), cands,
                         _choice(row, "answer", cands, qid, path), row.get("type") or None, dict(row))


def _tgif(row, path) -> VideoQuestion:
    # Neither column is unique on its own in every task file (Action repeats vid_id, Transition and
    # FrameQA repeat key); the pair is.
    qid = f"{_require(row, 'vid_id', '?', path)}_{_require(row, 'key', '?', path)}"
    video = _require(row, "gif_name", qid, path)
    question = _require(row, "question", qid, path)
    if "a1" in row:  # Action / Transition: five choices, answer an index 0..4
        cands = tuple(_require(row, f"a{i}", qid, path) for i in range(1, 6))
        return VideoQuestion(qid, video, question, cands, _choice(row, "answer", cands, qid, path), None, dict(row))
    if "type" not in row:  # Count: a number, not an answer a teacher can score
        raise ValueError(f"{path}: qid {qid!r}: TGIF-QA Count questions have no candidates to score "
                         "(field: answer)")
    return VideoQuestion(qid, video, question, None, _require(row, "answer", qid, path), row.get("type"), dict(row))


def _generic(row: dict, path) -> VideoQuestion:
    if "que" in row and "vid" in row:  # DramaQA
        return _dramaqa(row, path)
    if "vid_name" in row and "q" in row:  # TVQA / TVQA+
        qid = str(_require(row, "qid", "?", path))
        cands = tuple(_require(row, f"a{i}", qid, path) for i in range(5))
        return VideoQuestion(qid, _require(row, "vid_name", qid, path), _require(row, "q", qid, path), cands,
                             _choice(row, "answer_idx", cands, qid, path), row.get("q_type"), {})
    qid = str(_require(row, "qid", "?", path))
    video = str(_require(row, "video", qid, path) if "video" in row else _require(row, "video_id", qid, path))
    question = _require(row, "question", qid, path)
    cands = row.get("candidates")
    if cands is None and "a0" in row:
        cands = [row[k] for k in sorted((k for k in row if k[:1] == "a" and k[1:].isdigit()), key=lambda k: int(k[1:]))]
    if cands is not None:
        if not isinstance(cands, list) or not cands or not all(isinstance(c, str) and c.strip() for c in cands):
            raise ValueError(f"{path}: qid {qid!r}: candidates must be a non-empty list of strings (field: candidates)")
        cands = tuple(c.strip() for c in cands)
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (int, str)):
            raise ValueError(f"{path}: qid {qid!r}: answer must be an index or a candidate (field: answer)")
        return VideoQuestion(qid, video, question, cands, _choice({"answer": str(answer)}, "answer", cands, qid, path),
                             row.get("type"), {})
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{path}: qid {qid!r}: an open-ended question needs its answer string (field: answer)")
    return VideoQuestion(qid, video, question, None, answer.strip(), row.get("type"), {})


def _msqa_video_prefix(data) -> Optional[str]:
    """``"vid"`` (MSVD-QA) or ``"video"`` (MSRVTT-QA) for a list in Xu et al.'s layout, else None."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return None
    first = data[0]
    if "qid" in first or "video" in first or not {"id", "video_id", "question", "answer"} <= set(first):
        return None
    return "video" if "category_id" in first else "vid"


def _msqa(row, path, prefix: str) -> VideoQuestion:
    if not isinstance(row, dict):
        raise ValueError(f"{path}: an entry is {type(row).__name__}, not an object with id, video_id, question, answer")
    qid = str(_require(row, "id", "?", path))
    video_id = str(_require(row, "video_id", qid, path))
    if not video_id.isdigit():
        raise ValueError(f"{path}: qid {qid!r}: video_id {video_id!r} is not a video number (field: video_id)")
    question = _require(row, "question", qid, path)
    answer = _require(row, "answer", qid, path)
    word = question.split(" ")[0].lower()
    return VideoQuestion(qid, f"{prefix}{int(video_id)}", question, None, answer, word,
                         {"video_id": video_id, "type": word})


def _starts_json_object(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return f.read(4096).lstrip()[:1] == "{"


def _agqa(path: Path) -> List[VideoQuestion]:
    from sparc.data.agqa import iter_questions

    records = []
    for qid, row in iter_questions(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: qid {qid!r}: the entry is {type(row).__name__}, not a question object (field: qid)")
        records.append(VideoQuestion(qid, _require(row, "video_id", qid, path), _require(row, "question", qid, path),
                                     None, _require(row, "answer", qid, path), _require(row, "ans_type", qid, path)))
    return records


def _dramaqa(row: dict, path) -> VideoQuestion:
    from sparc.data.dramaqa_features import frames_key

    qid = str(_require(row, "qid", "?", path))
    cands = row.get("answers")
    if not isinstance(cands, list) or len(cands) != 5:
        raise ValueError(f"{path}: qid {qid!r}: answers must be a list of 5 candidates (field: answers)")
    cands = tuple(str(c).strip() for c in cands)
    if "correct_idx" not in row:
        raise ValueError(f"{path}: qid {qid!r}: no correct_idx (the test split has none; the teacher's priors are "
                         "for train) (field: correct_idx)")
    answer = _choice(row, "correct_idx", cands, qid, path)
    video = frames_key(_require(row, "vid", qid, path), row.get("shot_contained"), qid=qid, where=str(path))
    level = _require(row, "q_level_logic", qid, path)
    return VideoQuestion(qid, video, _require(row, "que", qid, path), cands, answer, f"level_{level}",
                         {"vid": str(row["vid"]), "type": f"level_{level}"})


def _json(text: str, path: Path, line: Optional[int] = None):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"{path}: line {line}" if line is not None else str(path)
        raise ValueError(f"{where}: not valid JSON ({e})") from None


def read_questions(path: Union[str, Path]) -> List[VideoQuestion]:
    """Every question of an annotation file, in file order. Duplicate qids are an error."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"questions file {str(path)!r} is a directory; an annotation file is expected")
    if not path.is_file():
        raise FileNotFoundError(f"questions file {str(path)!r} does not exist")
    agqa = path.suffix == ".txt" and _starts_json_object(path)
    text = "" if agqa else path.read_text(encoding="utf-8")
    if agqa:   # AGQA's balanced file: one JSON object, read one question at a time
        records = _agqa(path)
    elif path.suffix in (".csv", ".tsv", ".txt"):
        first = text.split("\n", 1)[0]
        delimiter = "\t" if first.count("\t") > first.count(",") else ","
        rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
        header = set(rows[0]) if rows else set()
        if "gif_name" in header:
            records = [_tgif(r, path) for r in rows]
        elif {"video", "question", "qid", "a0"} <= header:
            records = [_nextqa(r, path) for r in rows]
        else:
            records = [_generic(r, path) for r in rows]
    elif path.suffix == ".jsonl":
        records = [_generic(_json(line, path, n), path) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        data = _json(text, path)
        if isinstance(data, dict):  # {qid: record}
            data = [{"qid": k, **v} for k, v in data.items()]
        prefix = _msqa_video_prefix(data)
        records = [_msqa(r, path, prefix) for r in data] if prefix else [_generic(r, path) for r in data]
    seen = set()
    for r in records:
        if r.qid in seen:
            raise ValueError(f"{path}: qid {r.qid!r} appears twice (field: qid)")
        seen.add(r.qid)
    return records


def group_by_video(questions: Iterable[VideoQuestion]) -> Dict[str, List[VideoQuestion]]:
    """video id -> its questions, videos in order of first appearance, questions in file order."""
    groups: Dict[str, List[VideoQuestion]] = {}
    for q in questions:
        groups.setdefault(q.video, []).append(q)
    return groups


def open_answer_set(train: Iterable[VideoQuestion], min_count: int = 2) -> Tuple[str, ...]:
    """The global candidate set of an open-ended dataset: answers occurring at least ``min_count``
    times in train (SpARC 3.1: more than once), most frequent first, ties alphabetical."""
    return answers_by_count(Counter(q.answer_text for q in train), min_count)


def answers_by_count(counts: Counter, min_count: int = 2) -> Tuple[str, ...]:
    """:func:`open_answer_set`'s rule over answer counts (a reader that counts a large split's answers
    without building a record per question)."""
    return tuple(a for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count)


def with_answer_set(questions: Iterable[VideoQuestion], answers: Sequence[str]) -> List[VideoQuestion]:
    """Open-ended questions given the global candidate set. A question whose answer is outside the
    set keeps its answer string (its ``answer_index`` then raises, naming the qid)."""
    answers = tuple(answers)
    out = []
    for q in questions:
        if q.candidates is not None:
            out.append(q)
            continue
        answer = answers.index(q.answer) if q.answer in answers else q.answer
        out.append(VideoQuestion(q.qid, q.video, q.question, answers, answer, q.type, q.fields))
    return out
