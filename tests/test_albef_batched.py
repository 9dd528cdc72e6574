"""The batched ALBEF scoring (cached image keys/values, all questions x frames x candidates at once)
gives the plain path's numbers, and reuses what it says it reuses."""

from pathlib import Path

import pytest
import torch

from sparc.teachers.albef import ALBEF, ALBEFTeacher
from sparc.teachers.albef_batched import (answer_loglik, answer_trees, decoder_loglik, encode_questions, fusion_kv,
                                          prefix_rows)
from sparc.teachers.tiny import TINY_ALBEF_CONFIG
from sparc.testing import assert_float32_close

from helpers import as64, close_ll, model64  # tests/helpers.py

FIXTURE = Path(__file__).parent / "fixtures" / "original" / "albef"

# Batched vs plain scoring is an equivalence: a float64 model, to helpers.LL_K eps32 (the batched path's
# last step is float32 whatever the model's dtype; see helpers.close_ll). The fixture's recorded float32
# outputs are compared to float32 rounding (sparc.testing.float32_tolerance).


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ALBEF(**TINY_ALBEF_CONFIG).eval().double()


def _plain(model, image_embeds, q_ids, q_mask, a_ids, a_mask):
    """The reference: one question at a time through encode_question + cand_loglik -> [Q, F, C]."""
    Fn = image_embeds.shape[0]
    out = []
    for q in range(q_ids.shape[0]):
        L = int(q_mask[q].sum())
        ids, mask = q_ids[q:q + 1, :L].expand(Fn, -1), q_mask[q:q + 1, :L].expand(Fn, -1)
        states = model.encode_question(image_embeds, ids, mask)
        g = 0 if a_ids.shape[0] == 1 else q
        out.append(model.cand_loglik(states, mask, a_ids[g], a_mask[g]))
    return torch.stack(out)


def _inputs(Q=3, C=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    q_ids = torch.randint(104, 140, (Q, 7), generator=g)
    q_ids[:, 0] = 101
    q_mask = torch.ones_like(q_ids)
    q_ids[1, 4:], q_mask[1, 4:] = 0, 0                          # a shorter question
    a = torch.randint(104, 140, (Q, C, 5), generator=g)
    a[:, :, 0], a[:, :, -1] = 101, 102
    a[:, 1, 2], a[:, 1, 3:] = 102, 0                             # a shorter candidate
    a[0, 3, :3] = a[0, 2, :3]                                    # two candidates sharing a prefix
    return q_ids, q_mask, a, (a != 0).long()


def test_prefix_rows_by_hand():
    ids = torch.tensor([[101, 5, 6, 102], [101, 5, 7, 102], [101, 8, 102, 0]])
    valid = ids[:, 1:] != 0
    rows, which = prefix_rows(ids, valid)
    # prefixes: [101] (shared by all), [101 5] (shared by 0 and 1), [101 5 6], [101 5 7], [101 8]
    assert rows.tolist() == [[0, 0], [0, 1], [0, 2], [1, 2], [2, 1]]
    assert which.tolist() == [[0, 1, 2], [0, 1, 3], [0, 4, -1]]
    # as a tree: each node attends to its ancestors and itself (causal attention along its prefix)
    tokens, positions, attend, which, real = answer_trees(ids[None], valid[None])
    assert real.all()
    assert tokens.tolist() == [[101, 5, 6, 7, 8]] and positions.tolist() == [[0, 1, 2, 2, 1]]
    allowed = (attend[0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 0, 0, 0, 1]]


@torch.no_grad()
def test_batched_equals_plain_on_the_original_checkpoint(fx):
    m, inp = model64(fx.model), as64(fx.inputs)
    emb = m.encode_image(inp["image"])
    q_ids, q_mask = inp["question_input_ids"], inp["question_attention_mask"]
    a_ids, a_mask = inp["answer_input_ids"][None], inp["answer_attention_mask"][None]
    fast = answer_loglik(m, fusion_kv(m, emb), q_ids, q_mask, a_ids, a_mask)
    assert fast.shape == (2, 2, 5)
    assert close_ll(fast, _plain(m, emb, q_ids, q_mask, a_ids, a_mask))
    # question b with frame b is the fixture's row b
    rows = torch.stack([fast[0, 0], fast[1, 1]])
    assert_float32_close(rows, fx.outputs["cand_loglik"], name="cand_loglik")


@torch.no_grad()
@pytest.mark.parametrize("shared", [False, True])
def test_batched_equals_plain_per_question_and_shared_candidates(tiny, shared):
    emb = tiny.encode_image(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    q_ids, q_mask, a_ids, a_mask = _inputs()
    if shared:
        a_ids, a_mask = a_ids[:1], a_mask[:1]
    fast, first = answer_loglik(tiny, fusion_kv(tiny, emb), q_ids, q_mask, a_ids, a_mask, return_first=True)
    assert fast.shape == (3, 4, 5)
    assert close_ll(fast, _plain(tiny, emb, q_ids, q_mask, a_ids, a_mask))
    # the vocabulary pass cut into one node at a time gives the same numbers
    states = encode_questions(tiny, fusion_kv(tiny, emb), q_ids, q_mask)
    assert close_ll(decoder_loglik(tiny, states, q_mask, a_ids, a_mask, max_logits=1), fast)
    # large answer sets go through several smaller trees: the same numbers
    assert close_ll(decoder_loglik(tiny, states, q_mask, a_ids, a_mask, tree_candidates=2), fast)
    # the first answer token's log-probability: ALBEF's first_token_prob, from the start token alone
    L = int(q_mask[2].sum())
    states = tiny.encode_question(emb, q_ids[2:3, :L].expand(4, -1), q_mask[2:3, :L].expand(4, -1))
    ftp = tiny.first_token_prob(states, q_mask[2:3, :L].expand(4, -1), a_ids[0 if shared else 2])
    assert close_ll(first[2].exp(), ftp)


@torch.no_grad()
def test_teacher_scoring_options_and_chunking(fx):
    inp = fx.inputs
    q_ids, q_mask = inp["question_input_ids"], inp["question_attention_mask"]
    cands = inp["answer_input_ids"]
    questions = [(q_ids[i], q_mask[i]) for i in range(2)]
    teacher = ALBEFTeacher(fx.model)
    state = teacher.encode_images(inp["image"])
    probs = teacher.score(state, questions, [cands, cands])
    assert probs.shape == (2, 2, 5)
    assert_float32_close(probs[0, 0], fx.outputs["cand_loglik"][0].softmax(-1), name="probabilities")
    # shared candidates, and a decoder budget of one (question, frame) at a time: the same numbers
    # (an equivalence: a float64 model)
    m64 = model64(fx.model)
    state64 = ALBEFTeacher(m64).encode_images(inp["image"])
    probs64 = ALBEFTeacher(m64).score(state64, questions, [cands, cands])
    small = ALBEFTeacher(m64, max_rows=1)
    assert close_ll(small.score(state64, questions, shared_candidates=cands), probs64)
    # ALBEF's rank_answer arithmetic with k = 3: the fixture's top-3 ids and probabilities, zeros elsewhere
    rank = ALBEFTeacher(fx.model, scoring="albef_rank", rank_k=3).score(state, questions, [cands, cands])
    for b in range(2):
        row = rank[b, b]
        ids = fx.outputs["rank_k_small_topk_ids"][b]
        assert_float32_close(row[ids], fx.outputs["rank_k_small_topk_probs"][b], name="top-3 probabilities")
        assert row.sum().item() == pytest.approx(1.0, abs=1e-5) and int((row > 0).sum()) == 3
    full = ALBEFTeacher(fx.model, scoring="albef_rank").score(state, questions, [cands, cands])
    assert_float32_close(full[1, 1], fx.outputs["rank_log_scores"][1].softmax(-1), name="rank probabilities")
    with pytest.raises(ValueError, match="scoring"):
        ALBEFTeacher(fx.model, scoring="max")


@torch.no_grad()
def test_scoring_never_reruns_the_image_side(tiny):
    """Image keys/values of the fusion layers are computed in encode_images only; scoring nine
    questions runs the vision transformer and those projections zero times."""
    teacher = ALBEFTeacher(tiny)
    calls = {"vision": 0, "image_kv": 0}
    hooks = [tiny.visual_encoder.patch_embed.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))]
    for layer in tiny.text_encoder.encoder.layer[tiny.text_encoder.config.fusion_layer:]:
        hooks.append(layer.crossattention.self.key.register_forward_hook(
            lambda *a: calls.__setitem__("image_kv", calls["image_kv"] + 1)))
    state = teacher.encode_images(torch.randint(0, 256, (6, 40, 40, 3), dtype=torch.uint8))
    assert calls == {"vision": 1, "image_kv": 2}   # one vision pass, one K projection per fusion layer
    q_ids, q_mask, a_ids, a_mask = _inputs(Q=9)
    teacher.score(state, [(q_ids[i], q_mask[i]) for i in range(9)], [(a_ids[i], a_mask[i]) for i in range(9)])
    assert calls == {"vision": 1, "image_kv": 2}
    for h in hooks:
        h.remove()


@torch.no_grad()
def test_rank_k_decodes_only_the_top_first_tokens_and_matches_the_full_computation(tiny):
    g = torch.Generator().manual_seed(3)
    a = torch.randint(104, 140, (1, 12, 4), generator=g)
    a[:, :, 0], a[:, :, -1] = 101, 102
    a[0, 5, 2:] = torch.tensor([102, 0])                                  # a shorter answer
    a_mask = (a != 0).long()
    q_ids, q_mask, _, _ = _inputs(Q=3)
    teacher = ALBEFTeacher(tiny, scoring="albef_rank")
    state = teacher.encode_images(torch.randint(0, 256, (4, 40, 40, 3), dtype=torch.uint8, generator=g))
    questions = [(q_ids[i], q_mask[i]) for i in range(3)]
    full = teacher.log_scores_many(state, questions, shared_candidates=(a[0], a_mask[0]))       # all 12 decoded
    states = encode_questions(tiny, state.kv, q_ids, q_mask)
    _, first = decoder_loglik(tiny, states, q_mask, a, a_mask, return_first=True)
    keep = first.topk(4, dim=-1).indices
    expected = torch.full_like(full, float("-inf")).scatter(-1, keep, full.gather(-1, keep))
    ranked = ALBEFTeacher(tiny, scoring="albef_rank", rank_k=4)
    got = ranked.log_scores_many(state, questions, shared_candidates=(a[0], a_mask[0]))
    assert torch.equal(got.isinf(), expected.isinf()) and int((~got.isinf()).sum(-1).min()) == 4
    assert close_ll(got[~got.isinf()], expected[~expected.isinf()])
