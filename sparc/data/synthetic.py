"""The embedded synthetic benchmark: a video-QA task where misfocus is possible, generated in seconds.

Every frame shows one *subject* doing one *action* (a frame feature is the sum of a subject vector
and an action vector plus noise). A question names a subject -- "what is <subject> doing?" -- and
its five candidate answers are actions. The asked subject appears in only one or two frames (the
causal frames); every other candidate is done by some other subject elsewhere in the same video,
usually in more frames than the answer. A model that attends to the wrong frames, or only asks
"which candidate actions appear?", therefore picks a distractor: it has to bind subject and action
within a frame. A single frame plus the question is enough for an image-QA model to answer when it
shows the asked subject, which is what SpARC's teacher exploits.

Splits: ``teacher`` (trains the image-QA teacher on single frames; disjoint videos), ``train`` and
``test``. Everything is deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "what", "is", "doing"]


@dataclass
class SyntheticConfig:
    num_subjects: int = 12
    num_actions: int = 16
    num_frames: int = 8
    num_candidates: int = 5
    feature_dim: int = 64        # frame feature size (the backbone's "appearance" features)
    word_dim: int = 768          # token feature size, as BERT features the backbones expect
    noise: float = 0.6           # std of the per-frame feature noise
    answer_frames: tuple = (1, 2)  # how many frames show the asked subject
    sizes: Dict[str, int] = field(default_factory=lambda: {"teacher": 3000, "train": 1200, "test": 1000})
    seed: int = 0

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
    qa_tokens: np.ndarray        # [N, C, L] int64, "[CLS] what is subject [SEP] action [SEP]"
    answer: np.ndarray           # [N] int64
    causal: np.ndarray           # [N, T] bool
    frame_subject: np.ndarray    # [N, T] int64
    frame_action: np.ndarray     # [N, T] int64
    candidates: np.ndarray       # [N, C] action ids

    def __len__(self) -> int:
        return len(self.qids)


class SyntheticBenchmark:
    """Generates all splits from one seed; holds the fixed embeddings shared by the splits."""

    def __init__(self, config: SyntheticConfig = None):
        self.config = config or SyntheticConfig()
        c = self.config
        if c.num_candidates > c.num_actions:
            raise ValueError("num_candidates cannot exceed num_actions")
        if c.num_frames < max(c.answer_frames) + c.num_candidates - 1:
            raise ValueError("num_frames too small to show every distractor beside the answer frames")
        rng = np.random.default_rng(c.seed)
        unit = lambda n, d: (lambda m: m / np.linalg.norm(m, axis=1, keepdims=True))(rng.standard_normal((n, d)))
        self.subject_vectors = (2.0 * unit(c.num_subjects, c.feature_dim)).astype(np.float32)
        self.action_vectors = (2.0 * unit(c.num_actions, c.feature_dim)).astype(np.float32)
        self.token_table = torch.from_numpy(rng.standard_normal((len(c.vocab), c.word_dim)).astype(np.float32))
        self.token_table[0] = 0.0  # [PAD] rows are zero, as the NExT-QA loaders pad BERT features
        self._vocab_index = {w: i for i, w in enumerate(c.vocab)}
        self.splits = {name: self._generate(name, n, c.seed * 1000 + k + 1) for k, (name, n) in enumerate(c.sizes.items())}

    def token(self, word: str) -> int:
        return self._vocab_index[word]

    def _generate(self, name: str, n: int, seed: int) -> SyntheticSplit:
        c = self.config
        rng = np.random.default_rng(seed)
        T, C = c.num_frames, c.num_candidates
        frame_subject = np.zeros((n, T), np.int64)
        frame_action = np.zeros((n, T), np.int64)
        causal = np.zeros((n, T), bool)
        candidates = np.zeros((n, C), np.int64)
        answer = np.zeros(n, np.int64)
        for i in range(n):
            asked = rng.integers(c.num_subjects)
            acts = rng.choice(c.num_actions, C, replace=False)      # acts[0] is the true answer
            n_ans = rng.integers(c.answer_frames[0], c.answer_frames[1] + 1)
            # Distractors fill every other frame, each at least once: misfocus has something to grab.
            fill = np.concatenate([acts[1:], rng.choice(acts[1:], T - n_ans - (C - 1))])
            frames_act = np.concatenate([np.repeat(acts[:1], n_ans), fill])
            others = np.setdiff1d(np.arange(c.num_subjects), [asked])
            frames_sub = np.concatenate([np.repeat([asked], n_ans), rng.choice(others, T - n_ans)])
            order = rng.permutation(T)
            frame_action[i], frame_subject[i] = frames_act[order], frames_sub[order]
            causal[i] = frame_subject[i] == asked
            slot = rng.permutation(C)
            candidates[i, slot] = acts
            answer[i] = slot[0]
        feats = self.subject_vectors[frame_subject] + self.action_vectors[frame_action]
        feats = (feats + c.noise * rng.standard_normal(feats.shape)).astype(np.float32)
        asked = frame_subject[np.arange(n), causal.argmax(1)]
        tok = self.token
        qa = np.zeros((n, C, 7), np.int64)
        qa[:, :, 0], qa[:, :, 1], qa[:, :, 2], qa[:, :, 4], qa[:, :, 6] = tok("[CLS]"), tok("what"), tok("is"), tok("[SEP]"), tok("[SEP]")
        qa[:, :, 3] = (tok("subject0") + asked)[:, None]
        qa[:, :, 5] = tok("action0") + candidates
        qids = [f"{name}-{i:06d}" for i in range(n)]
        return SyntheticSplit(name, qids, [f"{name}-video-{i:06d}" for i in range(n)], feats, qa, answer,
                              causal, frame_subject, frame_action, candidates)

    # ---- torch plumbing -------------------------------------------------------------------------
    def dataset(self, split: str) -> "SyntheticDataset":
        return SyntheticDataset(self, self.splits[split])

    def qa_features(self, qa_tokens: torch.Tensor) -> torch.Tensor:
        """BERT-like token features ``[..., L, word_dim]`` of token ids (fixed random embeddings)."""
        return self.token_table[qa_tokens]


class SyntheticDataset(torch.utils.data.Dataset):
    """Items are dicts; :meth:`collate` builds HGA-style batches (``vid_feats``, ``qas``, ``qas_lengths``)."""

    def __init__(self, bench: SyntheticBenchmark, split: SyntheticSplit):
        self.bench, self.split = bench, split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        s = self.split
        return {"index": i, "qid": s.qids[i], "vid_feats": s.vid_feats[i], "qa_tokens": s.qa_tokens[i], "answer": s.answer[i]}

    def collate(self, items: List[dict]) -> dict:
        tokens = torch.from_numpy(np.stack([it["qa_tokens"] for it in items]))
        return {
            "index": torch.tensor([it["index"] for it in items]),
            "qid": [it["qid"] for it in items],
            "vid_feats": torch.from_numpy(np.stack([it["vid_feats"] for it in items])),
            "qas": self.bench.qa_features(tokens),
            "qas_lengths": (tokens != 0).sum(-1),
            "answer": torch.tensor([int(it["answer"]) for it in items]),
        }
