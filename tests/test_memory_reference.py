"""The reference memory-attention network (sparc.adapters.memory, paper 003): its equations on
hand-computed values, every head's shape, and exact handling of padded frames and words.

The paper released no code, so there is no original fixture: the equations are checked in
isolation with numbers worked out by hand (the comments show the arithmetic)."""

import math

import pytest
import torch

from sparc.adapters.memory import (
    MemoryAttention,
    NonLocalCoAttention,
    TextAugmentedVisualMemory,
    TextMemoryState,
    VideoAugmentedTextMemory,
    VisualMemoryState,
    attention,
    count_mse,
    memory_read,
    retention_gate,
    task_loss_for,
    text_memory_write,
    visual_memory_write,
)
from sparc.losses import hinge_loss

from helpers import as64, close64  # tests/helpers.py

LN3 = math.log(3.0)
ATANH_HALF = math.atanh(0.5)  # tanh(ATANH_HALF) = 0.5

A_DIM, M_DIM, BERT, MAX_LEN = 6, 5, 12, 7


def tiny(task="multiple_choice", seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(hidden_size=8, word_dim=6, video_memory_size=3, text_memory_size=2, max_len_q=MAX_LEN,
                task=task, num_answers=7, bert_dim=BERT)
    args.update(kwargs)
    return MemoryAttention(A_DIM, M_DIM, **args).eval()


def inputs(task="multiple_choice", B=3, T=5, C=5, L=MAX_LEN, seed=1):
    g = torch.Generator().manual_seed(seed)
    vid = torch.randn(B, T, A_DIM + M_DIM, generator=g)
    shape = (B, C) if task == "multiple_choice" else (B,)
    lengths = torch.randint(1, L + 1, shape, generator=g)
    text = torch.randn(*shape, L, BERT, generator=g)
    return vid, text, lengths


def close(a, b, tol=1e-5):
    return (a - b).abs().max().item() <= tol


# Equivalences (permuted candidates, padded frames and words, a batch of one) run in float64 to 1e-10
# relative (helpers.REL64), so they test the model's arithmetic and not the CPU's float32 kernels; the
# garbage they pad with (50-100x the features' scale) would move the outputs by O(1) if it leaked.


def tiny64(*args, **kwargs):
    return tiny(*args, **kwargs).double()


def inputs64(*args, **kwargs):
    return as64(inputs(*args, **kwargs))


def set_linear(layer, weight, bias=None):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        if layer.bias is not None:
            layer.bias.copy_(torch.tensor([0.0] * layer.weight.shape[0] if bias is None else bias))


def zero_all(module):
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


# ---- the equations on hand-computed values ----------------------------------------------------------


def test_read_eq1():
    beta = torch.tensor([[0.25, 0.75]])
    M = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # r = 0.25·(1, 2) + 0.75·(3, 4) = (2.5, 3.5)
    assert torch.allclose(memory_read(beta, M), torch.tensor([[2.5, 3.5]]))


def test_retention_gate_and_visual_write_eq8_eq10():
    mu = retention_gate(torch.tensor([[math.log(2.0), 0.0, 0.0]]))
    assert torch.allclose(mu, torch.tensor([[0.5, 0.25, 0.25]]))  # e^g = (2, 1, 1) / 4
    M_prev = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    mu = torch.tensor([[0.5, 0.3, 0.2]])
    alpha_a, c_a = torch.tensor([[1.0, 0.0]]), torch.tensor([[10.0, 20.0]])
    alpha_m, c_m = torch.tensor([[0.25, 0.75]]), torch.tensor([[4.0, 8.0]])
    # slot 0: 0.5·(1, 2) + 0.3·1·(10, 20) + 0.2·0.25·(4, 8) = (0.5+3+0.2, 1+6+0.4)
    # slot 1: 0.5·(3, 4) + 0.3·0·(10, 20) + 0.2·0.75·(4, 8) = (1.5+0.6, 2+1.2)
    expected = torch.tensor([[[3.7, 7.4], [2.1, 3.2]]])
    assert torch.allclose(visual_memory_write(M_prev, mu, alpha_a, c_a, alpha_m, c_m), expected)


def test_text_write_eq16():
    M_prev = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    alpha, c = torch.tensor([[0.25, 0.75]]), torch.tensor([[8.0, 4.0]])
    # slot 0: 0.25·(8, 4) + 0.75·(1, 2) = (2.75, 2.5); slot 1: 0.75·(8, 4) + 0.25·(3, 4) = (6.75, 4)
    expected = torch.tensor([[[2.75, 2.5], [6.75, 4.0]]])
    assert torch.allclose(text_memory_write(M_prev, alpha, c), expected)


def test_attention_eq17_with_a_masked_key():
    Q = torch.tensor([[[1.0, 0.0]]])
    K = torch.tensor([[[math.sqrt(2) * LN3, 0.0], [0.0, 0.0], [5.0, 5.0]]])
    V = torch.tensor([[[4.0], [8.0], [100.0]]])
    # scores / sqrt(2) = (ln 3, 0, masked) -> weights (3/4, 1/4, 0) -> 0.75·4 + 0.25·8 = 5
    out = attention(Q, K, V, key_valid=torch.tensor([[True, True, False]]))
    assert torch.allclose(out, torch.tensor([[[5.0]]]))


def test_visual_memory_step_by_hand():
    """One step of eqs. (1)-(10) with d = 1, S = 2, σ = ReLU, weights picked so every value is exact."""
    mem = TextAugmentedVisualMemory(d=1, S=2)
    zero_all(mem)
    set_linear(mem.FC_read, [[1, 0, 0], [0, 0, 0], [0, 0, 0]])   # picks h^v of [h^v, h^m, h^a]
    set_linear(mem.W_e, [[2 * LN3, 0, 0], [0, 0, 0]])
    set_linear(mem.FC_v, [[1, 0, 0]], [-1.0])                    # [r, h^v, i^q]
    set_linear(mem.FC_a, [[0, 0, 1, 0]])                         # [r, h^a, i^a, i^q]
    set_linear(mem.FC_m, [[0, 0, 0, 1]])
    set_linear(mem.W_q, [[1.0]])
    set_linear(mem.W_a, [[0, 1]])                                # [i^a, h^a_{t-1}]
    set_linear(mem.W_m, [[1, 0]])                                # [i^m, h^m_{t-1}]
    set_linear(mem.W_alpha_m, [[2 * LN3], [0]])
    set_linear(mem.FC_g, [[0, 0, ATANH_HALF / 0.75]])            # [h^v, c^m, c^a]
    set_linear(mem.W_g, [[0], [2 * math.log(2.0)], [0]])

    state = VisualMemoryState(M=torch.tensor([[[2.0], [4.0]]]), h_a=torch.tensor([[0.75]]),
                              h_m=torch.tensor([[0.7]]), h_v=torch.tensor([[ATANH_HALF]]))
    i_a, i_m, q_last = torch.tensor([[2.0]]), torch.tensor([[0.5]]), torch.tensor([[-1.0]])
    new, w = mem.step(state, i_a, i_m, mem.W_q(q_last))
    # (2) tanh(FC) = (1/2, 0, 0) -> W_e: (ln 3, 0) -> β = (3/4, 1/4); (1) r = 0.75·2 + 0.25·4 = 2.5
    assert torch.allclose(w["beta"], torch.tensor([[0.75, 0.25]]))
    # (4) h^v = relu(2.5 - 1) = 1.5; (3) h^a = relu(i^a) = 2, h^m = relu(i^q) = relu(-1) = 0
    assert torch.allclose(new.h_v, torch.tensor([[1.5]]))
    assert torch.allclose(new.h_a, torch.tensor([[2.0]]))
    assert torch.allclose(new.h_m, torch.tensor([[0.0]]))
    # (5) c^a = relu(h^a_{t-1}) = 3/4 (the previous state, not the new 2); (6) c^m = relu(i^m) = 1/2
    # (7) α^a = softmax(0, 0) = (1/2, 1/2); α^m = softmax(2 ln3 · 1/2, 0) = (3/4, 1/4)
    assert torch.allclose(w["alpha_a"], torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(w["alpha_m"], torch.tensor([[0.75, 0.25]]))
    # (9) tanh(FC_g) = tanh(atanh(1/2)) = 1/2 -> g = (0, ln 2, 0); (8) µ = (1, 2, 1)/4
    assert torch.allclose(w["mu"], torch.tensor([[0.25, 0.5, 0.25]]))
    # (10) slot 0: 1/4·2 + 1/2·(1/2·3/4) + 1/4·(3/4·1/2) = 0.5 + 0.1875 + 0.09375 = 0.78125
    #      slot 1: 1/4·4 + 1/2·(1/2·3/4) + 1/4·(1/4·1/2) = 1 + 0.1875 + 0.03125 = 1.21875
    assert torch.allclose(new.M, torch.tensor([[[0.78125], [1.21875]]]))


def test_text_memory_step_by_hand():
    """One step of eqs. (11)-(16) with d = 1, S = 2, σ = ReLU."""
    mem = VideoAugmentedTextMemory(d=1, S=2)
    zero_all(mem)
    set_linear(mem.FC_read, [[0, 1], [0, 0]])                    # picks i^q_t of [h^q, i^q_t]
    set_linear(mem.V_e, [[2 * LN3, 0], [0, 0]])
    set_linear(mem.FC_h, [[0, 1, 0, 1, 0]], [-2.5])              # [i^q_t, r, h^q, i^a, i^m]
    set_linear(mem.W_a, [[1.0]])
    set_linear(mem.FC_c, [[0, 1]])                               # [i^q_t, h^q_{t-1}]
    set_linear(mem.FC_w, [[ATANH_HALF / 0.75, 0]])               # [c^q, h^q_{t-1}]
    set_linear(mem.v_a, [[2 * LN3], [0]])

    state = TextMemoryState(M=torch.tensor([[[2.0], [4.0]]]), h_q=torch.tensor([[0.75]]))
    i_q_t = torch.tensor([[ATANH_HALF]])
    new, w = mem.step(state, i_q_t, mem.W_a(torch.tensor([[0.25]])), mem.W_m(torch.tensor([[9.0]])))
    # (12) β = softmax(ln 3, 0) = (3/4, 1/4); (11) r = 0.75·2 + 0.25·4 = 2.5
    assert torch.allclose(w["beta"], torch.tensor([[0.75, 0.25]]))
    # (13) h^q = relu(r + i^a - 2.5) = 0.25; (14) c^q = relu(h^q_{t-1}) = 3/4
    assert torch.allclose(new.h_q, torch.tensor([[0.25]]))
    # (15) tanh(FC) = 1/2 -> a = (ln 3, 0) -> α = (3/4, 1/4)
    assert torch.allclose(w["alpha"], torch.tensor([[0.75, 0.25]]))
    # (16) slot 0: 3/4·3/4 + 1/4·2 = 1.0625; slot 1: 1/4·3/4 + 3/4·4 = 3.1875
    assert torch.allclose(new.M, torch.tensor([[[1.0625], [3.1875]]]))


def test_sigma_is_selectable():
    assert TextAugmentedVisualMemory(1, 2).sigma is torch.nn.functional.relu
    model = MemoryAttention(A_DIM, M_DIM, hidden_size=4, activation="sigmoid")
    assert model.visual_memory.sigma is torch.sigmoid and model.text_memory.sigma is torch.sigmoid


def test_co_attention_fusion_layout_eq22():
    torch.manual_seed(0)
    block = NonLocalCoAttention(d=4, max_len_q=6).double()
    Vid, Tex = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    O = block(Vid, Tex, torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool))
    V0, A, VA, VB = O.split(4, dim=-1)
    assert O.shape == (2, 3, 16)
    assert torch.equal(VA, V0 * A)
    expected_V0 = attention(block.W_q_V(Vid), block.W_k_V(Vid), block.W_v_V(Vid))  # (19)
    assert close64(V0, expected_V0)


def test_hinge_loss_eq23_and_paper_losses():
    scores = torch.tensor([[2.0, 1.5, 0.0, 3.0]])
    # max(0, 1-2+1.5) + max(0, 1-2+0) + max(0, 1-2+3) = 0.5 + 0 + 2 = 2.5
    assert task_loss_for("multiple_choice") == "hinge"
    assert math.isclose(float(hinge_loss(scores, torch.tensor([0]))), 2.5)
    assert task_loss_for("open_ended") == "ce"
    # mean L2: ((1.5-1)^2 + (3-5)^2) / 2 = (0.25 + 4) / 2
    assert task_loss_for("count") is count_mse
    assert math.isclose(float(count_mse(torch.tensor([[1.5], [3.0]]), torch.tensor([1, 5]))), 2.125)


# ---- heads ----------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("C", [5, 2, 10])
def test_multiple_choice_shapes_any_candidate_count(C):
    model = tiny()
    vid, qas, lens = inputs(C=C)
    scores, predict = model(vid, qas, lens)
    assert scores.shape == (3, C) and predict.shape == (3,)
    assert torch.equal(predict, scores.argmax(1)) and torch.isfinite(scores).all()


@torch.no_grad()
def test_open_ended_and_count_shapes():
    vid, qns, lens = inputs("open_ended")
    logits, predict = tiny("open_ended")(vid, qns, lens)
    assert logits.shape == (3, 7) and predict.shape == (3,)
    count_model = tiny("count")
    out, count = count_model(vid, qns, lens)
    assert out.shape == (3, 1) and count.shape == (3,)
    for bias, expected in ((3.4, 3.0), (42.0, 10.0), (-3.0, 1.0)):  # rounded, clamped to 1..10
        torch.nn.init.zeros_(count_model.head.weight)
        torch.nn.init.constant_(count_model.head.bias, bias)
        out, count = count_model(vid, qns, lens)
        assert torch.allclose(out, torch.full((3, 1), bias)) and torch.equal(count, torch.full((3,), expected))


@torch.no_grad()
def test_candidates_are_scored_independently():
    model = tiny64()
    vid, qas, lens = inputs64()
    scores, _ = model(vid, qas, lens)
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted, _ = model(vid, qas[:, perm], lens[:, perm])
    assert close64(permuted, scores[:, perm])


def test_every_parameter_gets_a_gradient_from_two_frames():
    for task in ("multiple_choice", "open_ended", "count"):
        model = tiny(task).train()
        vid, text, lens = inputs(task, T=2)
        model(vid, text, lens)[0].sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, (task, missing)


def test_a_one_frame_video_leaves_only_the_visual_write_path_unused():
    """With one frame, Vid = [h^v_1] reads only M_0: the step's write (eqs. 3, 5-10) is never read.
    MemoryAdapter's docstring says when DDP then needs find_unused_parameters."""
    model = tiny().train()
    vid, text, lens = inputs(T=1)
    model(vid, text, lens)[0].sum().backward()
    missing = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is None}
    assert missing == {"FC_a", "FC_m", "W_a", "W_m", "W_alpha_a", "W_alpha_m", "FC_g", "W_g"}


# ---- lengths: padded frames and words have no influence ------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("task", ["multiple_choice", "open_ended", "count"])
def test_vid_lengths_equal_physical_removal(task):
    model = tiny64(task)
    vid, text, lens = inputs64(task, T=6)
    g = torch.Generator().manual_seed(5)
    for vid_lengths in ([6, 2, 4], [1, 6, 1], [6, 6, 6]):
        padded = vid.clone()
        for b, n in enumerate(vid_lengths):
            padded[b, n:] = 100 * torch.randn(6 - n, vid.shape[-1], generator=g, dtype=torch.float64)  # garbage
        out, predict = model(padded, text, lens, vid_lengths=torch.tensor(vid_lengths))
        for b, n in enumerate(vid_lengths):
            alone, alone_predict = model(vid[b:b + 1, :n], text[b:b + 1], lens[b:b + 1])
            assert close64(out[b], alone[0]), (task, vid_lengths, b)
            assert predict[b].item() == alone_predict.item()


@torch.no_grad()
def test_appended_padding_frames_leave_outputs_unchanged():
    model = tiny64()
    vid, qas, lens = inputs64(T=4)
    out, _ = model(vid, qas, lens)
    longer = torch.cat([vid, torch.randn(3, 3, vid.shape[-1], dtype=torch.float64)], dim=1)
    out_padded, _ = model(longer, qas, lens, vid_lengths=torch.tensor([4, 4, 4]))
    assert close64(out_padded, out)


@torch.no_grad()
def test_padded_words_leave_outputs_unchanged():
    model = tiny64()
    vid, qas, lens = inputs64(L=4)
    out, _ = model(vid, qas, lens)
    longer = torch.cat([qas, 50 * torch.randn(*qas.shape[:2], 3, BERT, dtype=torch.float64)], dim=2)  # width 7 = max_len_q
    out_longer, _ = model(vid, longer, lens)
    assert close64(out_longer, out)


@torch.no_grad()
def test_batch_of_one_and_single_frame():
    model = tiny64()
    vid, qas, lens = inputs64(T=4)
    out, _ = model(vid, qas, lens)
    for b in range(3):
        assert close64(model(vid[b:b + 1], qas[b:b + 1], lens[b:b + 1])[0][0], out[b])
    single, _ = model(vid[:1, :1], qas[:1], lens[:1])
    assert single.shape == (1, 5) and torch.isfinite(single).all()


# ---- inputs ---------------------------------------------------------------------------------------


@torch.no_grad()
def test_token_ids_and_glove_initialisation():
    glove = torch.randn(11, 6)
    model = tiny("open_ended", use_bert=False, glove_embed=glove)
    assert torch.equal(model.word_embedding.weight, glove)
    ids = torch.randint(0, 11, (2, 5))
    logits, _ = model(torch.randn(2, 3, A_DIM + M_DIM), ids, torch.tensor([5, 2]))
    assert logits.shape == (2, 7)
    mc = tiny(use_bert=False, vocab_size=11)
    scores, _ = mc(torch.randn(2, 3, A_DIM + M_DIM), torch.randint(0, 11, (2, 4, 5)), torch.full((2, 4), 3))
    assert scores.shape == (2, 4)


def test_bad_inputs_say_what_is_wrong():
    model = tiny()
    vid, qas, lens = inputs()
    with pytest.raises(ValueError, match="appearance_dim"):
        model(vid[..., :-1], qas, lens)
    with pytest.raises(ValueError, match="max_len_q"):
        model(vid, torch.randn(3, 5, MAX_LEN + 1, BERT), torch.full((3, 5), MAX_LEN + 1))
    with pytest.raises(ValueError, match="vid_lengths"):
        model(vid, qas, lens, vid_lengths=torch.tensor([5, 0, 5]))
    with pytest.raises(ValueError, match="multiple choice"):
        model(vid, qas[:, 0], lens[:, 0])
    with pytest.raises(ValueError, match="task"):
        MemoryAttention(A_DIM, M_DIM, task="yes_no")
