"""STAGEAdapter: mask mode for the reference STAGE (a masked frame is a removed frame), bucket mode with
guards for the original class, the output layouts, and the ground-truth span of a view."""

from pathlib import Path

import pytest
import torch

from sparc.adapters import stage
from sparc.adapters.stage import STAGE, STAGEAdapter
from sparc.testing import assert_float32_close, original_fixture

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "stage"

from cases.case_stage import OriginalLikeSTAGE, stage_batch, tiny_stage  # pytest puts tests/ on sys.path
from helpers import as64, close64  # tests/helpers.py

# The equivalences (mask mode = removal, original class = reference, ...) run in float64 to 1e-10 relative
# (helpers.REL64): float32 span logits differ by 1e-4 between CPUs' kernels, while a masked frame that
# leaked would move them by 1e-2 or more.


def tiny64(*args, **kwargs):
    return tiny_stage(*args, **kwargs).double()


def batch64(*args, **kwargs):
    return as64(stage_batch(*args, **kwargs))


def random_keep(valid, seed):
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(valid.shape, generator=g) < 0.45) & valid
    for b in range(len(keep)):
        if not keep[b].any():
            keep[b, int(torch.nonzero(valid[b])[-1])] = True
    return keep


@torch.no_grad()
def sliced(adapter, model, batch, keep):
    """Each row alone with its dropped frames physically removed."""
    outs = [adapter.forward(model, adapter.slice_frames(adapter.select_batch(batch, torch.tensor([b])), keep[[b]]))
            for b in range(keep.shape[0])]
    return outs


@pytest.mark.parametrize("extra", [3, 1, 0])
def test_mask_mode_equals_physical_removal(extra):
    adapter = STAGEAdapter()
    worst = 0.0
    for seed in range(4):
        model = tiny64(seed=seed, extra_span_length=extra)
        batch = batch64(5, 10, seed)
        keep = random_keep(adapter.valid_frames(batch), seed)
        assert adapter.mode_for(model) == "mask"
        for train in (False, True):
            model.train(train)
            with torch.no_grad():
                got = adapter.forward_subset(model, batch, keep)
            alone = sliced(adapter, model, batch, keep)
            expected = torch.cat([o.logits for o in alone])
            worst = max(worst, float((got.logits - expected).abs().max()) / float(expected.abs().max()))
            # spans and attention: the kept frames equal the sliced run's; frames the view did not show
            # hold sparc.outputs.UNSEEN whatever the model wrote there (STAGE masks with -1e10)
            assert torch.equal(got.frames, keep)
            for b, o in enumerate(alone):
                for mine, theirs in zip(got.span_logits, o.span_logits):
                    assert close64(mine[b][:, keep[b]], theirs[0])
                    assert (mine[b][:, ~keep[b]] == float("-inf")).all()
                assert close64(got.attention[b][:, keep[b]], o.attention[0])
                assert (got.attention[b][:, ~keep[b]] == 0).all()
    assert worst <= 1e-10


def test_counting_valid_frames_is_what_makes_masks_exact(monkeypatch):
    """With spans widened by positions (the original's arithmetic) masking is no longer removal."""
    adapter = STAGEAdapter()
    model = tiny64(seed=0, extra_span_length=1)
    batch = batch64(5, 10, 0)
    keep = random_keep(adapter.valid_frames(batch), 0)

    def positional(frame_valid, st, ed):
        return st, ed

    monkeypatch.setattr(stage, "_valid_ranks", positional)
    model.eval()
    with torch.no_grad():
        got = adapter.forward_subset(model, batch, keep).logits
    expected = torch.cat([o.logits for o in sliced(adapter, model, batch, keep)])
    assert float((got - expected).abs().max()) > 1e-3


def test_view_span_by_hand():
    adapter = STAGEAdapter()
    batch = {"ts_label_st": torch.tensor([2, 2, 2, 2]), "ts_label_ed": torch.tensor([4, 4, 4, 4]),
             "ts_label_mask": torch.ones(4, 8, dtype=torch.bool)}
    keep = torch.zeros(4, 8, dtype=torch.bool)
    keep[0, [0, 3, 6]] = True   # frame 3 is inside the span
    keep[1, [0, 6]] = True      # none inside: frames 0 and 6 are both 2 away, the earlier wins
    keep[2, [5, 7]] = True      # none inside: 5 is nearest
    keep[3, [1, 2, 4, 7]] = True
    st, ed = adapter.view_span(batch, keep)
    assert st.tolist() == [3, 0, 5, 2] and ed.tolist() == [3, 0, 5, 4]
    # mask mode keeps positions, slicing re-indexes onto the kept frames
    masked = adapter.subset(batch, keep)
    assert masked["ts_label_st"].tolist() == [3, 0, 5, 2] and masked["ts_label_mask"].tolist() == keep.tolist()
    rows = torch.tensor([3])
    sliced_batch = adapter.slice_frames(adapter.select_batch(batch, rows), keep[rows])
    assert sliced_batch["ts_label_st"].tolist() == [1] and sliced_batch["ts_label_ed"].tolist() == [2]


def test_adapter_reproduces_the_original_fixture():
    fx = original_fixture(FIXTURE)
    x = fx.inputs
    plain = {"vid": x["vid"], "vid_mask": x["vid_mask"], "sub_bert": x["sub_bert"], "sub_mask": x["sub_mask"],
             "ts_label_mask": x["ts_label_mask"], "qas_bert": x["qas_bert"], "qas_mask": x["qas_mask"],
             "ts_label_st": x["ts_label_st"], "ts_label_ed": x["ts_label_ed"], "answer": x["target"], "qid": ["a", "b"]}
    adapter, model = STAGEAdapter(), fx.model
    # the recorded outputs are float32: to float32 rounding at their scale (sparc.testing.float32_tolerance)
    with torch.no_grad():
        out = adapter.forward(model.eval(), plain)
        assert_float32_close(out.logits, fx.outputs["logits"], name="logits")
        assert_float32_close(torch.stack(out.span_logits, dim=-1), fx.outputs["t_scores_raw"], name="t_scores_raw")
        assert_float32_close(out.attention, fx.outputs["vid_raw_s"], name="vid_raw_s")
        with stage._dropout_off(model):
            train = adapter.forward(model.train(), plain)
    model.eval()
    # training: one row per sample, the ground-truth-span row of the original's (4, 5) training logits
    assert train.logits.shape == (2, 5)
    assert_float32_close(train.logits, fx.outputs["train_logits"][[0, 2]], name="train_logits")
    assert model.use_sup_att and not model.inference_mode  # the adapter's switches are restored


def test_output_layouts_and_single_frames():
    adapter, model = STAGEAdapter(), tiny_stage(seed=1).eval()
    batch = stage_batch(3, 6, 1)
    with torch.no_grad():
        out = adapter.forward(model, batch)
        start, end = out.span_logits
        assert out.logits.shape == (3, 5) and start.shape == end.shape == (3, 5, 6)
        assert out.attention.shape == (3, 5, 6, 6, 4)  # (B, C, T, hypothesis words, regions)
        padded = ~batch["ts_label_mask"]
        assert (start[padded.unsqueeze(1).expand_as(start)] == -1e10).all()
        one = adapter.forward(model, stage_batch(2, 1, 2))
        assert one.logits.shape == (2, 5) and torch.isfinite(one.logits).all() and one.span_logits[0].shape == (2, 5, 1)
        lone = adapter.forward(model, stage_batch(1, 1, 3))  # batch of one, one frame
        assert lone.logits.shape == (1, 5) and torch.isfinite(lone.logits).all()
        model.train()
        single = adapter.forward_subset(model, batch, torch.eye(6, dtype=torch.bool)[[0, 2, 1]])
        assert single.logits.shape == (3, 5) and torch.isfinite(single.logits).all()


def test_original_class_runs_in_bucket_mode_with_guards():
    adapter = STAGEAdapter()
    reference, original = tiny64(seed=2), tiny64(OriginalLikeSTAGE, seed=2)
    original.load_state_dict(reference.state_dict())
    assert adapter.mode_for(original) == "bucket"
    batch = batch64(4, 8, 2)
    keep = random_keep(adapter.valid_frames(batch), 2)
    for train in (False, True):
        reference.train(train), original.train(train)
        with torch.no_grad():
            mine = adapter.forward_subset(reference, batch, keep).logits
            theirs = adapter.forward_subset(original, batch, keep).logits
        assert close64(mine, theirs)
        # a masked view is refused by the original (its spans count positions), so bucket mode is required
        with pytest.raises(AssertionError, match="positions"), torch.no_grad():
            original.forward_main(adapter.model_batch(adapter.subset(batch, keep)))
    assert original.use_sup_att  # switched off only for the adapter's call
    # ten hypotheses (a concat mixup): two groups of five for the original, one call for the reference
    ten = dict(batch, qas_bert=torch.cat([batch["qas_bert"], batch["qas_bert"].flip(1)], 1),
               qas_mask=torch.cat([batch["qas_mask"], batch["qas_mask"].flip(1)], 1), answer=torch.tensor([0, 7, 4, 9]))
    seven = dict(batch, qas_bert=ten["qas_bert"][:, :7], qas_mask=ten["qas_mask"][:, :7], answer=torch.tensor([0, 6, 4, 1]))
    for b in (ten, seven):
        for train in (False, True):
            reference.train(train), original.train(train)
            with torch.no_grad():
                mine, theirs = adapter.forward(reference, b), adapter.forward(original, b)
            C = b["qas_bert"].shape[1]
            assert theirs.logits.shape == (4, C) and theirs.attention.shape[1] == C
            assert close64(mine.logits, theirs.logits)
            # span logits hold -1e10 at padded frames: those exactly, the others to float64 rounding
            valid = b["ts_label_mask"][:, None].expand_as(mine.span_logits[0])
            assert torch.equal(mine.span_logits[0][~valid], theirs.span_logits[0][~valid])
            assert close64(mine.span_logits[0][valid], theirs.span_logits[0][valid])


def test_missing_span_means_the_whole_video():
    adapter, model = STAGEAdapter(), tiny64(seed=4).train()
    batch = batch64(3, 6, 4)
    last = batch["ts_label_mask"].long().sum(1) - 1
    with torch.no_grad():
        implicit = adapter.forward(model, {k: v for k, v in batch.items() if not k.startswith("ts_label_")} | {"ts_label_mask": batch["ts_label_mask"]})
        explicit = adapter.forward(model, dict(batch, ts_label_st=torch.zeros(3, dtype=torch.long), ts_label_ed=last))
    assert close64(implicit.logits, explicit.logits)


def test_single_stream_adapters():
    model = tiny64(seed=5, vfeat_flag=False).eval()
    adapter = STAGEAdapter(vfeat=False)
    assert set(adapter.temporal) == {"sub_bert", "sub_mask", "ts_label_mask"}
    batch = {k: v for k, v in batch64(3, 5, 5).items() if k not in ("vid", "vid_mask")}
    keep = random_keep(adapter.valid_frames(batch), 5)
    with torch.no_grad():
        got = adapter.forward_subset(model, batch, keep)
    assert got.attention is None
    assert close64(got.logits, torch.cat([o.logits for o in sliced(adapter, model, batch, keep)]))
    with pytest.raises(ValueError):
        STAGEAdapter(sub=False, vfeat=False)


def test_only_the_span_scorer_learns_nothing_from_the_logits():
    """Why the adapter sets find_unused_parameters: the start/end scorers pick the local span by an
    argmax (eval) or are bypassed by the ground-truth span (training); only STAGE's span loss trains them."""
    adapter, model = STAGEAdapter(), tiny_stage(seed=6).train()
    adapter.forward(model, stage_batch(3, 5, 6)).logits.sum().backward()
    unused = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is None}
    assert unused == {"temporal_scoring_st_layers", "temporal_scoring_ed_layers"} and adapter.find_unused_parameters


def test_sparc_step_with_pairwise_mixup():
    import sparc
    from sparc.contract import causal_priors

    batch = batch64(4, 5, 7)
    losses = []
    for cls in (STAGE, OriginalLikeSTAGE):
        model = tiny64(cls, seed=7).train()
        wrapped = sparc.wrap(model, STAGEAdapter(), [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation(),
                                                     sparc.TemporalGuidedMixup(alpha=1.0, beta=1.0, candidates="pairwise")])
        wrapped.reseed(0)
        out = wrapped(batch, priors=causal_priors(4, 5, 5, batch["answer"]).double())
        assert {"guided", "consistency", "spatial"} <= set(out.terms) and torch.isfinite(out.loss)
        assert out.loss.dtype == torch.float64
        losses.append(float(out.loss.detach()))
    # the original class through the adapter's guards: the same step, to float64 rounding
    assert abs(losses[0] - losses[1]) <= 1e-10 * abs(losses[0])
