"""Run an image-QA teacher over every (frame, question) and write the probabilities to a PriorStore.

Each video's frames are encoded once; all its questions and all their candidates are scored in one
batched call. Resumable: questions already in the store are skipped.
"""

from __future__ import annotations

from typing import Iterable, Tuple

import torch

from sparc.priors.store import PriorStore


@torch.no_grad()
def extract_priors(teacher, videos: Iterable[Tuple[object, list, object, object]], path, *, num_frames: int,
                   num_candidates: int, metadata=None, progress: bool = False) -> PriorStore:
    """``videos`` yields ``(frames, qids, questions, candidates)`` per video, in the teacher's formats;
    ``teacher.score`` must return ``[Q, F, C]`` (or ``[F, C]`` for a single question)."""
    from tqdm.auto import tqdm

    with PriorStore.create(path, num_candidates=num_candidates, num_frames=num_frames, resume=True,
                           metadata=metadata) as writer:
        for frames, qids, questions, candidates in tqdm(videos, desc="priors", disable=not progress, leave=False):
            if all(str(q) in writer.existing for q in qids):
                continue
            state = teacher.encode_images(frames)
            probs = teacher.score(state, questions, candidates)
            if probs.dim() == 2:
                probs = probs[None]
            for qid, p in zip(qids, probs):
                if str(qid) not in writer.existing:
                    writer.add(qid, p.float().cpu().numpy())
    return PriorStore.open(path)
