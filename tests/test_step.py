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


# ---- the text side, computed once per step ---------------------------------------------------------

from test_adapter_contract import CASES  # noqa: E402  (tests/ is on sys.path)

SPLIT = [c for c in CASES if c.name in ("hga-reference", "hme-reference", "memory-reference-mc", "memory-reference-oe",
                                         "vgt-reference", "vgt-reference-open-ended")]


def _views(case, share_text, mode):
    """Whole, causal (varied kept counts) and one-frame views of one step and the gradients of their
    sum, in float64 with the model in eval mode (no dropout draws to differ)."""
    from sparc.contract import cast_floating, varied_keep

    model = case.build_model(0).to(torch.float64).eval()
    batch = cast_floating(case.make_batch(4, 5, 0), torch.float64)
    adapter = case.adapter.with_subset_mode(mode)
    keep = varied_keep(adapter.valid_frames(batch).cpu(), 0)
    answer = torch.as_tensor(batch[adapter.answer_field])
    step = sparc.Step(model, adapter, batch, None, answer, case.num_candidates, keep, share_text=share_text)
    outs = [step.whole().logits, step.causal().logits, step.single(torch.tensor([0, 1, 2, 3]) % 5).logits]
    sum(o.sum() for o in outs).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return outs, grads, step.text


@pytest.mark.parametrize("case", SPLIT, ids=[c.name for c in SPLIT])
def test_shared_text_work_gives_the_same_views_and_gradients(case):
    """Computing the question/candidate encodings once for all views is exact: every view and every
    gradient equals the step that re-encodes per view, in float64 to 1e-10 relative (rounding alone
    leaves ~1e-15; a view that read another view's rows or frames would differ by far more)."""
    for mode in dict.fromkeys([case.adapter.mode_for(case.build_model(0))] + list(case.modes)):
        shared, shared_grads, text = _views(case, True, mode)
        alone, alone_grads, none = _views(case, False, mode)
        assert text is not None and none is None
        for a, b in zip(shared, alone):
            assert close64(a, b), (case.name, mode)
        assert shared_grads.keys() == alone_grads.keys()
        # one vector: a parameter whose gradient nearly cancels (1e-16) is judged on the model's scale
        names = sorted(shared_grads)
        assert close64(torch.cat([shared_grads[n].flatten() for n in names]),
                       torch.cat([alone_grads[n].flatten() for n in names])), (case.name, mode)


def test_the_text_encoder_runs_once_per_step_and_again_after_an_augmentation():
    from test_wrap import small_hga

    model = small_hga()
    calls = []
    model.qns_encoder.register_forward_hook(lambda *a: calls.append(1))
    batch = {"vid_feats": torch.randn(3, 6, 8), "qas": torch.randn(3, 5, 4, 768),
             "qas_lengths": torch.tensor([[4, 3, 4, 2, 4]] * 3), "answer": torch.tensor([0, 1, 2])}
    priors = causal_priors(3, 6, 5, batch["answer"])
    wrapped = sparc.wrap(model, sparc.adapters.HGAAdapter(), [sparc.TemporalGuidance(), sparc.SpatialDistillation()])
    wrapped(batch, priors=priors).loss.backward()
    assert len(calls) == 5                           # 5 candidates, once each, for three views
    calls.clear()
    tgm = sparc.TemporalGuidedMixup()                # concat: the mixed batch has 10 candidates
    sparc.wrap(model, sparc.adapters.HGAAdapter(), [sparc.TemporalGuidance(), tgm])(batch, priors=priors)
    assert len(calls) == 10
    calls.clear()
    sparc.wrap(model, sparc.adapters.HGAAdapter(), [])(batch)   # plain: the bare model's own forward
    assert len(calls) == 5
