"""Frame selectors: hand-computed selections, composition, validation, and selection before augmentation."""

import pytest
import torch

import sparc
from sparc.selection import SelectionInputs

# P[b, t, answer] for two samples of four frames; sample 1 has three real frames.
P_ANSWER = torch.tensor([[0.9, 0.2, 0.6, 0.4],
                         [0.3, 0.1, 0.5, 0.0]])
VALID = torch.tensor([[True, True, True, True], [True, True, True, False]])


def inputs(batch=None):
    answer = torch.tensor([1, 0])
    priors = torch.full((2, 4, 2), 0.0)
    priors[0, :, 1], priors[0, :, 0] = P_ANSWER[0], 1 - P_ANSWER[0]
    priors[1, :, 0], priors[1, :, 1] = P_ANSWER[1], 1 - P_ANSWER[1]
    return SelectionInputs(batch or {}, priors, answer, VALID)


def rows(keep):
    return [torch.nonzero(r).flatten().tolist() for r in keep]


def test_causal_frames_threshold_and_empty_policies():
    assert rows(sparc.CausalFrames()(inputs())) == [[0, 2], [0, 1, 2]]   # 0.5 is not kept; row 1 empty
    assert rows(sparc.CausalFrames(0.35)(inputs())) == [[0, 2, 3], [2]]
    assert rows(sparc.CausalFrames(0.5, "top1")(inputs())) == [[0, 2], [2]]
    assert rows(sparc.CausalFrames(0.5, "skip")(inputs())) == [[0, 2], []]


def test_top_k_counts_only_real_frames():
    assert rows(sparc.TopKFrames(2)(inputs())) == [[0, 2], [0, 2]]
    assert rows(sparc.TopKFrames(9)(inputs())) == [[0, 1, 2, 3], [0, 1, 2]]


def test_span_frames_read_the_batch_fields():
    batch = {"span_start": torch.tensor([0.9, 2.6]), "span_end": torch.tensor([2.1, 2.7]),
             "frame_times": torch.tensor([0.5, 1.5, 2.5, 3.5])}
    # sample 1's span covers no frame: the frame nearest its centre 2.65 is 2.5
    assert rows(sparc.SpanFrames()(inputs(batch))) == [[1], [2]]
    with pytest.raises(ValueError, match=r"no \['span_start', 'span_end', 'frame_times'\] \(field: span_start\)"):
        sparc.SpanFrames()(inputs())


def test_intersection_and_union():
    causal, top1 = sparc.CausalFrames(0.35), sparc.TopKFrames(1)
    assert rows((causal & top1)(inputs())) == [[0], [2]]
    assert rows((causal | sparc.TopKFrames(2))(inputs())) == [[0, 2, 3], [0, 2]]
    # nothing in common: "all" falls back to the real frames, "skip" keeps none
    assert rows(sparc.Intersection((sparc.CausalFrames(0.8, "skip"), sparc.SpanFrames()), "skip")(
        inputs({"span_start": torch.tensor([1.0, 1.0]), "span_end": torch.tensor([2.0, 2.0]),
                "frame_times": torch.tensor([0.5, 1.5, 2.5, 3.5])}))) == [[], []]
    assert rows(sparc.Intersection((sparc.CausalFrames(0.8, "skip"), sparc.TopKFrames(1)))(inputs())) == [[0], [0, 1, 2]]


def test_selectors_compare_by_value_and_validate_in_their_constructors():
    assert sparc.CausalFrames(0.5) == sparc.CausalFrames() and sparc.CausalFrames(0.4) != sparc.CausalFrames()
    assert sparc.TopKFrames(2) & sparc.SpanFrames() == sparc.Intersection((sparc.TopKFrames(2), sparc.SpanFrames()))
    for bad, match in [(lambda: sparc.CausalFrames(1.5), "threshold must be a probability"),
                       (lambda: sparc.CausalFrames(True), "threshold must be a probability"),
                       (lambda: sparc.CausalFrames(0.5, "never"), "empty must be one of"),
                       (lambda: sparc.TopKFrames(0), "k must be a positive int"),
                       (lambda: sparc.TopKFrames(2.0), "k must be a positive int"),
                       (lambda: sparc.Intersection((sparc.TopKFrames(1),)), "at least two"),
                       (lambda: sparc.Intersection((sparc.TopKFrames(1), sparc.SpanFrames()), "top1"), "empty must be one of")]:
        with pytest.raises(ValueError, match=match):
            bad()
    with pytest.raises(TypeError, match="combines FrameSelectors"):
        sparc.Union((sparc.TopKFrames(1), "span"))


def test_priors_selectors_without_priors_say_so():
    with pytest.raises(ValueError, match=r"CausalFrames\(threshold=0.5, empty='all'\) selects frames from teacher priors"):
        sparc.CausalFrames()(SelectionInputs({}, None, torch.tensor([0, 1]), VALID))
