"""Contract cases for MemoryAdapter driving the reference MemoryAttention (paper 003).

Multiple choice runs with task_loss "ce": the mixups give soft labels, which the paper's hinge loss
(sparc's ``task_loss="hinge"``) refuses; the hinge step without mixup is tested in
tests/test_memory_adapter.py. The count task has no case: its (B, 1) regression output has no
distribution for the KL/CE-based techniques (see MemoryAdapter's docstring).
"""

import torch

from sparc.adapters.memory import MemoryAdapter, MemoryAttention
from sparc.contract import AdapterCase

APPEARANCE, MOTION, BERT, MAX_LEN, NUM_ANSWERS = 6, 5, 12, 5, 7


def _build(task):
    def build(seed: int) -> MemoryAttention:
        torch.manual_seed(seed)
        return MemoryAttention(APPEARANCE, MOTION, hidden_size=8, word_dim=6, video_memory_size=3,
                               text_memory_size=2, max_len_q=MAX_LEN, task=task, num_answers=NUM_ANSWERS,
                               bert_dim=BERT)
    return build


def _batch(task):
    def make(batch_size: int, num_frames: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        text_shape = (batch_size, 5) if task == "multiple_choice" else (batch_size,)
        lengths = torch.randint(1, MAX_LEN + 1, text_shape, generator=g)
        lengths.view(-1)[0] = MAX_LEN  # the padded width is reached
        batch = {"vid_feats": torch.randn(batch_size, num_frames, APPEARANCE + MOTION, generator=g),
                 "qid": [f"memory-{seed}-{i}" for i in range(batch_size)]}
        if task == "multiple_choice":
            batch["qas"] = torch.randn(*text_shape, MAX_LEN, BERT, generator=g)
            batch["qas_lengths"] = lengths
            batch["answer"] = torch.randint(0, 5, (batch_size,), generator=g)
        else:
            batch["qns"] = torch.randn(batch_size, MAX_LEN, BERT, generator=g)
            batch["qns_lengths"] = lengths
            batch["answer"] = torch.randint(0, NUM_ANSWERS, (batch_size,), generator=g)
        return batch
    return make


CASES = [
    AdapterCase(
        name="memory-reference-mc",
        build_model=_build("multiple_choice"),
        adapter=MemoryAdapter(),
        make_batch=_batch("multiple_choice"),
        num_candidates=5,
        task_loss="ce",
    ),
    AdapterCase(
        name="memory-reference-oe",
        build_model=_build("open_ended"),
        adapter=MemoryAdapter(open_ended=True, num_answers=NUM_ANSWERS),
        make_batch=_batch("open_ended"),
        num_candidates=NUM_ANSWERS,
        task_loss="ce",
    ),
]
