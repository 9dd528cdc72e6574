"""The embedded synthetic benchmark: a video-QA task where misfocus is possible, generated in seconds.

Every frame shows one *subject* doing one *action*. A question names a subject -- "what is <subject>
doing?" -- and its five candidate answers are actions. Only the frames showing the asked subject
(the causal frames) show the answer; every other candidate is done by another subject elsewhere in
the same video, and every candidate fills about the same number of frames. A model that attends to
the wrong frames, or only asks "which candidate actions appear?", therefore picks a distractor: it
has to bind subject and action within a frame. A single frame plus the question is enough for an
image-QA model to answer when it shows the asked subject, which is what SpARC's teacher exploits.

Features imitate aligned vision-language backbones, so that a small HGA learns the task within a CPU
budget: a frame feature is a fixed linear projection of the word embeddings of its subject and its
action (at the scale of real backbone features, norms of tens) plus noise, and token features are
BERT-like, contextual: every token of "[CLS] <subject> [SEP] <action> [SEP]" (the question cut to its
content word) also carries the sentence's content words.

Splits: ``teacher`` (trains the image-QA teacher on its videos' frames), ``train`` and ``test``, each drawn
from its own random stream (no video is shared). Everything is deterministic from the seed.

The other backbones read other modalities of the same videos (:meth:`SyntheticBenchmark.views`, drawn
on first use from a stream of their own, so the frame features above never change): each time step is
a *clip* of ``frames_per_clip`` frames showing the same subject and action, each frame with object
*regions* (one shows the subject, one the action, the rest background) and boxes (VGT, STAGE); a
*motion* feature per clip that shows only the action (HME, memory-attention: appearance | motion); and
a *subtitle* per clip naming the subject on screen (STAGE).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]"]
# "[CLS] <subject> [SEP]": the question "what is <subject> doing?" is the same words for every subject
# but one (they would only lengthen every sequence); the candidate action follows at this position.
QUESTION_LENGTH = 3


@dataclass
class SyntheticConfig:
    num_subjects: int = 2
    num_actions: int = 8
    num_frames: int = 8
    num_candidates: int = 5
    feature_dim: int = 64        # frame feature size (the backbone's "appearance" features)
    word_dim: int = 768          # token feature size, as BERT features the backbones expect
    signal: float = 16.0         # norm of a subject's / an action's part of a frame feature
    noise: float = 2.4           # std of the per-frame feature noise, per dimension
    sizes: Dict[str, int] = field(default_factory=lambda: {"teacher": 3000, "train": 3000, "test": 1000})
    seed: int = 0
    # the other modalities (SyntheticBenchmark.views)
    frames_per_clip: int = 2     # frames of one clip (VGT's clip axis); every frame shows the clip's content
    num_regions: int = 5         # regions per frame: subject, action, background (VGT needs a multiple of 5)

    @property
    def vocab(self) -> List[str]:
        return SPECIAL_TOKENS + [f"subject{i}" for i in range(self.num_subjects)] + [f"action{i}" for i in range(self.num_actions)]


@dataclass
class SyntheticSplit:
    """One split as arrays. ``causal[n, t]`` marks the frames that truly answer question n."""

    name: str
    qids: List[str]
    video_ids: List[str]
    vid_feats: np.ndarray        # [N, T, D] float32
    qa_tokens: np.ndarray        # [N, C, L] int64, "[CLS] subject [SEP] action [SEP]"
    answer: np.ndarray           # [N] int64
    causal: np.ndarray           # [N, T] bool
    frame_subject: np.ndarray    # [N, T] int64
    frame_action: np.ndarray     # [N, T] int64
    candidates: np.ndarray       # [N, C] action ids

    def __len__(self) -> int:
        return len(self.qids)


@dataclass
class SyntheticViews:
    """The modalities beyond ``vid_feats`` for one split (``F`` frames per clip, ``R`` regions)."""

    frame_feats: np.ndarray      # [N, T, F, D] float32 per-frame features (subject + action + noise)
    regions: np.ndarray          # [N, T, F, R, D] float32: region 0 the subject, 1 the action, others noise
    boxes: np.ndarray            # [N, T, F, R, 4] float32 (x1, y1, x2, y2) in [0, 1]
    motion: np.ndarray           # [N, T, D] float32: the action only, through its own projection
    subtitles: np.ndarray        # [N, T, 3] int64 "[CLS] <subject on screen> [SEP]"


class SyntheticBenchmark:
    """Generates all splits from one seed; holds the fixed embeddings shared by the splits."""

    def __init__(self, config: SyntheticConfig = None):
        self.config = config or SyntheticConfig()
        c = self.config
        if c.num_subjects < 2:
            raise ValueError("num_subjects must be at least 2: distractors are done by other subjects")
        if c.num_candidates > c.num_actions:
            raise ValueError("num_candidates cannot exceed num_actions")
        if c.num_frames < c.num_candidates:
            raise ValueError("num_frames must be at least num_candidates: every candidate appears in the video")
        rng = np.random.default_rng(c.seed)
        self._vocab_index = {w: i for i, w in enumerate(c.vocab)}
        table = rng.standard_normal((len(c.vocab), c.word_dim)).astype(np.float32)
        table[0] = 0.0  # [PAD] rows are zero, as the NExT-QA loaders pad BERT features
        self.token_table = torch.from_numpy(table)
        self._content = torch.arange(len(c.vocab)) >= len(SPECIAL_TOKENS)
        projection = rng.standard_normal((c.word_dim, c.feature_dim)).astype(np.float32)

        def visual(words):
            v = table[[self.token(w) for w in words]] @ projection
            return (c.signal * v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

        self.subject_vectors = visual([f"subject{i}" for i in range(c.num_subjects)])
        self.action_vectors = visual([f"action{i}" for i in range(c.num_actions)])
        # Motion features come from another backbone: the same actions through another projection.
        motion_projection = np.random.default_rng([c.seed, 7]).standard_normal((c.word_dim, c.feature_dim))
        actions = table[[self.token(f"action{i}") for i in range(c.num_actions)]] @ motion_projection
        self.motion_vectors = (c.signal * actions / np.linalg.norm(actions, axis=1, keepdims=True)).astype(np.float32)
        self._views: Dict[str, SyntheticViews] = {}
        # Each split draws from its own stream, keyed by its name: no video is shared between splits.
        self.splits = {name: self._generate(name, n, [c.seed, zlib.crc32(name.encode())]) for name, n in c.sizes.items()}

    def token(self, word: str) -> int:
        return self._vocab_index[word]

    def _generate(self, name: str, n: int, seed) -> SyntheticSplit:
        c = self.config
        rng = np.random.default_rng(seed)
        T, C = c.num_frames, c.num_candidates
        frame_subject = np.zeros((n, T), np.int64)
        frame_action = np.zeros((n, T), np.int64)
        candidates = np.zeros((n, C), np.int64)
        answer = np.zeros(n, np.int64)
        asked = rng.integers(c.num_subjects, size=n)
        for i in range(n):
            acts = rng.choice(c.num_actions, C, replace=False)      # acts[0] is the true answer
            # Every candidate fills a near-equal share of the frames, at least one (misfocus has
            # something to grab); which ones get the extra frames is random, so how often an action
            # appears says nothing about the answer.
            counts = rng.permutation(np.bincount(np.arange(T) % C, minlength=C))
            others = np.setdiff1d(np.arange(c.num_subjects), [asked[i]])
            subjects = np.concatenate([np.repeat(asked[i], counts[0]), rng.choice(others, T - counts[0])])
            order = rng.permutation(T)
            frame_action[i], frame_subject[i] = np.repeat(acts, counts)[order], subjects[order]
            slot = rng.permutation(C)
            candidates[i, slot] = acts
            answer[i] = slot[0]
        causal = frame_subject == asked[:, None]
        feats = self.subject_vectors[frame_subject] + self.action_vectors[frame_action]
        feats = (feats + c.noise * rng.standard_normal(feats.shape)).astype(np.float32)
        tok = self.token
        qa = np.zeros((n, C, QUESTION_LENGTH + 2), np.int64)
        qa[:, :, 0], qa[:, :, 2], qa[:, :, 4] = tok("[CLS]"), tok("[SEP]"), tok("[SEP]")
        qa[:, :, 1] = (tok("subject0") + asked)[:, None]
        qa[:, :, QUESTION_LENGTH] = tok("action0") + candidates
        qids = [f"{name}-{i:06d}" for i in range(n)]
        return SyntheticSplit(name, qids, [f"{name}-video-{i:06d}" for i in range(n)], feats, qa, answer,
                              causal, frame_subject, frame_action, candidates)

    def views(self, split: str) -> SyntheticViews:
        """Regions, boxes, per-frame features, motion and subtitles of a split (drawn once, cached)."""
        if split not in self._views:
            self._views[split] = self._draw_views(split)
        return self._views[split]

    def _draw_views(self, name: str) -> SyntheticViews:
        c, s = self.config, self.splits[name]
        rng = np.random.default_rng([c.seed, zlib.crc32(name.encode()), 1])
        N, T, F, R, D = len(s), c.num_frames, c.frames_per_clip, c.num_regions, c.feature_dim
        if R < 2:
            raise ValueError("num_regions must be at least 2 (the subject's region and the action's)")
        subject = self.subject_vectors[s.frame_subject][:, :, None]          # [N, T, 1, D]
        action = self.action_vectors[s.frame_action][:, :, None]
        frame_feats = subject + action + c.noise * rng.standard_normal((N, T, F, D))
        regions = c.noise * rng.standard_normal((N, T, F, R, D))
        regions[:, :, :, 0] += subject
        regions[:, :, :, 1] += action
        corners = rng.uniform(0.0, 1.0, (N, T, F, R, 2, 2))
        boxes = np.concatenate([corners.min(-1), corners.max(-1)], axis=-1)   # x1 y1 x2 y2, ordered
        motion = self.motion_vectors[s.frame_action] + c.noise * rng.standard_normal((N, T, D))
        subtitles = np.zeros((N, T, 3), np.int64)
        subtitles[..., 0], subtitles[..., 2] = self.token("[CLS]"), self.token("[SEP]")
        subtitles[..., 1] = self.token("subject0") + s.frame_subject
        f32 = lambda a: a.astype(np.float32)
        return SyntheticViews(f32(frame_feats), f32(regions), f32(boxes), f32(motion), subtitles)

    # ---- torch plumbing -------------------------------------------------------------------------
    def dataset(self, split: str, qa_tokens: np.ndarray = None) -> "SyntheticDataset":
        """``qa_tokens`` replaces the split's question tokens (e.g. :meth:`swap_asked_subject`)."""
        return SyntheticDataset(self, self.splits[split], qa_tokens)

    def swap_asked_subject(self, split: str) -> np.ndarray:
        """``qa_tokens`` of ``split`` with the asked subject ``subject_i`` replaced by ``subject_(i+1 mod S)``.
        The swapped subject does other actions in the video, so a model that reads the question's subject
        must change its answer; one that answers from the visible actions alone does not."""
        tokens = self.splits[split].qa_tokens.copy()
        first, S = self.token("subject0"), self.config.num_subjects
        tokens[:, :, 1] = first + (tokens[:, :, 1] - first + 1) % S
        return tokens

    def qa_features(self, qa_tokens: torch.Tensor) -> torch.Tensor:
        """BERT-like token features ``[..., L, word_dim]`` of token ids ``[..., L]``: each token's fixed
        random embedding plus the sum of the sequence's content-word (subject, action) embeddings,
        as contextual features carry the whole sentence. [PAD] positions stay zero."""
        content_words = torch.nn.functional.one_hot(qa_tokens, len(self.token_table)).sum(dim=-2) * self._content
        context = content_words.to(self.token_table.dtype) @ self.token_table
        return (self.token_table[qa_tokens] + context.unsqueeze(-2)).masked_fill_((qa_tokens == 0).unsqueeze(-1), 0.0)

    def teacher_inputs(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """The image-QA teacher's view of a split's questions: question token features
        ``[N, QUESTION_LENGTH, word_dim]`` and one feature per candidate answer ``[N, C, word_dim]``."""
        tokens = torch.from_numpy(self.splits[split].qa_tokens)
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
