"""What the answer-likelihood teachers (ALBEF, BLIP) share: frame preprocessing, token padding, and
turning per-candidate log-likelihoods into the protocol's probabilities.

A subclass of :class:`LikelihoodTeacher` provides ``encode_images``, ``log_scores(image_state,
question, candidates) -> [F, C]`` and the two token readers ``_question`` / ``_candidates``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

# CLIP's normalisation, which ALBEF and BLIP both train with.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

Tokens = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def preprocess_frames(frames: torch.Tensor, image_res: int) -> torch.Tensor:
    """uint8 frames ``[F, H, W, 3]`` or ``[F, 3, H, W]`` -> ``[F, 3, R, R]``: bicubic resize to
    ``image_res`` (clamped back to [0, 1]), then CLIP mean/std. Float frames are taken as preprocessed."""
    if frames.is_floating_point():
        return frames
    if frames.shape[-1] == 3 and frames.shape[1] != 3:
        frames = frames.permute(0, 3, 1, 2)
    x = frames.float() / 255.0
    if tuple(x.shape[-2:]) != (image_res, image_res):
        x = F.interpolate(x, size=(image_res, image_res), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    mean = torch.tensor(IMAGE_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(IMAGE_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def pad_sequences(seqs: Sequence[List[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> ``ids [N, L]`` right-padded with ``pad_id`` and ``mask [N, L]`` (1 on real tokens)."""
    ids = torch.full((len(seqs), max(map(len, seqs))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def ids_and_mask(tokens: Tokens, pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` as given, or ids alone with the mask read off the padding."""
    if isinstance(tokens, tuple) and len(tokens) == 2 and torch.is_tensor(tokens[0]):
        return tokens
    return tokens, (tokens != pad_id).long()


class LikelihoodTeacher:
    """The shared half of an :class:`~sparc.teachers.base.ImageQATeacher` that scores each candidate by
    its log-likelihood under an answer decoder. Subclasses set ``image_res`` and ``tokenizer_hint``."""

    image_res: int
    tokenizer_hint = "pass tokenizer=..."

    def __init__(self, model: torch.nn.Module, tokenizer=None, length_normalize: bool = False,
                 frame_chunk: int = 64, device: Union[str, torch.device, None] = None):
        """``frame_chunk`` frames go through the model at a time; ``device`` defaults to the model's."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.length_normalize = length_normalize
        self.frame_chunk = frame_chunk
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        return preprocess_frames(frames, self.image_res)

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(f"strings need a tokenizer: {self.tokenizer_hint}")
        return self.tokenizer

    def log_scores(self, image_state, question, candidates) -> torch.Tensor:
        raise NotImplementedError

    def score(self, image_state: torch.Tensor, questions, candidates) -> torch.Tensor:
        """``probs [F, C]`` for one question (``[Q, F, C]`` for a list of questions): softmax over the
        candidates of their log-likelihood scores."""
        if isinstance(questions, list):
            return torch.stack([self.score(image_state, q, c) for q, c in zip(questions, candidates)])
        return self.log_scores(image_state, questions, candidates).softmax(dim=-1)
