"""sparc.frame_scores: a model's answer probability from each frame alone, on hand-made numbers."""

import math

import torch

import sparc
from sparc.adapters import FunctionAdapter
from sparc.frame_scores import single_frame_scores


class MeanOfFrames(torch.nn.Module):
    """logits = the mean of the shown frames' first C features (a frame alone gives its own row)."""

    def forward(self, video, lengths):
        T = video.shape[1]
        shown = (torch.arange(T)[None, :] < lengths[:, None]).to(video.dtype)
        return (video * shown[..., None]).sum(1) / shown.sum(1, keepdim=True)


def test_scores_are_the_whole_video_answers_probability_per_frame_alone():
    video = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                          [[0.0, 3.0], [0.0, 0.0], [9.0, 9.0]]])           # row 1 has 2 real frames
    batch = {"video": video, "lengths": torch.tensor([3, 2]), "qid": ["a", "b"], "answer": torch.tensor([0, 1])}
    adapter = FunctionAdapter(lambda m, b: m(b["video"], b["lengths"]), temporal={"video": 1},
                              subset="lengths", lengths_field="lengths")
    model = sparc.wrap(MeanOfFrames(), adapter, [sparc.SpatialDistillation()])
    model.train()
    scores, valid, answer = single_frame_scores(model, batch)
    assert model.training                                                  # left as it was
    # row 0: mean (1, 1/3) -> answer 0; frame alone (2,0), (0,1), (1,0): p(0) = sigmoid(2), sigmoid(-1), sigmoid(1)
    # row 1: mean of 2 real frames (0, 1.5) -> answer 1; frames (0,3), (0,0): p(1) = sigmoid(3), 1/2; frame 2 padding
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = torch.tensor([[sig(2), sig(-1), sig(1)], [sig(3), 0.5, 0.0]])
    assert answer.tolist() == [0, 1] and valid.tolist() == [[True] * 3, [True, True, False]]
    assert torch.allclose(scores, expected, atol=1e-6)                     # float32 softmax: ~1e-7 rounding
