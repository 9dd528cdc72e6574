"""The embedded synthetic benchmark: a video-QA task where misfocus is possible, generated in seconds.

Every frame shows **two people side by side, each doing an action** (two subject-action pairs). Questions
ask about one of the benchmark's *subjects*; the other people on screen are *bystanders* drawn from a
larger pool (they are never asked about). Three kinds of question, five candidate actions each:

* ``what`` -- "what does <s> do?": s does the answer in ``k`` frames (2 or 3: the causal frames), in
  each of them beside a bystander doing a distractor candidate.
* ``first`` / ``last`` -- "what does <s> do first / in the end?": s does one action in its first ``k``
  frames and another in its last ``k``; both are candidates, the answer is the one the question's word
  picks, and a bystander beside s does a distractor in each of those frames. A single frame shows what s
  does but not whether it comes first, so an image model can only guess between the two; the order is
  in the video.

The other subject of the video stands in about as many other frames doing other candidates or fillers;
every distractor candidate is shown in as many slots as the answer, so counting the candidates that
appear finds nothing. No frame answers a question without reading which subject it asks about.

Features imitate a video backbone's pooled frame features and an image model's region features:

* ``vid_feats`` (what the video models read): per frame, the sum over its two pairs of the subject's
  and the action's vectors plus a *bound* pair vector (a projection of the elementwise product of the
  two word embeddings, norm ``binding * signal``: pooling keeps some of who-does-what) plus noise.
  Without the bound part two pairs would be a bag of words and who does what would be lost.
* ``images`` (what the image-QA teacher reads, as ALBEF reads image regions): one region per pair, its
  subject's and action's vectors (another projection) plus noise.
* Question token features are BERT-like, contextual: every token of "[CLS] <type> <subject> [SEP]
  <candidate> [SEP]" carries the sentence's content words and the composition of its subject with its
  candidate (the same elementwise product), as a contextual encoder composes a phrase.

Splits: ``teacher`` (trains the image-QA teacher, SpARC A.1), ``train`` and ``test``, each drawn from its
own random stream (no video is shared). Everything is deterministic from the seed.

The other backbones read other modalities of the same videos (:meth:`SyntheticBenchmark.views`, drawn
on first use from a stream of their own): each time step is a *clip* of ``frames_per_clip`` frames with
the same content, each frame with object *regions* (one per pair, the rest background) and boxes (VGT,
STAGE); a *motion* feature per clip that shows the two actions only (HME, memory-attention: appearance |
motion); and a *subtitle* per clip naming the people on screen (STAGE).

What STAGE's supervision reads is a function of the layout, drawn from no stream (so adding it changed
no number): the ground-truth span (:attr:`SyntheticSplit.span`, the hull of the true causal frames, as
a TVQA+ span is an interval that may hold frames without the evidence) and the evidence regions
(:attr:`SyntheticSplit.evidence`: in each true causal frame, the slot of the asked subject doing the
answer; inside the span the asked subject stands nowhere else and the answer is done nowhere else).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]"]
QUESTION_TYPES = ("what", "first", "last")
PAIRS_PER_FRAME = 2
# "[CLS] <type> <subject> [SEP]"; the candidate action follows at this position, then [SEP].
QUESTION_LENGTH = 4
SUBJECT_POSITION = 2          # the asked subject's token in every hypothesis


@dataclass
class SyntheticConfig:
    num_subjects: int = 2         # the people questions ask about; two of them in every video
    num_bystanders: int = 12      # the pool of other people on screen (never asked about)
    num_actions: int = 16
    num_frames: int = 8
    num_candidates: int = 5
    causal_frames: Tuple[int, int] = (2, 3)   # k, the frames of one answer: drawn from this range, inclusive
    temporal_fraction: float = 0.5   # share of first / last questions
    feature_dim: int = 64         # frame / region feature size
    word_dim: int = 768           # token feature size, as BERT features the backbones expect
    signal: float = 16.0          # norm of a subject's / an action's part of a pair
    binding: float = 1.5          # norm of a pair's bound part, in units of ``signal``
    noise: float = 2.4            # std of the feature noise, per dimension
    sizes: Dict[str, int] = field(default_factory=lambda: {"teacher": 3000, "train": 3000, "test": 1000})
    seed: int = 0
    # the other modalities (SyntheticBenchmark.views)
    frames_per_clip: int = 2      # frames of one clip (VGT's clip axis); every frame shows the clip's content
    num_regions: int = 5          # regions per frame: one per pair, the rest background (VGT: a multiple of 5)

    @property
    def num_people(self) -> int:
        return self.num_subjects + self.num_bystanders

    @property
    def vocab(self) -> List[str]:
        return (SPECIAL_TOKENS + list(QUESTION_TYPES) + [f"subject{i}" for i in range(self.num_subjects)]
                + [f"bystander{i}" for i in range(self.num_bystanders)] + [f"action{i}" for i in range(self.num_actions)])


@dataclass
class SyntheticSplit:
    """One split as arrays (``P = 2`` pairs per frame, people numbered subjects first, then bystanders).
    ``causal[n, t]`` marks the frames that truly answer question n: those where its subject does its answer."""

    name: str
    qids: List[str]
    video_ids: List[str]
    vid_feats: np.ndarray        # [N, T, D] float32 pooled frame features
    images: np.ndarray           # [N, T, P, D] float32 what an image model sees: one region per pair
    qa_tokens: np.ndarray        # [N, C, L] int64, "[CLS] type subject [SEP] action [SEP]"
    answer: np.ndarray           # [N] int64 candidate index
    causal: np.ndarray           # [N, T] bool
    frame_subject: np.ndarray    # [N, T, P] int64 person per slot
    frame_action: np.ndarray     # [N, T, P] int64
    candidates: np.ndarray       # [N, C] action ids
    qtype: np.ndarray            # [N] int64 index into QUESTION_TYPES
    asked: np.ndarray            # [N] int64 the asked subject
    other: np.ndarray            # [N] int64 the video's other subject

    def __len__(self) -> int:
        return len(self.qids)

    @property
    def temporal(self) -> np.ndarray:
        """[N] bool: the first / last questions."""
        return self.qtype != QUESTION_TYPES.index("what")

    @property
    def span(self) -> Tuple[np.ndarray, np.ndarray]:
        """The ground-truth span ``(first, last)`` ``[N]`` int64: the first and last true causal frame,
        end inclusive. The causal frames may have gaps, so the span can hold frames without the
        evidence, as an annotated TVQA+ span does (STAGE's ``ts_label_st`` / ``ts_label_ed``)."""
        frames = np.arange(self.causal.shape[1])
        return (np.where(self.causal, frames, self.causal.shape[1]).min(axis=1).astype(np.int64),
                np.where(self.causal, frames, -1).max(axis=1).astype(np.int64))

    @property
    def evidence(self) -> np.ndarray:
        """``[N, T, P]`` bool: slot p of frame t shows the asked subject doing the answer (the regions
        STAGE's attention labels point at). One slot in each true causal frame, none elsewhere."""
        return self.causal[:, :, None] & (self.frame_subject == self.asked[:, None, None])


@dataclass
class SyntheticViews:
    """The modalities beyond ``vid_feats`` for one split (``F`` frames per clip, ``R`` regions)."""

    frame_feats: np.ndarray      # [N, T, F, D] float32 per-frame features (the clip's pooled content + fresh noise)
    regions: np.ndarray          # [N, T, F, R, D] float32: region p < 2 shows pair p, the others noise
    boxes: np.ndarray            # [N, T, F, R, 4] float32 (x1, y1, x2, y2) in [0, 1]
    motion: np.ndarray           # [N, T, D] float32: the two actions only, through another projection
    subtitles: np.ndarray        # [N, T, 4] int64 "[CLS] <person> <person> [SEP]" in slot order


def _layout(rng, c: SyntheticConfig, qtype: int):
    """One video: person (0 the asked subject, 1 the other subject, 2.. bystander slots) and action per
    (frame, slot), the options (answer first) and the causal frames."""
    T, P, C = c.num_frames, PAIRS_PER_FRAME, c.num_candidates
    k = int(rng.integers(c.causal_frames[0], c.causal_frames[1] + 1))
    acts = rng.choice(c.num_actions, C, replace=False)
    if qtype == 0:                                        # what does s do?
        own_t = np.sort(rng.choice(T, k, replace=False))
        own_a = np.repeat(acts[:1], k)
        options, distractors, causal_t = acts, acts[1:], own_t
    else:                                                 # what does s do first / last? acts[0] first, acts[1] last
        own_t = np.sort(rng.choice(T, 2 * k, replace=False))
        own_a = np.repeat(acts[:2], k)
        first = qtype == 1
        options = acts[[0, 1, 2, 3, 4]] if first else acts[[1, 0, 2, 3, 4]]
        distractors, causal_t = acts[2:], (own_t[:k] if first else own_t[k:])
    fillers = np.setdiff1d(np.arange(c.num_actions), acts)
    others = [t for t in range(T) if t not in own_t]
    for _ in range(100):
        member = np.full((T, P), -1)
        action = np.full((T, P), -1)
        todo = list(np.repeat(distractors, k))            # every distractor in as many slots as the answer
        beside = rng.permutation(distractors)             # cycled: k consecutive frames of s see k different ones
        for j, (t, a) in enumerate(zip(own_t, own_a)):    # s, and a bystander beside it doing a distractor
            p = int(rng.integers(P))
            d = beside[j % len(beside)]
            todo.remove(d)
            member[t, p], action[t, p] = 0, a
            member[t, 1 - p], action[t, 1 - p] = 2, d
        # the other subject stands in as many frames as s (as far as the other frames allow)
        for t in rng.permutation(others)[:len(own_t)]:
            member[t, int(rng.integers(P))] = 1
        free = np.argwhere(action < 0)
        todo += list(rng.choice(fillers, len(free) - len(todo)))
        todo = rng.permutation(todo)
        action[free[:, 0], free[:, 1]] = todo
        member[member < 0] = 2
        if all(action[t, 0] != action[t, 1] for t in range(T)):  # no action twice in one frame
            return member, action, options, np.isin(np.arange(T), causal_t)
    raise RuntimeError("could not lay out a synthetic video")


class SyntheticBenchmark:
    """Generates all splits from one seed; holds the fixed embeddings shared by the splits."""

    def __init__(self, config: SyntheticConfig = None):
        self.config = config or SyntheticConfig()
        c = self.config
        if c.num_subjects < 2:
            raise ValueError("num_subjects must be at least 2: every video shows two subjects")
        if c.num_bystanders < 1:
            raise ValueError("num_bystanders must be at least 1: a bystander stands beside the asked subject")
        lo, hi = c.causal_frames
        if not 1 <= lo <= hi or 2 * hi > c.num_frames:
            raise ValueError(f"causal_frames {c.causal_frames} must satisfy 1 <= lo <= hi and 2 * hi <= num_frames")
        if c.num_candidates != 5:
            raise ValueError("num_candidates must be 5 (answer, the other first/last action, three distractors)")
        if c.num_actions < c.num_candidates + 2:
            raise ValueError(f"num_actions must be at least {c.num_candidates + 2} (candidates and fillers)")
        if PAIRS_PER_FRAME * c.num_frames < c.num_candidates * hi or c.num_regions < PAIRS_PER_FRAME:
            raise ValueError("too few frames or regions for the candidates (num_frames, num_regions)")
        if not 0.0 <= c.temporal_fraction <= 1.0:
            raise ValueError(f"temporal_fraction must be in [0, 1], got {c.temporal_fraction}")
        rng = np.random.default_rng(c.seed)
        self._vocab_index = {w: i for i, w in enumerate(c.vocab)}
        table = rng.standard_normal((len(c.vocab), c.word_dim)).astype(np.float32)
        table[0] = 0.0  # [PAD] rows are zero, as the NExT-QA loaders pad BERT features
        self.token_table = torch.from_numpy(table)
        self._content = torch.arange(len(c.vocab)) >= len(SPECIAL_TOKENS)
        self._person_ids = torch.arange(c.num_people) + self.token("subject0")   # subjects, then bystanders
        self._action_ids = torch.arange(c.num_actions) + self.token("action0")
        people, actions = table[self._person_ids.numpy()], table[self._action_ids.numpy()]

        def visual(rows, stream: int, norm: float) -> np.ndarray:
            projection = np.random.default_rng([c.seed, stream]).standard_normal((c.word_dim, c.feature_dim))
            v = rows @ projection
            return (norm * v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

        # pooled frame features (the video backbones'): subject, action and bound pair vectors
        self.subject_vectors = visual(people, 1, c.signal)
        self.action_vectors = visual(actions, 1, c.signal)
        self.pair_vectors = visual(people[:, None] * actions[None], 3, c.binding * c.signal)   # [people, A, D]
        # regions (what an image model sees, and VGT's/STAGE's object features): one per pair
        self.region_subject_vectors = visual(people, 2, c.signal)
        self.region_action_vectors = visual(actions, 2, c.signal)
        # motion features come from another backbone: the same actions through another projection
        self.motion_vectors = visual(actions, 7, c.signal)
        self._views: Dict[str, SyntheticViews] = {}
        # Each split draws from its own stream, keyed by its name: no video is shared between splits.
        self.splits = {name: self._generate(name, n, [c.seed, zlib.crc32(name.encode())]) for name, n in c.sizes.items()}

    def token(self, word: str) -> int:
        return self._vocab_index[word]

    def pooled(self, person: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The noiseless pooled feature ``[..., D]`` of frames whose pairs are ``person, action [..., P]``."""
        return (self.subject_vectors[person] + self.action_vectors[action] + self.pair_vectors[person, action]).sum(-2)

    def _generate(self, name: str, n: int, seed) -> SyntheticSplit:
        c = self.config
        rng = np.random.default_rng(seed)
        T, C, P = c.num_frames, c.num_candidates, PAIRS_PER_FRAME
        frame_subject = np.zeros((n, T, P), np.int64)
        frame_action = np.zeros((n, T, P), np.int64)
        candidates = np.zeros((n, C), np.int64)
        answer = np.zeros(n, np.int64)
        causal = np.zeros((n, T), bool)
        temporal = rng.random(n) < c.temporal_fraction
        qtype = np.where(temporal, 1 + rng.integers(2, size=n), 0)
        asked = rng.integers(c.num_subjects, size=n)
        other = (asked + 1 + rng.integers(c.num_subjects - 1, size=n)) % c.num_subjects
        for i in range(n):
            member, frame_action[i], options, causal[i] = _layout(rng, c, int(qtype[i]))
            bystanders = c.num_subjects + rng.choice(c.num_bystanders, (T, P))
            frame_subject[i] = np.select([member == 0, member == 1], [asked[i], other[i]], bystanders)
            slot = rng.permutation(C)
            candidates[i, slot] = options
            answer[i] = slot[0]
        feats = self.pooled(frame_subject, frame_action)
        feats = (feats + c.noise * rng.standard_normal(feats.shape)).astype(np.float32)
        images = self.region_subject_vectors[frame_subject] + self.region_action_vectors[frame_action]
        images = (images + c.noise * rng.standard_normal(images.shape)).astype(np.float32)
        tok = self.token
        qa = np.zeros((n, C, QUESTION_LENGTH + 2), np.int64)
        qa[:, :, 0], qa[:, :, 3], qa[:, :, 5] = tok("[CLS]"), tok("[SEP]"), tok("[SEP]")
        qa[:, :, 1] = (tok(QUESTION_TYPES[0]) + qtype)[:, None]
        qa[:, :, 2] = (tok("subject0") + asked)[:, None]
        qa[:, :, QUESTION_LENGTH] = tok("action0") + candidates
        qids = [f"{name}-{i:06d}" for i in range(n)]
        return SyntheticSplit(name, qids, [f"{name}-video-{i:06d}" for i in range(n)], feats, images, qa, answer,
                              causal, frame_subject, frame_action, candidates, qtype, asked, other)

    def views(self, split: str) -> SyntheticViews:
        """Regions, boxes, per-frame features, motion and subtitles of a split (drawn once, cached)."""
        if split not in self._views:
            self._views[split] = self._draw_views(split)
        return self._views[split]

    def _draw_views(self, name: str) -> SyntheticViews:
        c, s = self.config, self.splits[name]
        rng = np.random.default_rng([c.seed, zlib.crc32(name.encode()), 1])
        N, T, F, R, D, P = len(s), c.num_frames, c.frames_per_clip, c.num_regions, c.feature_dim, PAIRS_PER_FRAME
        frame_feats = self.pooled(s.frame_subject, s.frame_action)[:, :, None] + c.noise * rng.standard_normal((N, T, F, D))
        regions = c.noise * rng.standard_normal((N, T, F, R, D))
        regions[:, :, :, :P] += (self.region_subject_vectors[s.frame_subject]
                                 + self.region_action_vectors[s.frame_action])[:, :, None]
        corners = rng.uniform(0.0, 1.0, (N, T, F, R, 2, 2))
        boxes = np.concatenate([corners.min(-1), corners.max(-1)], axis=-1)   # x1 y1 x2 y2, ordered
        motion = self.motion_vectors[s.frame_action].sum(2) + c.noise * rng.standard_normal((N, T, D))
        subtitles = np.zeros((N, T, P + 2), np.int64)
        subtitles[..., 0], subtitles[..., -1] = self.token("[CLS]"), self.token("[SEP]")
        subtitles[..., 1:-1] = self.token("subject0") + s.frame_subject
        f32 = lambda a: a.astype(np.float32)
        return SyntheticViews(f32(frame_feats), f32(regions), f32(boxes), f32(motion), subtitles)

    # ---- torch plumbing -------------------------------------------------------------------------
    def dataset(self, split: str, qa_tokens: np.ndarray = None) -> "SyntheticDataset":
        """``qa_tokens`` replaces the split's question tokens (e.g. :meth:`swap_asked_subject`)."""
        return SyntheticDataset(self, self.splits[split], qa_tokens)

    def swap_asked_subject(self, split: str) -> np.ndarray:
        """``qa_tokens`` of ``split`` with each question's subject replaced by the video's other subject,
        who does other actions (distractors or fillers), so a model that reads the subject must change its
        answer; one that answers from the visible actions alone does not."""
        s = self.splits[split]
        tokens = s.qa_tokens.copy()
        tokens[:, :, 2] = (self.token("subject0") + s.other)[:, None]
        return tokens

    def qa_features(self, qa_tokens: torch.Tensor) -> torch.Tensor:
        """BERT-like token features ``[..., L, word_dim]`` of token ids ``[..., L]``: each token's fixed
        random embedding plus the sequence's context: the sum of its content-word embeddings and the
        composition (elementwise product) of its person's embedding with its action's. [PAD] stays zero."""
        counts = torch.nn.functional.one_hot(qa_tokens, len(self.token_table)).sum(dim=-2).to(self.token_table.dtype)
        context = (counts * self._content) @ self.token_table
        person = counts[..., self._person_ids] @ self.token_table[self._person_ids]
        action = counts[..., self._action_ids] @ self.token_table[self._action_ids]
        context = context + person * action
        return (self.token_table[qa_tokens] + context.unsqueeze(-2)).masked_fill_((qa_tokens == 0).unsqueeze(-1), 0.0)

    def teacher_inputs(self, split: str, qa_tokens: np.ndarray = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The image-QA teacher's view of a split's questions (or of ``qa_tokens [N, C, L]``, e.g. edited
        ones): question token features ``[N, QUESTION_LENGTH, word_dim]`` and one feature per candidate
        answer ``[N, C, word_dim]``."""
        tokens = torch.from_numpy(self.splits[split].qa_tokens if qa_tokens is None else qa_tokens)
        questions = self.qa_features(tokens[:, 0, :QUESTION_LENGTH])
        candidates = self.qa_features(tokens[:, :, QUESTION_LENGTH:QUESTION_LENGTH + 1]).squeeze(-2)
        return questions, candidates


class SyntheticDataset(torch.utils.data.Dataset):
    """Items are dicts; :meth:`collate` builds HGA-style batches (``vid_feats``, ``qas``, ``qas_lengths``)."""

    def __init__(self, bench: SyntheticBenchmark, split: SyntheticSplit, qa_tokens: np.ndarray = None):
        self.bench, self.split = bench, split
        self.qa_tokens = split.qa_tokens if qa_tokens is None else qa_tokens

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        s = self.split
        return {"index": i, "split": s.name, "qid": s.qids[i], "vid_feats": s.vid_feats[i], "qa_tokens": self.qa_tokens[i],
                "answer": s.answer[i]}

    def collate(self, items: List[dict]) -> dict:
        tokens = torch.from_numpy(np.stack([it["qa_tokens"] for it in items]))
        # A batch holds few distinct QA sequences: featurize each once, then copy.
        distinct, which = torch.unique(tokens.flatten(0, -2), dim=0, return_inverse=True)
        return {
            "index": torch.tensor([it["index"] for it in items]),
            "qid": [it["qid"] for it in items],
            "vid_feats": torch.from_numpy(np.stack([it["vid_feats"] for it in items])),
            "qas": self.bench.qa_features(distinct)[which].view(*tokens.shape, -1),
            "qas_lengths": (tokens != 0).sum(-1),
            "answer": torch.tensor([int(it["answer"]) for it in items]),
        }
