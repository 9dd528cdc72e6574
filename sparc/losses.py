"""The training objectives of the papers, one pure function per equation.

Shapes: ``B`` questions, ``C`` answer candidates, ``T`` frames. Logits are unnormalised scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def guided_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Guided prediction (SpARC 3.2.1): ``L_g = CrossEntropy(M(V_c, Q), A)``.

    ``target`` is either answer indices ``[B]`` or a distribution ``[B, C]`` (soft targets, as the
    mixups produce); the soft form is ``-Σ_c y_c log softmax(z)_c``, batch mean.
    """
    if target.dim() == logits.dim() - 1:
        return F.cross_entropy(logits, target.long())
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def consistency_kl(
    whole_logits: torch.Tensor,
    guided_logits: torch.Tensor,
    direction: str = "guided||whole",
    detach_guided: bool = False,
) -> torch.Tensor:
    """Consistency (SpARC 3.2.1): ``L_c = KL(M(V, Q), M(V_c, Q))`` written in ``F.kl_div`` argument
    order, i.e. ``F.kl_div(log_softmax(whole), softmax(guided), "batchmean")`` = KL(guided ‖ whole)
    = ``Σ_c g_c (log g_c - log w_c)``, batch mean. ``direction="whole||guided"`` swaps the roles.
    """
    if detach_guided:
        guided_logits = guided_logits.detach()
    if direction == "guided||whole":
        return F.kl_div(F.log_softmax(whole_logits, -1), F.log_softmax(guided_logits, -1), reduction="batchmean", log_target=True)
    if direction == "whole||guided":
        return F.kl_div(F.log_softmax(guided_logits, -1), F.log_softmax(whole_logits, -1), reduction="batchmean", log_target=True)
    raise ValueError(f"direction must be 'guided||whole' or 'whole||guided', got {direction!r}")


def spatial_distillation(single_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Spatial distillation (SpARC 3.2.2): ``L_s = CrossEntropy(M({f_i}, Q), M_I(I_i, Q))``
    = ``-Σ_c P[b, i, c] · log softmax(z_b / τ)_c``, batch mean (``τ`` = temperature, default 1)."""
    return -(teacher_probs * F.log_softmax(single_logits / temperature, dim=-1)).sum(dim=-1).mean()


def hinge_loss(logits: torch.Tensor, answer: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Multiple-choice hinge (memory-attention VideoQA; NExT-QA's ``MultipleChoiceLoss``):
    ``Σ_{n≠a} max(0, margin - s_a + s_n)``, batch mean."""
    answer = answer.long()
    s_a = logits.gather(1, answer[:, None])
    violations = (margin - s_a + logits).clamp(min=0)
    violations = violations.masked_fill(F.one_hot(answer, logits.shape[1]).bool(), 0)
    return violations.sum(dim=1).mean()


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Span loss (TVQA+ / STAGE 4.3): ``L_span = -1/(2N) Σ_i (log p_start[y1_i] + log p_end[y2_i])`` on
    the ground-truth hypothesis; logits ``[N, T]``, targets ``[N]`` frame indices."""
    return 0.5 * (F.cross_entropy(start_logits, start.long()) + F.cross_entropy(end_logits, end.long()))


def lse_attention_loss(positive: torch.Tensor, negative: torch.Tensor, num_examples: int,
                       alpha: float = 1.0) -> torch.Tensor:
    """Attention supervision (TVQA+ / STAGE 4.3): ``L_att = 1/N Σ_i Σ_{(r_p, r_n)} log(1 + exp(α (M_rn − M_rp)))``.

    ``positive`` and ``negative`` are the attention scores of the sampled pairs ``[P]`` (each positive
    region paired with its sampled negatives, over every annotated frame and concept word of every
    example), ``num_examples`` the batch's N. ``α`` scales the score difference: 1 in the paper's
    equation, 20 in its code (``--alpha``: STAGE's scores are cosines in [-1, 1])."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    return F.softplus(alpha * (negative - positive)).sum() / num_examples


def contrastive_loss(hypotheses: torch.Tensor, anchor: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Contrastive masking (self-supervised pre-training for multiple-choice video QA, 3.2):
    ``scores = H · h_anchor`` over the C hypotheses ``H [B, C, D]``, anchor ``[B, D]``;
    ``L_cont = CE(scores, a)``."""
    scores = torch.einsum("bcd,bd->bc", hypotheses, anchor)
    return F.cross_entropy(scores, answer.long())
