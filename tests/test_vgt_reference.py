"""The reference VGT (sparc.adapters.vgt) against the original sail-sg/VGT code's fixture, its
checkpoint layouts, BERT built from local files, the video mask it honours, and its heads."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from sparc.adapters.vgt import VGT, _batch_norm, fixture_model
from sparc.testing import assert_float32_close
from helpers import as64, close as _close, close64  # tests/helpers.py

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "vgt"
# Reproductions of the fixture's float32 outputs are judged to float32 rounding at their scale
# (sparc.testing.float32_tolerance); equivalences (masked clips = removed clips, a batch of one = its
# row, a formula = the head's output) run in float64 to 1e-10 relative (helpers.REL64).
POSITION_IDS = "amodel.bert.bert.embeddings.position_ids"
UNUSED = {  # in every checkpoint, read by no VQA forward (hence find_unused_parameters)
    "position_v.modality_embedding.weight", "vocab_transform.weight", "vocab_transform.bias",
    "vocab_norm.weight", "vocab_norm.bias", "vocab_projector.weight", "vocab_projector.bias",
    "crossmodal_matching.weight", "crossmodal_matching.bias",
    "amodel.bert.bert.pooler.dense.weight", "amodel.bert.bert.pooler.dense.bias",
}


import cases.case_vgt as case  # pytest puts tests/ on sys.path


def _config():
    return json.loads((FIXTURE / "config.json").read_text())


def _mc(model, batch, video_mask=None, seq_len="batch", **kw):
    seq = batch.get("seq_len") if seq_len == "batch" else seq_len
    return model((batch["video_o"], batch["video_f"]), batch.get("question"), answer=batch["answer"], seq_len=seq,
                 video_mask=video_mask, **kw)


# --------------------------------------------------------------------------- fixture


def test_fixture_has_only_valid_clips(fx):
    # every clip of the fixture is valid, so honouring video_mask cannot have changed anything
    assert bool((fx.inputs["video_len"] == fx.inputs["video_f"].shape[1]).all())
    assert bool((fx.inputs["video_mask"] == 1).all())


def test_fixture_quirks_are_kept(fx):
    model, x, out = fx.model, fx.inputs, fx.outputs
    answer = x["answer"]  # (2, 5, 12), padded with 0
    with torch.no_grad():
        # answer_g is the mean over all 12 positions, padding included
        words = model.amodel.linear_text(model.amodel.bert(answer.view(10, 12))[0])
        assert_float32_close(words.mean(1).view(2, 5, -1), out["answer_g"], name="answer_g")
        real = (answer.view(10, 12) > 0).float().unsqueeze(-1)
        assert not _close((words * real).sum(1) / real.sum(1), words.mean(1), 1e-3)
        # seq_len is each sample's padded width (10 here, not the candidates' own lengths 8-10):
        # derived when absent, and it matters
        fusion, _ = _mc(model, x, video_mask=x["video_mask"], seq_len=None)
        assert_float32_close(fusion, out["fusion_proj"], name="fusion_proj")
        own = (answer > 0).sum(-1)
        assert not torch.equal(own, x["seq_len"])
        fusion_own, _ = _mc(model, x, video_mask=x["video_mask"], seq_len=own)
        assert not _close(fusion_own, out["fusion_proj"], 1e-4)
        # no mask = every clip valid (the original crashes on None)
        fusion_none, _ = _mc(model, x)
        assert_float32_close(fusion_none, out["fusion_proj"], name="fusion_proj without a mask")


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_layouts_load_strictly():
    sd = load_file(str(FIXTURE / "state_dict.safetensors"))
    assert POSITION_IDS in sd and len(sd) == 122
    model, _ = fixture_model(_config())
    result = model.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    own = model.state_dict()
    assert set(own) == set(sd) - {POSITION_IDS}
    assert all(torch.equal(own[k], sd[k]) for k in own)

    # a checkpoint from transformers >= 4.31 (no position ids), and one saved from nn.DataParallel
    fresh, _ = fixture_model(_config())
    fresh.load_state_dict({k: v for k, v in sd.items() if k != POSITION_IDS}, strict=True)
    assert torch.equal(fresh.gnn.fc_k.weight, sd["gnn.fc_k.weight"])
    fresh, _ = fixture_model(_config())
    fresh.load_state_dict({"module." + k: v for k, v in sd.items()}, strict=True)
    assert torch.equal(fresh.mmt.layer[0].ffn.lin1.bias, sd["mmt.layer.0.ffn.lin1.bias"])

    # strictness still bites for anything else
    broken = dict(sd)
    del broken["mmt.layer.0.ffn.lin1.bias"]
    with pytest.raises(RuntimeError, match="lin1.bias"):
        model.load_state_dict(broken)
    with pytest.raises(RuntimeError, match="bogus"):
        model.load_state_dict(dict(sd, **{"amodel.bert.bert.embeddings.bogus": torch.zeros(1)}))


def test_clip_position_table_is_the_originals_frozen_sinusoid():
    model, _ = fixture_model(_config())
    table = model.position_v.position_embeddings.weight
    assert not table.requires_grad and tuple(table.shape) == (28, 32)
    assert torch.equal(table, load_file(str(FIXTURE / "state_dict.safetensors"))["position_v.position_embeddings.weight"])
    assert torch.equal(table[0], torch.tensor([0.0, 1.0] * 16))  # sin 0, cos 0
    assert abs(table[1, 0].item() - torch.sin(torch.tensor(1.0)).item()) < 1e-7


# --------------------------------------------------------------------------- BERT from local files


def test_bert_from_a_local_directory(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    bert = BertModel(BertConfig(**case.TINY_BERT))
    bert.save_pretrained(tmp_path / "bert")
    expected = bert.state_dict()

    def same_bert(model):
        got = model.amodel.bert.bert.state_dict()
        return set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)

    def build(tokenizer=None, **kw):
        return VGT(tokenizer, feature_dim=8, N=1, h=2, d_model=16, d_ff=16, Q=0, bnum=5, **kw)

    assert same_bert(build(bert_config=str(tmp_path / "bert")))
    assert same_bert(build(bert_config=tmp_path / "bert"))

    class LocalTokenizer:  # BertTokenizer.from_pretrained(<local copy>) as the original is called
        name_or_path = str(tmp_path / "bert")

        def __init__(self, size):
            self.size = size

        def __len__(self):
            return self.size

    assert same_bert(build(LocalTokenizer(case.VOCAB)))
    grown = build(LocalTokenizer(case.VOCAB + 4))  # resize_token_embeddings(len(tokenizer)), as the original
    words = grown.amodel.bert.bert.embeddings.word_embeddings.weight
    assert tuple(words.shape) == (case.VOCAB + 4, 16)
    assert torch.equal(words[: case.VOCAB], expected["embeddings.word_embeddings.weight"])
    assert grown.amodel.linear_text.in_features == 16  # the text encoder's width, not word_dim=768

    # a directory with only config.json: that architecture, fresh weights
    BertConfig(**case.TINY_BERT).save_pretrained(tmp_path / "config_only")
    fresh = build(bert_config=str(tmp_path / "config_only"))
    assert fresh.amodel.bert.bert.config.hidden_size == 16 and not same_bert(fresh)

    # a hub name is not a local directory: refused, never downloaded
    with pytest.raises(ValueError, match="never downloads"):
        build(bert_config="bert-base-uncased")


# --------------------------------------------------------------------------- video mask


@pytest.mark.parametrize("dataset", ["nextqa", "tgifqa/action"])  # action adds the frame-level interaction
@torch.no_grad()
def test_masked_clips_equal_physically_removed_clips(dataset):
    model = case.tiny_vgt(seed=1, dataset=dataset).eval().double()
    batch = as64(case.vgt_batch(3, 6, seed=1))
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    g = torch.Generator().manual_seed(5)
    for key in ("video_o", "video_f"):  # huge garbage in the masked clips
        x = batch[key].clone()
        x[~mask] = 1e4 * torch.randn(x[~mask].shape, generator=g, dtype=torch.float64)
        batch[key] = x
    fusion, answer_g = _mc(model, batch, video_mask=mask.long())
    for b in range(3):
        keep = mask[b]
        alone = {k: batch[k][b : b + 1] for k in ("answer", "seq_len", "question")}
        alone["video_o"], alone["video_f"] = batch["video_o"][b : b + 1, keep], batch["video_f"][b : b + 1, keep]
        fusion_b, answer_g_b = _mc(model, alone)
        assert close64(fusion[b], fusion_b[0]), (dataset, b)
        assert close64(answer_g[b], answer_g_b[0])


def test_masked_clips_equal_removed_clips_in_training():
    """Training mode (dropout 0): BatchNorm's batch statistics leave masked clips out, so masking the
    same clips in every row equals slicing them out of the whole batch."""
    model = case.tiny_vgt(seed=2).train().double()
    batch = as64(case.vgt_batch(2, 4, seed=2))
    keep = torch.tensor([True, False, True, True])
    sliced = dict(batch, video_o=batch["video_o"][:, keep], video_f=batch["video_f"][:, keep])
    masked = _mc(model, batch, video_mask=keep.long().expand(2, 4))[0]
    assert close64(masked, _mc(model, sliced)[0])
    # without the masked statistics the zeroed clips would shift every BatchNorm output
    assert not _close(masked, _mc(model, dict(batch, video_o=batch["video_o"] * keep[:, None, None, None]))[0], 1e-3)


def test_batch_norm_statistics_come_from_valid_positions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 3 + 1
    valid = torch.rand(2, 4, 5, generator=g) > 0.4
    masked, plain = torch.nn.BatchNorm2d(3).double(), torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        masked.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        masked.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    plain.load_state_dict(masked.state_dict())
    y = _batch_norm(masked.train(), x, valid)
    picked = x.permute(1, 0, 2, 3)[:, valid]  # (3, n): the valid positions only, as one "image"
    y_ref = plain.train()(picked.reshape(1, 3, -1, 1)).reshape(3, -1)
    assert close64(y.permute(1, 0, 2, 3)[:, valid], y_ref)
    assert close64(masked.running_mean, plain.running_mean) and close64(masked.running_var, plain.running_var)
    assert int(masked.num_batches_tracked) == 1
    # no mask / eval: plain BatchNorm
    assert torch.equal(_batch_norm(masked.eval(), x, valid), masked(x))


def test_video_mask_errors():
    model = case.tiny_vgt().eval()
    batch = case.vgt_batch(2, 3, seed=0)
    with pytest.raises(ValueError, match="every clip of batch row 1"):
        _mc(model, batch, video_mask=torch.tensor([[1, 0, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        _mc(model, batch, video_mask=torch.ones(2, 4))


# --------------------------------------------------------------------------- heads and options


@torch.no_grad()
def test_open_ended_head():
    model = case.tiny_vgt(seed=3, Q=case.QMAX).eval().double()
    batch = as64(case.vgt_open_batch(3, 4, seed=3))
    video, question = (batch["video_o"], batch["video_f"]), batch["question"]
    with pytest.raises(ValueError, match="_compute_answer_embedding"):
        model(video, question)
    model._compute_answer_embedding(case.A2V)
    captured = {}
    handle = model.vqproj.register_forward_hook(lambda m, i, o: captured.setdefault("fusion_proj", o))
    scores = model(video, question)
    handle.remove()
    assert scores.shape == (3, len(case.A2V))
    # score(a) = (fusion_proj . g_a) * (question_g . g_a), g = mean BERT token (padding included)
    answer_g = model.answer_embeddings[0]
    question_g = model.amodel(question)[0]
    assert close64(scores, (captured["fusion_proj"] @ answer_g.T) * (question_g @ answer_g.T))
    words = model.amodel.linear_text(model.amodel.bert(case.A2V)[0])
    assert close64(answer_g, words.mean(1))
    # a batch of one works (the original's text encoder fails on it) and equals its row
    one = model((video[0][:1], video[1][:1]), question[:1])
    assert one.shape == (1, len(case.A2V)) and close64(one[0], scores[0])
    # seq_len defaults to the question's true length
    explicit = model(video, question, seq_len=(question > 0).sum(-1, keepdim=True))
    assert close64(explicit, scores)


def test_multiple_choice_without_candidates_is_an_error():
    model = case.tiny_vgt().eval()
    batch = case.vgt_batch(2, 3, seed=0)
    with pytest.raises(ValueError, match="answer"):
        model((batch["video_o"], batch["video_f"]), batch["question"])


@torch.no_grad()
def test_masked_language_model_loss():
    model = case.tiny_vgt(seed=4).eval().double()  # float64: the loss equals the formula to rounding
    batch = as64(case.vgt_batch(2, 3, seed=4))
    tokens = batch["answer"][:, 0]  # (2, L)
    labels = torch.full_like(tokens, -100)
    labels[0, 1], labels[1, 2] = 7, 9
    L = tokens.shape[1]
    loss = model((batch["video_o"], batch["video_f"]), tokens, labels=labels, max_seq_len=L + 3, mode="mlm")
    text = model.amodel(tokens)[1]
    logits = model.vocab_projector(model.vocab_norm(F.gelu(model.vocab_transform(text))))
    expected = F.cross_entropy(logits.reshape(-1, case.VOCAB), labels.reshape(-1))  # padding adds ignored labels only
    assert loss.dtype == torch.float64 and abs(loss.item() - expected.item()) <= 1e-10 * abs(expected.item())
    with pytest.raises(ValueError, match="mode"):
        model((batch["video_o"], batch["video_f"]), tokens, mode="cmm")


def test_pretrained_graph_layer_name_and_unused_modules():
    def build(CM_PT, bnum):
        return VGT(None, feature_dim=8, N=1, h=2, d_model=16, d_ff=16, Q=0, bnum=bnum, CM_PT=CM_PT,
                   bert_config=case.TINY_BERT)

    fine_tuned = build(1, 5)  # WebVid-pretrained weights, 5 regions: a fresh graph layer
    assert hasattr(fine_tuned, "graph_trans_n") and not hasattr(fine_tuned, "graph_trans")
    assert fine_tuned.graph_trans_n.layer[0].attention.q_lin.in_features == 25
    assert hasattr(build(1, 10), "graph_trans") and hasattr(build(0, 5), "graph_trans")
    fine_tuned.eval()
    batch = case.vgt_batch(2, 3, seed=0)
    with torch.no_grad():
        fusion, answer_g = _mc(fine_tuned, batch)
    assert fusion.shape == (2, 16) and answer_g.shape == (2, 5, 16) and torch.isfinite(fusion).all()

    # the modules no VQA forward reads are exactly the checkpoint-only ones
    model = case.tiny_vgt().train()
    fusion, answer_g = _mc(model, batch)
    torch.bmm(answer_g, fusion.unsqueeze(2)).sum().backward()
    assert {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None} == UNUSED
