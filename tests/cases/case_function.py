"""Contract cases for FunctionAdapter, one per subset mode, on a small model that honours both a
frame mask and frame lengths (a masked mean of projected frames, scored against each candidate)."""

import torch
from torch import nn

from sparc.adapters import FunctionAdapter
from sparc.contract import AdapterCase


class MaskedMeanScorer(nn.Module):
    def __init__(self, dim=6):
        super().__init__()
        self.frame = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.cand = nn.Linear(dim, dim)

    def forward(self, video, cands, frame_mask=None, lengths=None):
        h = self.frame(video)
        if lengths is not None:
            frame_mask = torch.arange(video.shape[1], device=video.device)[None] < lengths[:, None].to(video.device)
        if frame_mask is None:
            pooled = h.mean(1)
        else:
            m = frame_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return torch.einsum("bd,bcd->bc", pooled, self.cand(cands))


def build(seed):
    torch.manual_seed(seed)
    return MaskedMeanScorer()


def batch(batch_size, num_frames, seed, dim=6):
    g = torch.Generator().manual_seed(200 + seed)
    return {"qid": [f"fn-{seed}-{b}" for b in range(batch_size)],
            "video": torch.randn(batch_size, num_frames, dim, generator=g),
            "cands": torch.randn(batch_size, 5, dim, generator=g),
            "answer": torch.randint(0, 5, (batch_size,), generator=g)}


def call(model, x):
    return model(x["video"], x["cands"], frame_mask=x.get("frame_mask"), lengths=x.get("lengths"))


CASES = [
    AdapterCase("function-bucket", build, FunctionAdapter(call, temporal={"video": 1}, candidate={"cands": 1}), batch, 5),
    AdapterCase("function-lengths", build, FunctionAdapter(call, temporal={"video": 1}, candidate={"cands": 1},
                                                           subset="lengths", lengths_field="lengths"), batch, 5),
    AdapterCase("function-mask", build, FunctionAdapter(call, temporal={"video": 1}, candidate={"cands": 1},
                                                        subset="mask", mask_field="frame_mask"), batch, 5),
]
