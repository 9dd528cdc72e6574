"""The README quickstart's model and adapter as a contract case: a model that takes video [B, T, D] and
question [B, D] features and scores its own C candidates (no candidate inputs), driven by a
FunctionAdapter that declares no candidate field (so TemporalGuidedMixup mixes labels, not candidates)."""

import torch
from torch import nn

from sparc.adapters import FunctionAdapter
from sparc.contract import AdapterCase

D, C = 8, 5


class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.frame, self.head = nn.Linear(D, D), nn.Linear(2 * D, C)

    def forward(self, video, question):
        return self.head(torch.cat([self.frame(video).mean(1), question], dim=-1))


def build(seed):
    torch.manual_seed(seed)
    return MyModel()


def batch(batch_size, num_frames, seed):
    g = torch.Generator().manual_seed(300 + seed)
    return {"qid": [f"quick-{seed}-{b}" for b in range(batch_size)],
            "video": torch.randn(batch_size, num_frames, D, generator=g),
            "question": torch.randn(batch_size, D, generator=g),
            "answer": torch.randint(0, C, (batch_size,), generator=g)}


ADAPTER = FunctionAdapter(lambda m, b: m(b["video"], b["question"]), temporal={"video": 1}, subset="bucket")

CASES = [AdapterCase("function-quickstart", build, ADAPTER, batch, C)]
