"""The synthetic benchmark's teacher: a :class:`~sparc.teachers.frame_qa.FrameQATeacher` trained on the
benchmark's teacher split, as ``sparc demo`` and ``sparc diagnose-misfocus --synthetic`` use it."""

from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["PRETRAIN_EPOCHS", "FINETUNE_EPOCHS", "FINETUNE_LR", "teacher_frames", "train_synthetic_teacher"]

PRETRAIN_EPOCHS = 8      # image-QA training on the answer frames (ALBEF arrives as a VQA model)
FINETUNE_EPOCHS = 4      # SpARC A.1: every frame of a video, labelled with its question's answer
FINETUNE_LR = 2e-4       # fine-tuning rate (the image-QA stage uses train_frame_teacher's 2e-3)


def teacher_frames(split) -> torch.Tensor:
    """What the image model reads of each frame: its regions (one per pair), concatenated ``[N, T, P*D]``,
    as ALBEF reads an image's patches (its question attends over them)."""
    return torch.from_numpy(split.images).flatten(2)


def train_synthetic_teacher(bench, pretrain_epochs: int = PRETRAIN_EPOCHS, epochs: int = FINETUNE_EPOCHS,
                            lr: float = FINETUNE_LR, log: Optional[Callable] = None):
    """The image-QA teacher, trained only on the teacher split (it never sees a train or test label).
    ALBEF arrives as a VQA model, so the teacher is first trained as one: on single frames that show the
    asked subject doing the answer. Then it is fine-tuned as SpARC A.1 fine-tunes ALBEF: on frames sampled
    uniformly from each video (here all T of them), each labelled with its question's answer whether or
    not it shows it, so that it learns to be unsure on frames without the evidence (its "nothing here"
    region) instead of naming the action it sees."""
    from sparc.teachers.frame_qa import FrameQATeacher, train_frame_teacher

    split = bench.splits["teacher"]
    questions, candidates = bench.teacher_inputs("teacher")
    torch.manual_seed(0)
    pairs = split.images.shape[2]
    teacher = FrameQATeacher(bench.config.feature_dim * pairs, bench.config.word_dim, num_slots=pairs)
    frames, answer = teacher_frames(split), torch.from_numpy(split.answer)
    vqa = train_frame_teacher(teacher, frames, questions, candidates, answer,
                              frame_mask=torch.from_numpy(split.causal), epochs=pretrain_epochs)
    a1 = train_frame_teacher(teacher, frames, questions, candidates, answer, epochs=epochs, lr=lr, seed=1)
    if log is not None:
        log(f"teacher: image-QA training on the {int(split.causal.sum())} answer frames of {len(split)} teacher-split "
            f"videos (loss {vqa[0]:.2f} -> {vqa[-1]:.2f}), then SpARC A.1 fine-tuning on all "
            f"{split.vid_feats.shape[0] * split.vid_feats.shape[1]} of their frames, each labelled with its "
            f"question's answer (loss {a1[0]:.2f} -> {a1[-1]:.2f})")
    return teacher
