"""The reference STAGE (sparc.adapters.stage) against the original jayleicn/TVQAplus code's fixture,
and what it adds: masked frames that behave as removed frames, any number of hypotheses, batches of
one and single frames, the attention loss at global image indices."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sparc.adapters import stage
from sparc.adapters.stage import STAGE, STAGEBatch, fixture_batch, fixture_model, stage_opt
from sparc.testing import assert_float32_close

from helpers import as64, close64  # tests/helpers.py

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "stage"

# Equivalences (a masked frame is a removed frame, a row is that sample alone, ...) run in float64 to 1e-10
# relative (helpers.REL64): float32 span scores differ by 1e-4 between CPUs' kernels; a masked frame that
# leaked would move them by 1e-2 or more. The fixture's float32 outputs are compared to float32 rounding.


def tiny(seed=0, **opt):
    """A float64 tiny STAGE."""
    torch.manual_seed(seed)
    return STAGE(stage_opt(hsz=8, embedding_size=12, vfeat_size=10, dropout=0.0, **opt)).double()


def random_batch(B=3, T=7, C=5, R=4, Ls=5, L=6, seed=0, lengths=None):
    """An original-style float64 batch (prefix frame masks, features zero where masked)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths) if lengths is not None else torch.randint(1, T + 1, (B,), generator=g)
    frame = torch.arange(T)[None] < lengths[:, None]
    region = (torch.arange(R)[None, None] < torch.randint(1, R + 1, (B, T, 1), generator=g)) & frame[..., None]
    sub = (torch.arange(Ls)[None, None] < torch.randint(1, Ls + 1, (B, T, 1), generator=g)) & frame[..., None]
    qa = torch.arange(L)[None, None] < torch.randint(2, L + 1, (B, C, 1), generator=g)
    st = (torch.rand(B, generator=g) * lengths).long()
    ed = torch.minimum(st + 1, lengths - 1)
    return as64(STAGEBatch(
        qas_bert=torch.randn(B, C, L, 12, generator=g) * qa[..., None], qas_mask=qa.float(),
        sub_bert=torch.randn(B, T, Ls, 12, generator=g) * sub[..., None], sub_mask=sub.float(),
        vid=torch.randn(B, T, R, 10, generator=g) * region[..., None], vid_mask=region.float(),
        target=torch.randint(0, C, (B,), generator=g), ts_label={"st": st, "ed": ed}, ts_label_mask=frame.float(),
        qid=list(range(B)),
    ))


def rows(batch, index, C=None):
    """The batch restricted to samples ``index`` (and hypotheses ``C`` if given)."""
    out = STAGEBatch(batch)
    for k in ("qas_bert", "qas_mask", "sub_bert", "sub_mask", "vid", "vid_mask", "target", "ts_label_mask"):
        out[k] = batch[k][index]
    out.ts_label = {k: v[index] for k, v in batch.ts_label.items()}
    out.qid = list(range(len(out.target)))
    if C is not None:
        out.qas_bert, out.qas_mask = out.qas_bert[:, C], out.qas_mask[:, C]
    return out


@torch.no_grad()
def run(model, batch, train=False):
    model.train(train)
    return model.forward_main(batch)


# ---- the original's outputs ----------------------------------------------------------------------

def test_fixture_training_forward_has_one_proposal_row_per_sample(fx):
    # the training forward returned one proposal row beyond each sample's ground-truth row
    assert fx.outputs["train_logits"].shape[0] == 4 and fx.outputs["train_targets"].tolist() == [4, 4, 3, 3]


def test_state_dict_is_the_originals_and_loads_strictly():
    config = json.loads((FIXTURE / "config.json").read_text())
    model, _ = fixture_model(config)
    sd = load_file(str(FIXTURE / "state_dict.safetensors"))
    own = model.state_dict()
    assert list(own)[:12] == config["state_dict_first_keys"]
    assert set(own) == set(sd) and len(own) == config["state_dict_num_keys"]
    assert sum(v.numel() for v in own.values()) == config["state_dict_num_elements"]
    # the positional tables are buffers in the checkpoint, and a fresh model computes the same ones
    assert torch.allclose(own["input_encoder.stacked_encoderBlocks.0.position_encoding.pe"],
                          sd["input_encoder.stacked_encoderBlocks.0.position_encoding.pe"], atol=1e-6)
    model.load_state_dict(sd, strict=True)
    broken = dict(sd)
    del broken["classifier.conv.2.bias"]
    with pytest.raises(RuntimeError):
        model.load_state_dict(broken)
    with pytest.raises(RuntimeError):
        model.load_state_dict(dict(sd, **{"concat_fc.9.weight": torch.zeros(1)}))


def test_call_signature_and_outputs_are_the_originals(fx):
    model, batch = fx.model, fixture_batch(fx.inputs)
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert len(out) == 5 and out[0].shape == (2, 5) and out[2] is None
    assert torch.allclose(out[4].sum(dim=2), torch.ones(2, 5, 2))  # eval: span probabilities over frames
    model.train()
    with torch.no_grad(), stage._dropout_off(model):
        (logits, targets), att_loss, _, ts_loss, t_raw = model(batch)
    model.eval()
    assert logits.shape == (4, 5) and targets.tolist() == [4, 4, 3, 3] and float(att_loss) > 0
    assert_float32_close(t_raw, fx.outputs["train_t_scores_raw"], name="train_t_scores_raw")
    # inference mode returns the original's dict, grounding boxes included
    model.inference_mode = True
    try:
        with torch.no_grad():
            result = model(STAGEBatch(batch, eval_object_word_ids=[int(batch.qas[0, 0, 1])], vid_name=["a", "b"],
                                      image_indices=[list(range(6))] * 2, boxes=[[list(range(5))] * 3, [list(range(5))] * 2]))
    finally:
        model.inference_mode = False
    assert set(result) == {"answer", "t_scores", "att_predictions"}
    assert_float32_close(result["answer"], fx.outputs["logits"], name="logits")
    assert len(result["att_predictions"]) == 2 and set(result["att_predictions"][0]) == set(range(5))


# ---- spans, counted among valid frames -----------------------------------------------------------

def test_best_span_by_hand():
    p_st = torch.tensor([[0.1, 0.6, 0.3]])
    p_ed = torch.tensor([[0.5, 0.2, 0.3]])
    # products with end >= start: (0,0) .05 (0,1) .02 (0,2) .03 (1,1) .12 (1,2) .18 (2,2) .09
    st, ed, conf = stage._best_spans(p_st, p_ed)
    assert (st.item(), ed.item()) == (1, 2) and abs(conf.item() - 0.18) < 1e-7
    # (2, 0) would score 0.15 but ends before it starts
    st, ed, _ = stage._best_spans(torch.tensor([[0.1, 0.2, 0.7]]), torch.tensor([[0.9, 0.05, 0.05]]))
    assert (st.item(), ed.item()) != (2, 0)
    uniform = torch.full((1, 4), 0.25)
    st, ed, _ = stage._best_spans(uniform, uniform)
    assert (st.item(), ed.item()) == (3, 3)  # ties: the last pair


def test_local_window_widens_by_valid_frames():
    valid = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 1]], dtype=torch.bool)  # valid positions 0 2 3 6 7 = ranks 0..4
    feats = torch.arange(8.0).view(1, 1, 8, 1)  # a frame's feature is its position: the max is the last frame taken
    mask = torch.ones(1, 1, 8, 1)

    def pooled(st, ed, extra):
        lo, hi = stage._valid_ranks(valid, torch.tensor([[st]]), torch.tensor([[ed]]))
        return stage._window_max(feats, mask, valid, lo, hi, extra).item()

    assert pooled(3, 3, 0) == 3.0
    assert pooled(3, 3, 1) == 6.0  # one valid frame each side: positions 2 and 6, not 2..4
    assert pooled(0, 0, 1) == 2.0
    assert pooled(6, 7, 3) == 7.0
    assert pooled(4, 5, 0) == 6.0  # a span over masked frames only: the next valid frame
    assert pooled(4, 5, 1) == 6.0  # ranks 1..3 (positions 2, 3, 6)
    # masked feature cells are never chosen
    mask[0, 0, 6] = 0
    lo, hi = stage._valid_ranks(valid, torch.tensor([[3]]), torch.tensor([[3]]))
    assert stage._window_max(feats, mask, valid, lo, hi, 1).item() == 3.0


def test_training_proposals_by_hand():
    # one sample, 4 frames, hypothesis 1 correct; its start/end logits make (1, 2) certain
    scores = torch.zeros(1, 2, 4, 2)
    scores[0, 1, :, 0] = torch.tensor([-20.0, 20.0, -20.0, -20.0])
    scores[0, 1, :, 1] = torch.tensor([-20.0, -20.0, 20.0, -20.0])
    target = torch.tensor([1])
    for gt, expect in (((1, 2), True), ((1, 3), True), ((0, 3), True), ((0, 0), False), ((3, 3), False)):
        label = {"st": torch.tensor([gt[0]]), "ed": torch.tensor([gt[1]])}
        gt_lo, gt_hi, lo, hi, accepted = stage.training_proposals(scores, target, label)
        assert (lo.item(), hi.item()) == (1, 2) and (gt_lo.item(), gt_hi.item()) == gt
        # IoU of [1, 3) with the label: 1, 2/3, 2/4 (kept at >= 0.5), 0, 0
        assert accepted.item() == expect, gt
    # confidence below 0.01: never a proposal
    label = {"st": torch.tensor([1]), "ed": torch.tensor([2])}
    assert not stage.training_proposals(torch.zeros(1, 2, 20, 2), target, label)[4].item()  # 1/400 < 0.01


def test_masked_frames_equal_removed_frames():
    """A frame with its region, subtitle and frame masks at 0 (and garbage features) is a removed frame:
    same logits in eval and training, same span scores and attention on the other frames."""
    g = torch.Generator().manual_seed(3)
    for seed, extra in ((0, 3), (1, 1), (2, 0)):
        model = tiny(seed, extra_span_length=extra)
        full = random_batch(B=1, T=8, seed=seed, lengths=[8])
        full.ts_label = {"st": torch.tensor([3]), "ed": torch.tensor([6])}
        keep = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
        masked = STAGEBatch(full)
        garbage = lambda shape: 50 * torch.randn(shape, generator=g, dtype=torch.float64)
        masked.vid = torch.where(keep[None, :, None, None], full.vid, garbage(full.vid.shape))
        masked.sub_bert = torch.where(keep[None, :, None, None], full.sub_bert, garbage(full.sub_bert.shape))
        masked.vid_mask = full.vid_mask * keep[None, :, None]
        masked.sub_mask = full.sub_mask * keep[None, :, None]
        masked.ts_label_mask = full.ts_label_mask * keep
        masked.ts_label = {"st": torch.tensor([3]), "ed": torch.tensor([5])}  # frames 3..5 of which 4 is masked
        removed = STAGEBatch(full)
        for k in ("vid", "vid_mask", "sub_bert", "sub_mask", "ts_label_mask"):
            removed[k] = full[k][:, keep]
        removed.ts_label = {"st": torch.tensor([2]), "ed": torch.tensor([3])}  # the same frames, re-indexed
        for train in (False, True):
            a, b = run(model, masked, train), run(model, removed, train)
            logits_a, logits_b = (a[0][0], b[0][0]) if train else (a[0], b[0])
            assert logits_a.shape == logits_b.shape
            assert close64(logits_a, logits_b), (seed, train)
            assert close64(a[5]["temporal_scores"][:, :, keep], b[5]["temporal_scores"])
            assert (a[5]["temporal_scores"][:, :, ~keep] == -1e10).all()
            # vid_raw_s holds -1e10 at masked regions of kept frames too: those exactly, the rest to rounding
            kept, removed_s = a[5]["vid_raw_s"][:, :, keep], b[5]["vid_raw_s"]
            filled = removed_s <= -1e10 + 2
            assert torch.equal(kept <= -1e10 + 2, filled) and close64(kept[~filled], removed_s[~filled])
            assert (a[5]["vid_raw_s"][:, :, ~keep] <= -1e10 + 2).all()
        assert close64(a[3], b[3])  # temporal loss too


# ---- beyond the original -------------------------------------------------------------------------

def test_batch_of_one_and_single_frame():
    model = tiny(0)
    batch = random_batch(B=3, T=6, seed=1)
    whole = run(model, batch)[0]
    for n in range(3):
        assert close64(run(model, rows(batch, [n]))[0], whole[n:n + 1])
    one = random_batch(B=2, T=1, seed=2)
    for train in (False, True):
        out = run(model, one, train)
        logits = out[0][0] if train else out[0]
        assert torch.isfinite(logits).all() and torch.isfinite(out[3])
    single = rows(one, [0])
    assert torch.isfinite(run(model, single, True)[0][0]).all()


def test_any_number_of_hypotheses():
    model = tiny(0)
    batch = random_batch(B=2, T=5, C=5, seed=4)
    batch.target = torch.tensor([1, 0])
    five = run(model, batch)[0]
    three = run(model, rows(batch, [0, 1], C=[0, 1, 2]))[0]
    assert three.shape == (2, 3) and close64(three, five[:, :3])
    seven = run(model, rows(batch, [0, 1], C=[0, 1, 2, 3, 4, 0, 1]))[0]
    assert seven.shape == (2, 7) and close64(seven, five[:, [0, 1, 2, 3, 4, 0, 1]])
    # in training, hypotheses after the ones the proposals look at do not change the rows either
    (rows5, _), *_ = run(model, batch, True)
    (rows7, _), *_ = run(model, rows(batch, [0, 1], C=[0, 1, 2, 3, 4, 0, 1]), True)
    assert close64(rows7[:, :5], rows5)


def test_extra_temporal_layers_do_not_change_outputs():
    base, deeper = tiny(0), tiny(0, t_iter=2)
    extra = set(deeper.state_dict()) - set(base.state_dict())
    assert extra and all(".1." in k or ".2." in k for k in extra)
    assert "cls_projection_layers.1.conv.2.depthwise_conv.weight" in extra  # ConvLinear over frames
    deeper.load_state_dict(base.state_dict(), strict=False)
    batch = random_batch(seed=5)
    for train in (False, True):
        a, b = run(base, batch, train), run(deeper, batch, train)
        assert close64(a[4], b[4])
        assert close64(a[0][0] if train else a[0], b[0][0] if train else b[0])


def test_single_stream_models():
    for flags, absent in (({"vfeat_flag": False}, ("vid_fc.", "concat_fc.")), ({"sub_flag": False}, ("concat_fc.",))):
        model = tiny(0, **flags)
        assert not any(k.startswith(absent) for k in model.state_dict())
        out = run(model, random_batch(seed=6))
        assert out[0].shape == (3, 5) and torch.isfinite(out[0]).all()
        assert ("vid_raw_s" in out[5]) == flags.get("vfeat_flag", True)


def test_attention_loss_by_hand():
    model = tiny(0)  # alpha 20, lse
    scores = torch.full((1, 2, 3, 2, 3), -1e10)
    scores[0, 1, 1] = torch.tensor([[0.9, 0.2, 0.5], [0.0, 0.0, 0.0]])
    scores[0, 1, 2] = torch.tensor([[0.1, 0.3, 0.4], [0.0, 0.0, 0.0]])
    # annotation starts at frame 1 and covers frames 1 and 2; word 0 has box 0 on frame 1, box 2 on frame 2
    labels = [[torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])]]
    pos, neg = model.att_sample_indices(scores, labels, torch.tensor([1]), [1], num_negatives=2, use_hard_negatives=True)
    # hard negatives: the highest-scoring other boxes of the same frame and word (the original indexed a
    # tensor cut to 2 annotated frames with frame index 2 here and failed)
    assert pos.tolist() == [[0, 1, 1, 0, 0]] * 2 + [[0, 1, 2, 0, 2]] * 2
    assert neg.tolist() == [[0, 1, 1, 0, 2], [0, 1, 1, 0, 1], [0, 1, 2, 0, 1], [0, 1, 2, 0, 0]]
    loss = model.att_loss_from_indices(scores, pos, neg)
    pairs = [(0.9, 0.5), (0.9, 0.2), (0.4, 0.3), (0.4, 0.1)]
    expected = sum(torch.log1p(torch.exp(torch.tensor(20 * (n - p)))).item() for p, n in pairs)
    assert abs(loss.item() - expected) < 1e-5
    model.att_loss_type = "hinge"  # margin 0.1: only the (0.4, 0.3) pair is within the margin
    assert abs(model.att_loss_from_indices(scores, pos, neg).item() - 0.0) < 1e-6
    scores[0, 1, 2, 0, 1] = 0.35
    assert abs(model.att_loss_from_indices(scores, pos, neg).item() - 0.05) < 1e-6
    # random negatives come from the same frame and word
    torch.manual_seed(0)
    _, neg = model.att_sample_indices(scores, labels, torch.tensor([1]), [1], num_negatives=2)
    assert all((r[2], r[3]) in ((1, 0), (2, 0)) and r[4] != (0 if r[2] == 1 else 2) for r in neg.tolist())
    # no positive box anywhere: no loss (the original failed on an empty torch.cat)
    none = [[torch.zeros(1, 3), torch.zeros(1, 3)]]
    pos, neg = model.att_sample_indices(scores, none, torch.tensor([1]), [1])
    assert pos.shape == (0, 5) and model.att_loss_from_indices(scores, pos, neg).item() == 0.0


def test_batches_without_labels():
    model = tiny(0)
    batch = random_batch(seed=7)
    out = run(model, batch, True)
    assert out[1] == 0  # no att_labels: no attention loss
    batch.ts_label = None
    out = run(model, batch, False)
    assert out[3].item() == 0.0  # eval without spans: no temporal loss
    with pytest.raises(ValueError, match="ts_label"):
        run(model, batch, True)  # training needs the ground-truth span for its proposals
