"""The open-ended head of the reference HGA (Jumpin2/HGA's TGIF-QA FrameQA model) and the adapter's
open-ended mode: the original's arithmetic, the head's keys, padding, the adapter contract, a SpARC
step on word ids."""

import pytest
import torch

import sparc
from sparc.adapters import HGAAdapter
from sparc.adapters.hga import HGA, EncoderQns, EncoderVidHGA
from sparc.contract import AdapterCase, check_adapter

K = 7   # answers
BLOCK = {"mm_dim": 8, "chunks": 2, "rank": 2}


def tiny(seed=0, num_answers=K, use_bert=False, vocab=20, dim=6, hidden=8, dropout=0.0):
    torch.manual_seed(seed)
    vid = EncoderVidHGA(dim_vid=dim, dim_hidden=hidden, input_dropout_p=dropout)
    qns = EncoderQns(dim_embed=hidden, dim_hidden=hidden, vocab_size=vocab, glove_embed=None, use_bert=use_bert,
                     input_dropout_p=dropout)
    return HGA(vid, qns, block_kwargs=BLOCK, num_answers=num_answers)


def word_batch(B, T, seed, words=4, vocab=20, dim=6):
    g = torch.Generator().manual_seed(seed)
    return {"qid": [f"q{seed}-{b}" for b in range(B)], "vid_feats": torch.randn(B, T, dim, generator=g),
            "qns": torch.randint(2, vocab, (B, words), generator=g), "qns_lengths": torch.full((B,), words),
            "answer": torch.randint(0, K, (B,), generator=g)}


def feature_batch(B, T, seed, words=3, dim=6):
    g = torch.Generator().manual_seed(200 + seed)
    lengths = torch.randint(1, words + 1, (B,), generator=g)
    qns = torch.randn(B, words, 768, generator=g) * (torch.arange(words)[None, :, None] < lengths[:, None, None])
    return {"qid": [f"f{seed}-{b}" for b in range(B)], "vid_feats": torch.randn(B, T, dim, generator=g),
            "qns": qns, "qns_lengths": lengths, "answer": torch.randint(0, K, (B,), generator=g)}


def original_frameqa(model, vid, qns, qns_lengths):
    """Jumpin2/HGA ``model_block`` + ``forward_frameqa`` written out on the model's own submodules
    (every question and video at full length, so no mask is involved): question GRU, video GRU,
    input LayerNorms, co-attention, learned adjacency, GCN, the sum "attention" pool, the global
    BLOCK fusion of the last hidden states, and the answer BLOCK fusion."""
    q_output, s_hidden = model.qns_encoder(qns, qns_lengths)
    s_last_hidden = torch.squeeze(s_hidden)
    v_output, v_hidden = model.vid_encoder(vid)
    v_last_hidden = torch.squeeze(v_hidden)
    q_output, v_output = model.co_attn(model.q_input_ln(q_output), model.v_input_ln(v_output))
    adj = model.adj_learner(q_output, v_output)
    q_v_output = model.gcn(torch.cat((q_output, v_output), dim=1), adj)
    local_out = torch.sum(q_v_output * model.gcn_atten_pool(q_v_output), dim=1)
    global_out = model.global_fusion((s_last_hidden, v_last_hidden))
    out = torch.squeeze(model.fusion((global_out, local_out)))
    return out, torch.max(out, 1)[1]


def test_open_head_is_the_originals_frameqa_arithmetic():
    model = tiny().eval()
    b = word_batch(3, 5, seed=1)
    with torch.no_grad():
        out, pred = model(b["vid_feats"], b["qns"], b["qns_lengths"])
        want, want_pred = original_frameqa(model, b["vid_feats"], b["qns"], b["qns_lengths"])
    assert out.shape == (3, K)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-7)
    assert torch.equal(pred, want_pred)


def test_head_keeps_the_original_key_and_changes_nothing_else():
    mc, oe = tiny(num_answers=None), tiny(num_answers=K)
    a, b = mc.state_dict(), oe.state_dict()
    assert list(a) == list(b)                                     # same keys: the head is fusion.*
    assert b["fusion.linear_out.weight"].shape == (K, BLOCK["mm_dim"]) and b["fusion.linear_out.bias"].shape == (K,)
    assert a["fusion.linear_out.weight"].shape == (1, BLOCK["mm_dim"])
    # the head is built last, so the same seed gives every other parameter the same values
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("fusion.linear_out"))
    assert mc.num_answers is None and oe.num_answers == K


def test_a_single_answer_keeps_its_axis_and_bad_sizes_fail():
    out, _ = tiny(num_answers=1).eval()(*(word_batch(2, 3, 0)[k] for k in ("vid_feats", "qns", "qns_lengths")))
    assert out.shape == (2, 1)
    with pytest.raises(ValueError, match="num_answers must be >= 1"):
        tiny(num_answers=0)
    b = word_batch(2, 3, 0)
    with pytest.raises(ValueError, match="qns_lengths"):
        tiny().eval()(b["vid_feats"], b["qns"], torch.full((2, 5), 4))


def test_padded_questions_and_frames_score_as_sliced():
    model = tiny().eval()
    b = word_batch(2, 6, seed=3, words=5)
    b["qns"][1, 3:] = 0
    lengths, vid_lengths = torch.tensor([5, 3]), torch.tensor([6, 4])
    with torch.no_grad():
        out, _ = model(b["vid_feats"], b["qns"], lengths, vid_lengths=vid_lengths)
        alone, _ = model(b["vid_feats"][1:, :4], b["qns"][1:, :3], lengths[1:])
    torch.testing.assert_close(out[1:], alone, rtol=1e-6, atol=1e-7)


def test_adapter_modes_and_model_checks():
    mc = HGAAdapter()
    assert mc.candidate == {"qas": 1, "qas_lengths": 1} and not mc.open_ended and "num_answers" not in vars(mc)
    oe = HGAAdapter(open_ended=True, num_answers=K)
    assert oe.open_ended and oe.candidate == {} and oe.question == {"qns": 1, "qns_lengths": 0} and oe.num_answers == K
    b = word_batch(2, 3, 0)
    assert oe.forward(tiny().eval(), b).logits.shape == (2, K)
    with pytest.raises(ValueError, match="without an open-ended head"):
        oe.forward(tiny(num_answers=None), b)
    with pytest.raises(ValueError, match="num_answers=7"):
        oe.forward(tiny(num_answers=3), b)
    with pytest.raises(ValueError, match="open_ended=True"):
        HGAAdapter(num_answers=3)


def test_open_ended_hga_meets_the_adapter_contract():
    # question features (not ids), so the contract's full step can run open-ended mixup on them
    check_adapter(AdapterCase("hga-open-ended", lambda seed: tiny(seed, use_bert=True),
                              HGAAdapter(open_ended=True, num_answers=K), feature_batch, K, modes=("bucket",)))


def test_sparc_step_on_word_ids():
    b = word_batch(4, 5, seed=5)
    priors = torch.randn(4, 5, K).softmax(-1)
    priors[torch.arange(4), 1:3, b["answer"]] = 5.0
    priors = priors / priors.sum(-1, keepdim=True)
    model = sparc.wrap(tiny(dropout=0.1), HGAAdapter(open_ended=True, num_answers=K),
                       [sparc.TemporalGuidance(threshold=0.5), sparc.SpatialDistillation()])
    out = model(b, priors=priors)
    assert set(out.terms) == {"guided", "consistency", "spatial"} and torch.isfinite(out.loss)
    out.loss.backward()
    mixed = sparc.wrap(tiny(), HGAAdapter(open_ended=True, num_answers=K), [sparc.TemporalGuidedMixup(alpha=0.1)])
    with pytest.raises(ValueError, match="cannot be interpolated"):
        mixed(b, priors=priors)
