"""Every loss of sparc.losses against values computed by hand on tiny tensors.

The expected values are written out with ``math.log``/``math.exp`` on python floats, never with
``torch.nn.functional`` equivalents.
"""

import math

import pytest
import torch

from sparc.losses import (
    consistency_kl,
    contrastive_loss,
    guided_ce,
    hinge_loss,
    lse_attention_loss,
    span_loss,
    spatial_distillation,
)

TOL = dict(rel=1e-5, abs=1e-6)


# ---- plain-python helpers -------------------------------------------------------------------------


def log_softmax_py(row):
    """log softmax of a list of python floats: z_c - log Σ exp(z_k)."""
    lse = math.log(sum(math.exp(z) for z in row))
    return [z - lse for z in row]


def softmax_py(row):
    return [math.exp(v) for v in log_softmax_py(row)]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


LOGITS = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]


# ---- guided_ce ------------------------------------------------------------------------------------


def test_guided_ce_hard_targets_by_hand():
    # Row 0, answer 1: -log(e^2 / (e^1 + e^2 + e^0.5)); row 1, answer 2: -log(e^3 / (e^0 + e^-1 + e^3)).
    row0 = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    row1 = -(3.0 - math.log(math.exp(0.0) + math.exp(-1.0) + math.exp(3.0)))
    expected = (row0 + row1) / 2
    got = guided_ce(t(LOGITS), torch.tensor([1, 2]))
    assert got.item() == pytest.approx(expected, **TOL)


def test_guided_ce_soft_targets_by_hand():
    target = [[0.7, 0.3, 0.0], [0.1, 0.0, 0.9]]
    expected = 0.0
    for z, y in zip(LOGITS, target):
        ls = log_softmax_py(z)
        expected += -sum(yc * lc for yc, lc in zip(y, ls))
    expected /= 2
    got = guided_ce(t(LOGITS), t(target))
    assert got.item() == pytest.approx(expected, **TOL)


def test_guided_ce_onehot_soft_target_equals_hard():
    soft = t([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert guided_ce(t(LOGITS), soft).item() == pytest.approx(guided_ce(t(LOGITS), torch.tensor([1, 2])).item(), **TOL)


# ---- consistency_kl -------------------------------------------------------------------------------

WHOLE = [[0.2, 1.0, -0.5], [2.0, 0.0, 1.0]]
GUIDED = [[1.5, 0.1, 0.3], [0.0, 1.0, -1.0]]


def kl_py(p_logits, q_logits):
    """Σ_b Σ_c p (log p - log q) / B, with p = softmax(p_logits), q = softmax(q_logits)."""
    total = 0.0
    for zp, zq in zip(p_logits, q_logits):
        lp, lq = log_softmax_py(zp), log_softmax_py(zq)
        total += sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))
    return total / len(p_logits)


def test_consistency_kl_default_is_kl_guided_whole():
    expected = kl_py(GUIDED, WHOLE)  # Σ g (log g - log w), batch mean
    got = consistency_kl(t(WHOLE), t(GUIDED))
    assert got.item() == pytest.approx(expected, **TOL)
    # And it is not the reverse direction (the two differ on these numbers).
    assert abs(kl_py(WHOLE, GUIDED) - expected) > 1e-3


def test_consistency_kl_other_direction():
    expected = kl_py(WHOLE, GUIDED)  # Σ w (log w - log g)
    got = consistency_kl(t(WHOLE), t(GUIDED), direction="whole||guided")
    assert got.item() == pytest.approx(expected, **TOL)


def test_consistency_kl_zero_when_equal():
    assert consistency_kl(t(WHOLE), t(WHOLE)).item() == pytest.approx(0.0, abs=1e-12)


def test_consistency_kl_bad_direction_raises():
    with pytest.raises(ValueError, match="direction"):
        consistency_kl(t(WHOLE), t(GUIDED), direction="sideways")


def test_consistency_kl_gradients_flow_into_both_by_default():
    w = t(WHOLE).requires_grad_()
    g = t(GUIDED).requires_grad_()
    consistency_kl(w, g).backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert g.grad is not None and g.grad.abs().sum() > 0


def test_consistency_kl_whole_gradient_by_hand():
    # d/dw_c [Σ g (log g - log softmax(w))] / B = (softmax(w)_c - g_c) / B.
    w = t(WHOLE).requires_grad_()
    consistency_kl(w, t(GUIDED)).backward()
    for b in range(2):
        sw, sg = softmax_py(WHOLE[b]), softmax_py(GUIDED[b])
        for c in range(3):
            assert w.grad[b, c].item() == pytest.approx((sw[c] - sg[c]) / 2, **TOL)


@pytest.mark.parametrize("direction", ["guided||whole", "whole||guided"])
def test_consistency_kl_detach_guided_stops_gradient_into_guided_only(direction):
    w = t(WHOLE).requires_grad_()
    g = t(GUIDED).requires_grad_()
    loss = consistency_kl(w, g, direction=direction, detach_guided=True)
    loss.backward()
    assert g.grad is None
    assert w.grad is not None and w.grad.abs().sum() > 0
    # Same value as without detaching.
    assert loss.item() == pytest.approx(consistency_kl(t(WHOLE), t(GUIDED), direction=direction).item(), **TOL)


def test_consistency_kl_detach_guided_when_guided_shares_a_leaf_with_whole():
    # Whole and guided views come from the same parameters: detaching the guided logits still lets
    # the gradient reach the shared leaf through the whole logits.
    x = torch.tensor([[0.3, -0.2, 0.9], [1.0, 0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    whole = x * 2.0
    guided = x + 1.0
    consistency_kl(whole, guided, detach_guided=True).backward()
    # Only the whole path contributes: d/dx = 2 * (softmax(2x) - softmax(x + 1)) / B.
    xs = x.detach().tolist()
    for b in range(2):
        sw = softmax_py([2.0 * v for v in xs[b]])
        sg = softmax_py([v + 1.0 for v in xs[b]])
        for c in range(3):
            assert x.grad[b, c].item() == pytest.approx(2.0 * (sw[c] - sg[c]) / 2, **TOL)


# ---- spatial_distillation -------------------------------------------------------------------------

SINGLE = [[2.0, 0.0, -1.0], [0.5, 0.5, 1.5]]
TEACHER = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_spatial_distillation_by_hand(temperature):
    expected = 0.0
    for z, p in zip(SINGLE, TEACHER):
        ls = log_softmax_py([v / temperature for v in z])
        expected += -sum(pc * lc for pc, lc in zip(p, ls))
    expected /= 2
    got = spatial_distillation(t(SINGLE), t(TEACHER), temperature=temperature)
    assert got.item() == pytest.approx(expected, **TOL)


def test_spatial_distillation_temperature_changes_value():
    a = spatial_distillation(t(SINGLE), t(TEACHER), temperature=1.0).item()
    b = spatial_distillation(t(SINGLE), t(TEACHER), temperature=2.0).item()
    assert abs(a - b) > 1e-3


def test_spatial_distillation_default_temperature_is_one():
    assert spatial_distillation(t(SINGLE), t(TEACHER)).item() == pytest.approx(
        spatial_distillation(t(SINGLE), t(TEACHER), temperature=1.0).item(), **TOL
    )


# ---- hinge_loss -----------------------------------------------------------------------------------


def test_hinge_loss_zero_when_margin_satisfied():
    # s_a exceeds every other score by more than 1.
    logits = t([[5.0, 1.0, 2.0, 3.9], [0.0, -3.0, 1.0, -0.5]])
    answer = torch.tensor([0, 2])
    assert hinge_loss(logits, answer).item() == pytest.approx(0.0, abs=1e-12)


def test_hinge_loss_with_violations_by_hand():
    logits = [[1.0, 1.5, 0.2, -2.0], [0.0, 1.3, 0.0, 2.0]]
    answer = [0, 3]
    expected = 0.0
    for s, a in zip(logits, answer):
        expected += sum(max(0.0, 1.0 - s[a] + s[n]) for n in range(len(s)) if n != a)
    expected /= 2
    # Row 0: max(0, 1-1+1.5)=1.5, max(0,1-1+0.2)=0.2, max(0,1-1-2)=0 -> 1.7
    # Row 1: max(0,1-2+0)=0, max(0,1-2+1.3)=0.3, max(0,1-2+0)=0 -> 0.3;   mean = 1.0
    assert expected == pytest.approx(1.0)
    got = hinge_loss(t(logits), torch.tensor(answer))
    assert got.item() == pytest.approx(expected, **TOL)


def test_hinge_loss_exact_margin_is_zero_and_custom_margin():
    logits = t([[2.0, 1.0, 0.0]])
    answer = torch.tensor([0])
    assert hinge_loss(logits, answer, margin=1.0).item() == pytest.approx(0.0, abs=1e-12)
    # margin 2.5: max(0, 2.5-2+1)=1.5, max(0, 2.5-2+0)=0.5 -> 2.0
    assert hinge_loss(logits, answer, margin=2.5).item() == pytest.approx(2.0, **TOL)


# ---- span_loss ------------------------------------------------------------------------------------


def test_span_loss_by_hand():
    start_logits = [[0.1, 2.0, -1.0, 0.5], [1.0, 1.0, 1.0, 1.0]]
    end_logits = [[0.0, 0.0, 3.0, 1.0], [-1.0, 0.0, 1.0, 2.0]]
    start, end = [1, 0], [2, 3]
    expected = 0.0
    for b in range(2):
        ls = log_softmax_py(start_logits[b])
        le = log_softmax_py(end_logits[b])
        expected += -0.5 * (ls[start[b]] + le[end[b]])
    expected /= 2
    got = span_loss(t(start_logits), t(end_logits), torch.tensor(start), torch.tensor(end))
    assert got.item() == pytest.approx(expected, **TOL)
    # Row 1 start is uniform over 4: its start term is log 4.
    assert -log_softmax_py(start_logits[1])[0] == pytest.approx(math.log(4))


# ---- lse_attention_loss ---------------------------------------------------------------------------


def test_lse_attention_loss_by_hand():
    positive = [0.5, 0.5, -0.2, 0.9]       # pairs of two examples: the paper's sum per example, mean over N
    negative = [-1.0, 0.7, 0.1, 0.9]
    for alpha in (1.0, 20.0):
        expected = sum(math.log(1.0 + math.exp(alpha * (n - p))) for p, n in zip(positive, negative)) / 2
        got = lse_attention_loss(t(positive), t(negative), num_examples=2, alpha=alpha)
        assert got.item() == pytest.approx(expected, **TOL)


def test_lse_attention_loss_equal_scores_is_log2_and_n_counts_examples_without_pairs():
    got = lse_attention_loss(t([1.0]), t([1.0]), num_examples=1)
    assert got.item() == pytest.approx(math.log(2.0), **TOL)
    # an example without annotated boxes adds no pair but still counts in N
    assert lse_attention_loss(t([1.0]), t([1.0]), num_examples=4).item() == pytest.approx(math.log(2.0) / 4, **TOL)
    with pytest.raises(ValueError, match="num_examples"):
        lse_attention_loss(t([1.0]), t([1.0]), num_examples=0)


# ---- contrastive_loss -----------------------------------------------------------------------------


def test_contrastive_loss_by_hand():
    hyp = [
        [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        [[0.5, -0.5], [2.0, 0.0], [-1.0, 1.0]],
    ]
    anchor = [[2.0, -1.0], [0.3, 0.7]]
    answer = [0, 1]
    expected = 0.0
    for b in range(2):
        scores = [sum(h * a for h, a in zip(hyp[b][c], anchor[b])) for c in range(3)]
        expected += -log_softmax_py(scores)[answer[b]]
    expected /= 2
    got = contrastive_loss(t(hyp), t(anchor), torch.tensor(answer))
    assert got.item() == pytest.approx(expected, **TOL)
