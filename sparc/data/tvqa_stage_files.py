"""The feature and subtitle files STAGE's batches are built from, one reader per released layout.

TVQA+ (``tvqa_plus_stage_features/``, as ``jayleicn/TVQAplus@d2dc721:run_main.sh`` names them):

- :class:`RegionFeatures`: ``tvqa_bbt_bottom_up_pool5_hq_20_100_pca.h5`` (one dataset per ``vid_name``,
  every region of every 3-fps frame stacked, 300-d) split per frame by ``counts`` of
  ``tvqa_bbt_frcn_vg_hq_20_100.json`` (``{vid_name: {"boxes", "counts", "object"}}``), the first
  ``num_region`` (25) regions of a frame kept. That JSON holds every box of every frame (gigabytes);
  :func:`build_boxes_cache` converts its boxes and counts once, one video at a time, into an HDF5
  file read lazily like the features.
- :class:`STAGEText`: ``bbt_qa_s_tokenized_bert_sub_qa_tuned_new_qid.h5`` (``f"{qid}_q"``,
  ``f"{qid}_a{k}"``: one 768-d row per whitespace token) and ``bbt_sub_s_tokenized_bert_sub_qa_tuned.h5``
  (one dataset per ``vid_name``: the subtitle sentences' tokens stacked), with ``word2idx.json``
  giving the words' ids (lower-cased, ``<unk>`` 1).
- :class:`STAGESubtitles`: ``tvqa_plus_subtitles.json`` ``{vid_name: {"sub_text": s1 <eos> s2 ...,
  "sub_time": [start, ...]}}``.

TVQA (the full release; STAGE's public code has no pipeline for it, see the recipe):

- :class:`FrameFeatures`: ``tvqa_imagenet_pool5.h5`` (one ``(frames, 2048)`` dataset per ``vid_name``,
  one row per 3-fps frame) as one region per frame;
- :class:`GloveText`: words (:func:`sparc.data.words.words_of`) embedded with a GloVe matrix (no token
  features are released for TVQA; the paper's "STAGE backbone (GloVe)" rows);
- :class:`TVRSubtitles`: ``tvqa_preprocessed_subtitles.jsonl`` (``{"vid_name", "sub": [{"text", "start",
  "end"}]}`` per line, as jayleicn/TVRetrieval releases it).

Every reader names the file, the video or question and the field of what it cannot read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np

from sparc.data.hdf5 import LazyH5, import_h5py
from sparc.data.words import words_of

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- the boxes JSON


def iter_json_object(path: PathLike) -> Iterator[Tuple[str, object]]:
    """``(key, value)`` of a top-level JSON object, one value decoded at a time (the text is read
    once; the decoded values are never all in memory together)."""
    text = Path(path).read_text()
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i):
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "{":
        raise ValueError(f"{path}: not a JSON object (field: top level)")
    i = skip(i + 1)
    if i < n and text[i] == "}":
        return
    while True:
        try:
            key, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i] != ":":
                raise ValueError("':' expected")
            value, i = decoder.raw_decode(text, skip(i + 1))
        except (ValueError, IndexError) as e:
            raise ValueError(f"{path}: not JSON at character {i} ({e})") from None
        yield str(key), value
        i = skip(i)
        if i < n and text[i] == ",":
            i = skip(i + 1)
        elif i < n and text[i] == "}":
            return
        else:
            raise ValueError(f"{path}: not JSON at character {i} (',' or '}}' expected)")


def build_boxes_cache(boxes_json: PathLike, cache_h5: PathLike) -> Path:
    """Write ``cache_h5`` from the detector JSON: per video a group with ``counts`` (the JSON's, which
    split the region features), ``box_counts`` (boxes listed per frame) and ``boxes`` (all of them,
    ``[x1, y1, x2, y2]`` float64, as written). Written under a temporary name, then renamed."""
    h5py = import_h5py()
    cache_h5 = Path(cache_h5)
    cache_h5.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_h5.with_name(cache_h5.name + ".tmp")
    with h5py.File(tmp, "w") as out:
        for vid, entry in iter_json_object(boxes_json):
            where = f"{boxes_json}: video {vid}"
            if not isinstance(entry, dict) or "boxes" not in entry or "counts" not in entry:
                raise ValueError(f"{where}: no 'boxes' and 'counts' (field: boxes)")
            frames = entry["boxes"]
            counts = entry["counts"]
            if not isinstance(frames, list) or not isinstance(counts, list):
                raise ValueError(f"{where}: 'boxes' and 'counts' must be lists per frame (field: boxes)")
            flat = [b for frame in frames for b in frame]
            boxes = np.asarray(flat, dtype=np.float64).reshape(-1, 4) if flat else np.zeros((0, 4))
            if boxes.shape[0] != len(flat):
                raise ValueError(f"{where}: a box is not [x1, y1, x2, y2] (field: boxes)")
            group = out.create_group(vid)
            group["counts"] = np.asarray(counts, dtype=np.int64)
            group["box_counts"] = np.asarray([len(f) for f in frames], dtype=np.int64)
            group["boxes"] = boxes
    os.replace(tmp, cache_h5)
    return cache_h5


# --------------------------------------------------------------------------- regions / frames


class RegionFeatures:
    """STAGE's region features and detector boxes per sampled frame (see the module docstring)."""

    def __init__(self, features_h5: PathLike, boxes_cache: PathLike, boxes_json: PathLike, num_region: int = 25):
        self.features_h5, self.boxes_cache, self.boxes_json = Path(features_h5), Path(boxes_cache), Path(boxes_json)
        self.num_region = int(num_region)
        self._h5 = LazyH5()
        self._offsets: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def _layout(self, vid: str, where: str):
        """(counts, feature row offsets, box counts, box offsets) of a video, checked once per process."""
        if vid not in self._offsets:
            cache = self._h5.file(self.boxes_cache)
            if vid not in cache:
                raise ValueError(f"{self.boxes_json}: {where}: no entry for video {vid} (field: boxes)")
            counts = cache[vid]["counts"][()]
            box_counts = cache[vid]["box_counts"][()]
            features = self._h5.file(self.features_h5)
            if vid not in features:
                raise ValueError(f"{self.features_h5}: {where}: no dataset for video {vid} (field: {vid})")
            rows = features[vid].shape[0]
            if int(counts.sum()) != rows:
                raise ValueError(f"{self.features_h5}: {where}: the counts of video {vid} in {self.boxes_json} sum "
                                 f"to {int(counts.sum())} regions, but its features have {rows} rows (field: counts)")
            self._offsets[vid] = (counts, np.concatenate([[0], np.cumsum(counts)]), box_counts,
                                  np.concatenate([[0], np.cumsum(box_counts)]))
        return self._offsets[vid]

    def check(self, vid: str, positions: Sequence[int], where: str) -> None:
        counts, _, box_counts, _ = self._layout(vid, where)
        last = max(positions)
        if last >= len(counts):
            raise ValueError(f"{self.boxes_json}: {where}: frame {last + 1} is sampled but video {vid} has counts for "
                             f"{len(counts)} frames (field: counts)")

    def frames(self, vid: str, positions: Sequence[int], where: str):
        """``(features (T, R, 300) float32, mask (T, R) float32, boxes [T arrays (kept, 4) float64])``
        of the 0-indexed frames ``positions`` (R: the most regions kept in a frame)."""
        self.check(vid, positions, where)
        counts, offsets, box_counts, box_offsets = self._layout(vid, where)
        kept = [min(int(counts[p]), self.num_region) for p in positions]
        rows = np.concatenate([np.arange(offsets[p], offsets[p] + k) for p, k in zip(positions, kept)]).astype(np.int64)
        data = self._h5.file(self.features_h5)[vid]
        flat = np.asarray(data[rows], dtype=np.float32) if len(rows) else np.zeros((0, data.shape[1]), np.float32)
        width = max(kept) if kept else 0
        feats = np.zeros((len(positions), width, flat.shape[1]), dtype=np.float32)
        mask = np.zeros((len(positions), width), dtype=np.float32)
        start = 0
        for t, k in enumerate(kept):
            feats[t, :k] = flat[start:start + k]
            mask[t, :k] = 1.0
            start += k
        return feats, mask, self.boxes(vid, positions, where, kept)

    def boxes(self, vid: str, positions: Sequence[int], where: str, kept: Sequence[int] = None) -> List[np.ndarray]:
        """The detector boxes of the 0-indexed frames ``positions``: the first ``min(count, num_region)``."""
        counts, _, box_counts, box_offsets = self._layout(vid, where)
        all_boxes = self._h5.file(self.boxes_cache)[vid]["boxes"]
        out = []
        for n, p in enumerate(positions):
            if p >= len(box_counts):
                raise ValueError(f"{self.boxes_json}: {where}: frame {p + 1} of video {vid} has no boxes entry "
                                 f"(field: boxes)")
            k = min(int(counts[p]), self.num_region) if kept is None else kept[n]
            if box_counts[p] < k:
                raise ValueError(f"{self.boxes_json}: {where}: frame {p + 1} of video {vid} lists {int(box_counts[p])} "
                                 f"boxes for {k} kept regions (field: boxes)")
            out.append(np.asarray(all_boxes[box_offsets[p]:box_offsets[p] + k], dtype=np.float64))
        return out


class FrameFeatures:
    """One feature row per 3-fps frame (TVQA's ``tvqa_imagenet_pool5.h5``) as a single region per frame;
    no boxes."""

    num_region = 1

    def __init__(self, features_h5: PathLike):
        self.features_h5 = Path(features_h5)
        self._h5 = LazyH5()

    def check(self, vid: str, positions: Sequence[int], where: str) -> None:
        f = self._h5.file(self.features_h5)
        if vid not in f:
            raise ValueError(f"{self.features_h5}: {where}: no dataset for video {vid} (field: {vid})")
        if max(positions) >= f[vid].shape[0]:
            raise ValueError(f"{self.features_h5}: {where}: frame {max(positions) + 1} is sampled but video {vid} has "
                             f"{f[vid].shape[0]} feature rows (field: {vid})")

    def frames(self, vid: str, positions: Sequence[int], where: str):
        self.check(vid, positions, where)
        rows = np.asarray(self._h5.file(self.features_h5)[vid][np.asarray(positions, dtype=np.int64)], dtype=np.float32)
        return rows[:, None, :], np.ones((len(positions), 1), dtype=np.float32), [np.zeros((1, 4))] * len(positions)

    def boxes(self, vid: str, positions: Sequence[int], where: str, kept=None) -> List[np.ndarray]:
        return [np.zeros((1, 4))] * len(positions)


# --------------------------------------------------------------------------- text


def _dissect(rows: np.ndarray, lengths: Sequence[int]) -> List[np.ndarray]:
    """``dissect_by_lengths`` without its sum check, then ``rm_empty_by_copy``: an empty piece takes the
    previous piece (the first one the last), what the original does for the few videos whose token
    features do not add up to their sentences' tokens."""
    edges = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pieces = [rows[edges[i]:edges[i + 1]] for i in range(len(lengths))]
    for i in range(len(pieces)):
        if len(pieces[i]) == 0:
            pieces[i] = pieces[i - 1]
    return pieces


class STAGEText:
    """STAGE's released BERT token features of the hypotheses and subtitles (module docstring)."""

    def __init__(self, qa_h5: PathLike, sub_h5: PathLike, word2idx_json: PathLike):
        self.qa_h5, self.sub_h5, self.word2idx_json = Path(qa_h5), Path(sub_h5), Path(word2idx_json)
        with open(self.word2idx_json) as f:
            self.word2idx: Dict[str, int] = json.load(f)
        self.unk = int(self.word2idx.get("<unk>", 1))
        self._h5 = LazyH5()

    def words(self, text: str) -> List[str]:
        return text.split()

    def word_ids(self, words: Sequence[str]) -> List[int]:
        return [int(self.word2idx.get(w.lower(), self.unk)) for w in words]

    def check(self, qid: str, question: str, answers: Sequence[str], where: str) -> None:
        """The six token datasets of a question exist with one row per token (shapes only: no data read)."""
        for part, text in [("q", question)] + [(f"a{k}", a) for k, a in enumerate(answers)]:
            self._dataset(qid, part, self.words(text), where)

    def check_video(self, vid: str, where: str) -> None:
        if vid not in self._h5.file(self.sub_h5):
            raise ValueError(f"{self.sub_h5}: {where}: no dataset for video {vid} (field: {vid})")

    def _dataset(self, qid: str, part: str, words: Sequence[str], where: str):
        key = f"{qid}_{part}"
        f = self._h5.file(self.qa_h5)
        if key not in f:
            raise ValueError(f"{self.qa_h5}: {where}: no dataset {key!r} for question {qid} (field: {key})")
        data = f[key]
        if len(data.shape) != 2 or data.shape[0] != len(words):
            raise ValueError(f"{self.qa_h5}: {where}: {key!r} has shape {tuple(data.shape)}, expected one row per "
                             f"token of the text ({len(words)}: {' '.join(words)!r}); read the questions from the "
                             f"STAGE release's tvqa_plus_*_preprocessed.json (field: {key})")
        return data

    def _rows(self, qid: str, part: str, words: Sequence[str], where: str) -> np.ndarray:
        return np.asarray(self._dataset(qid, part, words, where)[()], dtype=np.float32)

    def hypothesis(self, qid: str, question: str, answer: str, k: int, where: str):
        """``(features (Lq + La, 768), words)`` of "question + answer k" (question rows first)."""
        q_words, a_words = self.words(question), self.words(answer)
        rows = np.concatenate([self._rows(qid, "q", q_words, where), self._rows(qid, f"a{k}", a_words, where)])
        return rows, q_words + a_words

    def subtitles(self, vid: str, sentences: Sequence[str], where: str) -> List[np.ndarray]:
        self.check_video(vid, where)
        rows = np.asarray(self._h5.file(self.sub_h5)[vid][()], dtype=np.float32)
        return _dissect(rows, [len(s.split()) for s in sentences])


class GloveText:
    """Words embedded with a (vocabulary, GloVe matrix) pair: TVQA, where no token features exist."""

    def __init__(self, vocabulary, matrix: np.ndarray):
        self.vocabulary = vocabulary
        self.matrix = np.asarray(matrix, dtype=np.float32)
        if self.matrix.shape[0] != len(vocabulary):
            raise ValueError(f"the GloVe matrix has {self.matrix.shape[0]} rows for {len(vocabulary)} words "
                             "(field: matrix)")

    def words(self, text: str) -> List[str]:
        return words_of(text)

    def word_ids(self, words: Sequence[str]) -> List[int]:
        return [self.vocabulary.index.get(w, 1) for w in words]

    def check(self, qid: str, question: str, answers: Sequence[str], where: str) -> None:
        return None

    def check_video(self, vid: str, where: str) -> None:
        return None

    def hypothesis(self, qid: str, question: str, answer: str, k: int, where: str):
        words = self.words(question) + self.words(answer) or ["<unk>"]
        return self.matrix[self.word_ids(words)], words

    def subtitles(self, vid: str, sentences: Sequence[str], where: str) -> List[np.ndarray]:
        return [self.matrix[self.word_ids(self.words(s))] for s in sentences]


# --------------------------------------------------------------------------- subtitles


class STAGESubtitles:
    """``tvqa_plus_subtitles.json``: sentences split on ``" <eos> "`` with their start times."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        with open(self.path) as f:
            self.data: Mapping[str, dict] = json.load(f)

    def sentences(self, vid: str, where: str) -> Tuple[List[str], np.ndarray]:
        entry = self.data.get(vid)
        if not isinstance(entry, dict) or "sub_text" not in entry or "sub_time" not in entry:
            raise ValueError(f"{self.path}: {where}: no sub_text and sub_time for video {vid} (field: {vid})")
        text = entry["sub_text"].split(" <eos> ")
        times = np.asarray(entry["sub_time"], dtype=np.float64)
        if len(times) != len(text):
            raise ValueError(f"{self.path}: {where}: video {vid} has {len(text)} sentences but {len(times)} times "
                             f"(field: sub_time)")
        return text, times


class TVRSubtitles:
    """``tvqa_preprocessed_subtitles.jsonl``: one line per video, ``sub`` a list of ``{text, start, end}``."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.data: Dict[str, Tuple[List[str], np.ndarray]] = {}
        with open(self.path) as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    vid = str(row["vid_name"])
                    subs = row["sub"]
                    text = [str(s["text"]) for s in subs]
                    times = np.asarray([float(s["start"]) for s in subs], dtype=np.float64)
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{self.path}, line {line_no}: not a {{vid_name, sub: [{{text, start, end}}]}} "
                                     f"record ({e}) (field: sub)") from None
                self.data[vid] = (text, times)

    def sentences(self, vid: str, where: str) -> Tuple[List[str], np.ndarray]:
        if vid not in self.data:
            raise ValueError(f"{self.path}: {where}: no subtitles for video {vid} (field: vid_name)")
        return self.data[vid]


def nearest_sentences(times: np.ndarray, frame_ids: Sequence[int], fps: int = 3) -> List[List[int]]:
    """For each 1-indexed frame the two sentences whose start time is nearest to ``frame / fps``, in
    sentence order (``find_match(..., mode="nearest")``; ties to the earlier sentence)."""
    return [sorted(np.argsort(np.abs(times - f / fps), kind="stable")[:2].tolist()) for f in frame_ids]


__all__ = ["iter_json_object", "build_boxes_cache", "RegionFeatures", "FrameFeatures", "STAGEText", "GloveText",
           "STAGESubtitles", "TVRSubtitles", "nearest_sentences"]
