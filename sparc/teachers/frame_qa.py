"""A small image-QA model over precomputed frame features: the synthetic benchmark's teacher.

It is a real (if small) image-QA network. A frame feature is read as ``num_slots`` region slots (one by
default: the whole feature); the question attends over them and a learned "nothing here" region, as
ALBEF's fusion layers attend over image patches; the attended region is fused with the question, and each
candidate is scored by a dot product:
``score(frame, question, candidates) = softmax_c(⟨g(frame, question), h(candidate_c)⟩)``.
It is trained as SpARC A.1 fine-tunes ALBEF: on frames sampled uniformly from the videos of a split
the video model never sees, each frame labelled with its question's answer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameQATeacher(nn.Module):
    def __init__(self, feature_dim: int, word_dim: int, hidden: int = 64, num_slots: int = 1):
        super().__init__()
        if feature_dim % num_slots:
            raise ValueError(f"feature_dim {feature_dim} is not a multiple of num_slots {num_slots}")
        self.num_slots = num_slots
        slot_dim = feature_dim // num_slots
        # Inputs are layer-normalised first: precomputed features come at any scale.
        self.image = nn.Sequential(nn.LayerNorm(slot_dim), nn.Linear(slot_dim, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden))
        self.question = nn.Sequential(nn.LayerNorm(word_dim), nn.Linear(word_dim, hidden))
        self.attend = nn.Linear(hidden, hidden, bias=False)
        # A learned "nothing here" region the question can attend to when no region shows what it asks
        # about (as detection models keep a no-object class): without it softmax attention must mix the
        # regions it has, and the teacher cannot say that a frame lacks the evidence.
        self.no_region = nn.Parameter(torch.zeros(hidden))
        self.fuse = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.candidate = nn.Sequential(nn.LayerNorm(word_dim), nn.Linear(word_dim, hidden))

    # ---- ImageQATeacher ---------------------------------------------------------------------------
    def encode_images(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [F, D]`` -> image state ``[F, slots, H]``, computed once and reused by every question."""
        return self.image(frames.reshape(frames.shape[0], self.num_slots, -1))

    def score(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``questions [Q, Lq, word_dim]`` token features, ``candidates [Q, C, word_dim]`` (one feature
        per candidate) -> probs ``[Q, F, C]`` for every frame of ``image_state [F, slots, H]``."""
        return F.softmax(self.logits(image_state, questions, candidates), dim=-1)

    def logits(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Every frame against every question: ``[Q, F, C]``."""
        Q, Fr = questions.shape[0], image_state.shape[0]
        state = image_state[None].expand(Q, *image_state.shape).reshape(Q * Fr, *image_state.shape[1:])
        q = questions[:, None].expand(-1, Fr, -1, -1).reshape(Q * Fr, *questions.shape[1:])
        c = candidates[:, None].expand(-1, Fr, -1, -1).reshape(Q * Fr, *candidates.shape[1:])
        return self.pair_logits(state, q, c).view(Q, Fr, -1)

    def pair_logits(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Row-aligned (frame n, question n) pairs: ``image_state [N, slots, H]`` -> logits ``[N, C]``."""
        q = self.question(questions.mean(dim=1))
        # The question picks the region it asks about (softmax over the slots), then the two are
        # fused with a product term, as VQA models fuse the two modalities.
        regions = torch.cat([image_state, self.no_region.expand(image_state.shape[0], 1, -1)], dim=1)
        weights = torch.softmax(torch.einsum("nsh,nh->ns", self.attend(regions), q), dim=1)
        region = torch.einsum("ns,nsh->nh", weights, regions)
        g = self.fuse(torch.cat([region, q, region * q], dim=-1))
        return torch.einsum("nh,nch->nc", g, self.candidate(candidates))


def train_frame_teacher(
    teacher: FrameQATeacher,
    frames: torch.Tensor,
    questions: torch.Tensor,
    candidates: torch.Tensor,
    answer: torch.Tensor,
    frame_mask: torch.Tensor = None,
    epochs: int = 8,
    lr: float = 2e-3,
    batch_size: int = 512,
    seed: int = 0,
) -> list:
    """Fit the teacher on single frames: ``frames [N, T, D]``, frame t of question n labelled with n's
    answer, for the (n, t) where ``frame_mask`` is true (default: every frame, SpARC A.1's fine-tuning
    recipe: frames sampled uniformly from each video, whether or not they show the answer).
    ``questions [N, Lq, W]``, ``candidates [N, C, W]``. Returns the per-epoch mean loss."""
    g = torch.Generator().manual_seed(seed)
    N, T, _ = frames.shape
    pairs = torch.nonzero(torch.ones(N, T, dtype=torch.bool) if frame_mask is None else frame_mask.bool())
    flat = pairs[:, 0] * T + pairs[:, 1]
    opt = torch.optim.Adam(teacher.parameters(), lr=lr)
    history = []
    teacher.train()
    for _ in range(epochs):
        order = flat[torch.randperm(flat.numel(), generator=g)]
        total = 0.0
        for start in range(0, order.numel(), batch_size):
            idx = order[start:start + batch_size]
            q_idx, t_idx = idx // T, idx % T
            state = teacher.encode_images(frames[q_idx, t_idx])
            logits = teacher.pair_logits(state, questions[q_idx], candidates[q_idx])
            loss = F.cross_entropy(logits, answer[q_idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / flat.numel())
    teacher.eval()
    return history
