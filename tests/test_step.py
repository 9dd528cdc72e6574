"""The step pipeline: views are full ModelOutputs in every subset mode, computed once, dropped when an
augmentation rewrites the batch; selection is declared, resolved once, and open to any technique."""

import pytest
import torch

import sparc
from sparc.adapters.stage import STAGEAdapter
from sparc.contract import causal_priors

from cases.case_stage import stage_batch, tiny_stage  # pytest puts tests/ on sys.path
from helpers import as64, close64
from test_wrap import MeanScorer, priors_with, toy_adapter, toy_batch


class Probe(sparc.Technique):
    """Reads the views a span or attention technique would read, and records them."""

    def __init__(self, frames=None):
        super().__init__()
        self.frames = frames

    @property
    def needs_frames(self):
        return True

    def loss_terms(self, step):
        self.keep = step.keep
        self.causal, self.whole = step.causal(), step.whole()
        return {}


@pytest.mark.parametrize("mode", ["bucket", "mask"])
def test_stage_span_logits_and_attention_come_back_from_a_causal_view(mode):
    """In bucket mode every group is run physically sliced; its span logits and attention are scattered
    back to batch order and to the frames each row kept, equal to each row run alone (float64)."""
    torch.manual_seed(0)
    adapter = STAGEAdapter().with_subset_mode(mode)
    model = tiny_stage(seed=3).double().train()
    batch = as64(stage_batch(4, 6, 3))
    priors = causal_priors(4, 6, 5, batch["answer"]).double()
    probe = Probe()
    wrapped = sparc.wrap(model, adapter, [probe])
    with torch.random.fork_rng():
        wrapped(batch, priors=priors)
    keep = probe.keep
    counts = keep.sum(dim=1)
    assert len(set(counts.tolist())) > 1 and bool((keep != adapter.valid_frames(batch)).any(dim=1).all())
    out = probe.causal
    assert torch.equal(out.frames, keep)
    model.eval()   # each row alone, dropout off, against the same rows of a fresh eval-mode view
    step = sparc.Step(model, adapter, batch, priors, batch["answer"], 5, keep)
    with torch.no_grad():
        out = step.causal()
        for b in range(4):
            alone = adapter.forward(model, adapter.slice_frames(adapter.select_batch(batch, torch.tensor([b])), keep[[b]]))
            assert close64(out.logits[b], alone.logits[0])
            for mine, theirs in zip(out.span_logits, alone.span_logits):
                assert mine.shape[-1] == 6 and close64(mine[b][:, keep[b]], theirs[0])
                assert (mine[b][:, ~keep[b]] == float("-inf")).all()
            assert out.attention.shape[2] == 6 and close64(out.attention[b][:, keep[b]], alone.attention[0])
            assert (out.attention[b][:, ~keep[b]] == 0).all()


def test_every_mode_gives_the_same_view():
    """mask, lengths and bucket give one ModelOutput (float64 to rounding) over the same frames."""
    model = MeanScorer().double()
    batch = as64(toy_batch())
    keep = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 0, 1, 0]], dtype=torch.bool)
    adapter = sparc.adapters.FunctionAdapter(lambda m, x: m(x["video"], x["cands"], x.get("lengths")),
                                             temporal={"video": 1}, subset="lengths", lengths_field="lengths")
    views = {m: sparc.Step(model, adapter.with_subset_mode(m), batch, None, batch["answer"], 3).view(keep)
             for m in ("lengths", "bucket")}
    assert close64(views["lengths"].logits, views["bucket"].logits)
    for v in views.values():
        assert torch.equal(v.frames, keep) and v.span_logits is None


def test_a_view_runs_once_and_an_augmentation_drops_the_cached_views():
    model, adapter, batch = MeanScorer(), toy_adapter(), toy_batch()
    step = sparc.Step(model, adapter, batch, None, batch["answer"], 3)
    index = torch.tensor([0, 4, 2, 1])
    a, b = step.single(index), step.view(torch.nn.functional.one_hot(index, 5).bool())
    assert a is b and model.calls == [1]
    assert step.whole() is step.view() and model.calls == [1, 5]
    other = step.single(torch.tensor([1, 1, 1, 1]))               # another frame is another view
    assert other is not a and model.calls == [1, 5, 1]
    step.replace_batch(toy_batch(seed=1), batch["answer"], None, 3)
    step.whole()
    assert model.calls == [1, 5, 1, 5]


def test_rows_showing_every_frame_reuse_the_whole_video_output():
    model, adapter, batch = MeanScorer(), toy_adapter(), toy_batch()
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    step = sparc.Step(model, adapter, batch, None, batch["answer"], 3)
    out = step.view(keep)
    assert model.calls == [1, 5]                                  # row 1 alone, then the whole video
    whole = step.whole().logits
    assert torch.equal(out.logits[[0, 2, 3]], whole[[0, 2, 3]])
    assert out.frames[2].all()                                    # keeps nothing: shown the whole video


def test_a_view_refuses_padding_and_bad_shapes():
    batch = {**toy_batch(), "lengths": torch.tensor([5, 3, 5, 5])}
    step = sparc.Step(MeanScorer(), toy_adapter(), batch, None, batch["answer"], 3)
    with pytest.raises(ValueError, match="batch row 1: a view can show only a video's real frames"):
        step.single(torch.tensor([0, 4, 0, 0]))
    with pytest.raises(ValueError, match=r"\[B, T\] = \[4, 5\] bool mask or \[B\] frame indices"):
        step.view(torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="one frame index per sample"):
        step.view(torch.tensor([0, 1]))


def test_an_own_technique_takes_part_in_the_selection():
    """Any technique can declare a selector; wrap(frames=...) names it for all; disagreements fail."""
    batch = toy_batch()
    priors = priors_with(torch.tensor([[0.9, 0.1, 0.8, 0.1, 0.1]] * 4), batch["answer"])
    probe = Probe(frames=sparc.TopKFrames(1))
    sparc.wrap(MeanScorer(), toy_adapter(), [probe])(batch, priors=priors)
    assert probe.keep.sum(dim=1).tolist() == [1, 1, 1, 1] and probe.keep[:, 0].all()
    follower = Probe()
    out = sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance(), follower], frames=sparc.TopKFrames(2))(
        batch, priors=priors)
    assert torch.equal(follower.keep, out.keep) and out.keep[:, [0, 2]].all() and out.keep.sum() == 8
    with pytest.raises(ValueError, match=r"selections disagree.*wrap\(frames=...\).*TopKFrames\(k=2\).*Probe.*TopKFrames\(k=1\)"):
        sparc.wrap(MeanScorer(), toy_adapter(), [Probe(frames=sparc.TopKFrames(1))], frames=sparc.TopKFrames(2))
    with pytest.raises(TypeError, match="frames must be a FrameSelector"):
        sparc.wrap(MeanScorer(), toy_adapter(), [], frames="top_k")


def test_no_selection_without_a_reader():
    """A plain or spatial-only wrap selects nothing and needs no priors for it."""
    wrapped = sparc.wrap(MeanScorer(), toy_adapter(), [])
    assert wrapped.frames is None
    assert wrapped(toy_batch()).keep is None
    assert sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance()]).frames == sparc.CausalFrames()


def test_two_augmentations_or_two_answer_owners_are_refused():
    with pytest.raises(ValueError, match="Mixup and TemporalGuidedMixup both rewrite the batch"):
        sparc.wrap(MeanScorer(), toy_adapter(), [sparc.Mixup(), sparc.TemporalGuidedMixup(), sparc.TemporalGuidance()])

    class Chained(sparc.TemporalGuidedMixup):
        def composes_after(self, other):
            return isinstance(other, sparc.Mixup)

    sparc.wrap(MeanScorer(), toy_adapter(), [sparc.Mixup(), Chained()])    # declared: allowed
    with pytest.raises(ValueError, match="both take over the answer loss"):
        sparc.wrap(MeanScorer(), toy_adapter(), [sparc.TemporalGuidance(), sparc.TemporalGuidance(whole_ce_weight=1.0)])
