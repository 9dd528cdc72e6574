"""A small image-QA model over precomputed frame features: the synthetic benchmark's teacher.

It is a real (if small) image-QA network, trained on single frames of a split whose videos the
video model never sees, each frame labelled with its question's answer (as SpARC A.1 fine-tunes
ALBEF on frames). ``score(frame, question, candidates) = softmax_c(⟨g(frame, question), h(candidate_c)⟩)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrameQATeacher(nn.Module):
    def __init__(self, feature_dim: int, word_dim: int, hidden: int = 64):
        super().__init__()
        # Inputs are layer-normalised first: precomputed features come at any scale.
        self.image = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden), nn.GELU(),
                                   nn.Linear(hidden, hidden))
        self.question = nn.Sequential(nn.LayerNorm(word_dim), nn.Linear(word_dim, hidden))
        self.fuse = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.candidate = nn.Sequential(nn.LayerNorm(word_dim), nn.Linear(word_dim, hidden))

    # ---- ImageQATeacher ---------------------------------------------------------------------------
    def encode_images(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [F, D]`` -> image state ``[F, H]``, computed once and reused by every question."""
        return self.image(frames)

    def score(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``questions [Q, Lq, word_dim]`` token features, ``candidates [Q, C, word_dim]`` (one feature
        per candidate) -> probs ``[Q, F, C]`` for every frame of ``image_state [F, H]``."""
        return F.softmax(self.logits(image_state, questions, candidates), dim=-1)

    def logits(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Every frame against every question: ``[Q, F, C]``."""
        Q, Fr = questions.shape[0], image_state.shape[0]
        state = image_state[None].expand(Q, -1, -1).reshape(Q * Fr, -1)
        q = questions[:, None].expand(-1, Fr, -1, -1).reshape(Q * Fr, *questions.shape[1:])
        c = candidates[:, None].expand(-1, Fr, -1, -1).reshape(Q * Fr, *candidates.shape[1:])
        return self.pair_logits(state, q, c).view(Q, Fr, -1)

    def pair_logits(self, image_state: torch.Tensor, questions: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Row-aligned (frame n, question n) pairs: ``image_state [N, H]`` -> logits ``[N, C]``."""
        q = self.question(questions.mean(dim=1))
        # Image-question fusion with a product term, as VQA models fuse the two modalities.
        g = self.fuse(torch.cat([image_state, q, image_state * q], dim=-1))
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
    recipe; the demo passes the frames that show what the question asks about, i.e. an image-QA
    dataset). ``questions [N, Lq, W]``, ``candidates [N, C, W]``. Returns the per-epoch mean loss."""
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
