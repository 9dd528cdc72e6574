"""Reference memory-attention network for video QA, and the adapter that drives it and HME.

Cai, Yuan, Shi, Li, Cheng & Shan, "Feature Augmented Memory with Global Attention Network for
VideoQA", IJCAI 2020 (sparc's ``papers/003``): local recurrent memories with global self-attention
-- a *text-augmented visual memory* and a *video-augmented textual memory*, followed by question-
and video-based self-attention blocks, video-to-text / text-to-video attention and co-attention
fusion; evaluated on TGIF-QA, MSVD-QA and MSRVTT-QA. No code was released with the paper; this is
an implementation of its equations (1)-(23), with variable names after the paper's symbols and
every step commented with its equation number.

Pipeline (Sec. 3)
-----------------
1. Encoders (3.1): appearance ``F^a`` and motion ``F^m`` each through their own LSTM -> ``I^a``,
   ``I^m`` (N frames x d); question words -> embedding -> LSTM -> ``I^q`` (words x d).
2. Text-augmented visual memory (3.2, eqs. 1-10), one step per frame: S slots ``M``, hidden states
   ``h^a``, ``h^m``, ``h^v``; read ``r_t = β_t·M_{t-1}``, update the hidden states with the question
   content ``i^q``, write appearance and motion contents with weights ``α^a_t``, ``α^m_t`` and the
   retention gate ``µ_t`` (keep / write appearance / write motion). ``Vid = [h^v_1 .. h^v_N]``.
3. Video-augmented textual memory (3.2, eqs. 11-16), one step per word, guided by the video
   contents ``i^a``, ``i^m``. ``Tex = [h^q_1 .. h^q_L]``.
4. Non-local blocks (3.3, eqs. 17-22): ``T0`` (18), ``V0`` (19), ``S``, ``A`` (20), ``B`` (21),
   ``O = [V0, A, V0⊙A, V0⊙B]`` (22).
5. Answer heads (3.4): multiple choice ``p = W_0^T O`` per candidate, trained with the hinge loss
   (23); open-ended ``softmax(W_op^T O + b_p)`` over the answer set, cross-entropy; count: one
   regressed value, mean L2 loss (Table 1's note).

Choices the paper leaves open (all made here, none hidden)
-----------------------------------------------------------
* **Sizes.** ``hidden_size`` d = 512 (3.2: "d is 512"); the memories have 50 video slots and 30
  text slots (Fig. 5: with the augmentation the best video-memory size is 50, the best
  text-memory size 30); ``word_dim`` 300 (GloVe 300-D, 3.1). Feature sizes are the user's
  (``appearance_dim`` 2048 for ResNet / 4096 for VGG, ``motion_dim`` 4096 for C3D fc).
* **Encoders.** One-layer unidirectional LSTMs (3.1 says "LSTM"), run packed so that padded frames
  and words never enter them.
* **Question input.** ``use_bert=True`` (default, the convention of sparc's other backbones):
  token features ``(..., L, bert_dim)`` projected by a Linear to ``word_dim``; ``use_bert=False``:
  token ids through an embedding (``glove_embed``, a ``(vocab, 300)`` matrix, initialises it as
  in the paper). Open-ended mixup needs features (ids cannot be interpolated).
* **Multiple choice.** The paper scores "each candidate answer" with ``p = W_0^T O`` and does not
  say how the answer enters. Each candidate is encoded as its own text "question [SEP] answer_k"
  (``qas (B, C, L, D)``, ``qas_lengths (B, C)``, as HGA/HME in doc-doc/NExT-QA) and runs the whole
  network as the text input; its score is ``W_0^T pool(O)``. The video encoders run once per video.
* **σ** in eqs. (3)-(6), (13), (14): ReLU (``activation="relu"``, default). The paper calls σ
  only "the non-linear activation" (after eq. 13). Its memories visibly extend HME's public code
  (Fan et al., CVPR 2019; doc-doc/NExT-QA ``memory_rand.py``): read weights from
  ``[h^v, h^m, h^a]`` (2), ``h^v`` without the current input (4), the 3-way keep / write-appearance /
  write-motion softmax (8) and the write (10) are its two-stream memory; (12), (13), (16) its text
  memory. There every such activation is a ReLU. ``activation="sigmoid"`` reads σ as the logistic
  function instead (it also trains, but slower: hidden states near 0.5 carry little signal at init).
* **"FC"** is an affine layer; eq. (2)'s text says its activation is tanh, so eqs. (2), (12) are
  ``softmax(W_e tanh(FC[..]))`` with FC of width 3d (2d for (12)) as ``W_e ∈ R^{3d×S}``
  (``V_e ∈ R^{2d×S}``) imply. The FCs of (9) and (15) map to d.
* **Vectors from sequences.** ``i^q = W_q I^q`` (3) and ``i^a = W_a I^a``, ``i^m = W_m I^m``
  (11; the paper's second "ia = W_q I^a" is read as ``i^m = W_m I^m``) multiply whole sequences,
  yet are used as vectors: each is the projection of its LSTM's last hidden state (the state at
  the sample's true length).
* **Eq. (7)** writes ``α_t = softmax(c_t)`` over S slots, but ``c_t ∈ R^d`` is the content written
  into the d-wide slots by eq. (10); a bias-free projection ``W_α: d -> S`` (one for appearance,
  one for motion) turns it into S write logits: ``α_t = softmax(W_α c_t)``.
* **Eqs. (5), (6), (9)** use ``h_{t-1}`` as written (content from the previous hidden state and
  the current input); eq. (4) uses ``[r_t, h^v_{t-1}, i^q]`` as written.
* **Initial state.** Memories and hidden states start at zero (as HME's memories do).
* **Self-attention.** Single-head scaled dot-product attention with bias-free d x d projections,
  no residual or LayerNorm (eqs. 17-19 are bare attention). ``d_k = d``.
* **Cross attention (20)-(22).** The paper writes ``S = Vid × Tex^T`` and (20), (21) on ``Vid`` and
  ``Tex``, but its text says V2T finds the question vectors relevant to each *self-attended* video
  feature, and ``T0`` (18) would otherwise never be used although its ablation (Att_t, Table 1)
  improves accuracy. So the cross stage runs on the self-attended sequences:
  ``S = V0 × T0^T``, ``A = Att(S W^q_A, T0 W^k_A, T0 W^v_A)``, ``B = Att(S W^q_B, V0 W^k_B, V0 W^v_B)``.
* **S has one column per word**, so ``W^q_A, W^q_B ∈ R^{N×d}`` fix N: ``max_len_q`` (default 37,
  sparc's q+a length for NExT-QA-style inputs). Columns of words beyond a text's length are zero,
  exactly as if the text were padded with zero rows; longer texts are an error.
* **Pooling.** ``O`` is frames x 4d; the heads need a vector: the mean of ``O`` over the video's
  real frames (any frame count works, which sparc's frame subsets need).
* **Heads.** Multiple choice: ``Linear(4d, 1, bias=False)`` (a bias cannot change a ranking);
  open-ended: ``Linear(4d, K)`` with ``b_p``; count: ``Linear(4d, 1)``; the count prediction is the
  output rounded and clamped to ``count_range`` (TGIF-QA counts are 1..10).
* **Regularisation.** The paper mentions gradient clipping and "weight normalization" in training
  (4.1) without details; neither is built in (apply ``torch.nn.utils.parametrizations.weight_norm``
  to the Linear layers if wanted). ``dropout`` (default 0, the paper names none) applies to the
  encoders' inputs.

Lengths
-------
``vid_lengths (B,)`` is honoured exactly: padded frames never enter the LSTMs, the memory states
stay frozen at those steps (nothing is written or read there), and they are masked out of every
attention and of the pooling. A padded sample therefore scores exactly as the same sample with the
padding physically removed, which is what sparc's ``lengths`` subset mode needs. Text lengths are
honoured the same way.

Return value: ``(logits, predict)``, as HGA: multiple choice ``(scores (B, C), argmax (B,))``,
open-ended ``(logits (B, K), argmax (B,))``, count ``(prediction (B, 1), rounded count (B,))``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sparc.adapters.base import Adapter, per_candidate, scorer_inputs
from sparc.outputs import ModelOutput

__all__ = [
    "TASKS",
    "MemoryAttention",
    "MemoryAdapter",
    "TextAugmentedVisualMemory",
    "VideoAugmentedTextMemory",
    "NonLocalCoAttention",
    "VisualMemoryState",
    "TextMemoryState",
    "attention",
    "memory_read",
    "retention_gate",
    "visual_memory_write",
    "text_memory_write",
    "count_mse",
    "task_loss_for",
]

TASKS = ("multiple_choice", "open_ended", "count")
_ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": F.relu, "tanh": torch.tanh}


# --------------------------------------------------------------------------- the equations


def memory_read(beta: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Eqs. (1), (11): ``r_t = β_t · M_{t-1}``, the read weights' mix of the S slots.
    ``beta (B, S)``, ``M (B, S, d)`` -> ``(B, d)``."""
    return torch.einsum("bs,bsd->bd", beta, M)


def retention_gate(g: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``µ_{i,t} = exp(g_{i,t}) / Σ_j exp(g_{j,t})`` for i ∈ {0 keep, 1 appearance, 2 motion}."""
    return torch.softmax(g, dim=-1)


def visual_memory_write(M_prev, mu, alpha_a, c_a, alpha_m, c_m) -> torch.Tensor:
    """Eq. (10): ``M_t = µ_0 M_{t-1} + µ_1 α^a_t c^a_t + µ_2 α^m_t c^m_t``; ``α c`` is the outer
    product (slot i receives ``α_i c``). ``M_prev (B, S, d)``, ``mu (B, 3)``, ``alpha (B, S)``, ``c (B, d)``."""
    write_a = alpha_a.unsqueeze(2) * c_a.unsqueeze(1)
    write_m = alpha_m.unsqueeze(2) * c_m.unsqueeze(1)
    mu = mu.unsqueeze(2).unsqueeze(3)
    return mu[:, 0] * M_prev + mu[:, 1] * write_a + mu[:, 2] * write_m


def text_memory_write(M_prev, alpha, c) -> torch.Tensor:
    """Eq. (16): slot i becomes ``α_{t,i} c_t + (1 - α_{t,i}) m_{i,t-1}``."""
    alpha = alpha.unsqueeze(2)
    return alpha * c.unsqueeze(1) + (1 - alpha) * M_prev


def attention(Q, K, V, key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. (17): ``softmax(Q K^T / sqrt(d_k)) V``; ``key_valid (B, Lk)`` hides padded keys."""
    scores = torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(K.shape[-1])
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid.unsqueeze(1), float("-inf"))
    return torch.bmm(torch.softmax(scores, dim=-1), V)


# --------------------------------------------------------------------------- memories


class VisualMemoryState(NamedTuple):
    M: torch.Tensor    # (B, S, d) memory slots
    h_a: torch.Tensor  # (B, d) appearance hidden state
    h_m: torch.Tensor  # (B, d) motion hidden state
    h_v: torch.Tensor  # (B, d) global hidden state


class TextMemoryState(NamedTuple):
    M: torch.Tensor    # (B, S, d) memory slots M^q
    h_q: torch.Tensor  # (B, d) hidden state


class TextAugmentedVisualMemory(nn.Module):
    """Text-augmented visual memory, eqs. (1)-(10): one step per frame, guided by the question."""

    def __init__(self, d: int, S: int, activation: str = "relu"):
        super().__init__()
        self.d, self.S = d, S
        self.sigma = _ACTIVATIONS[activation]
        self.W_q = nn.Linear(d, d, bias=False)            # i^q = W_q I^q            (3)
        self.FC_read = nn.Linear(3 * d, 3 * d)            # FC[h^v, h^m, h^a]        (2)
        self.W_e = nn.Linear(3 * d, S, bias=False)        # W_e ∈ R^{3d×S}           (2)
        self.FC_a = nn.Linear(4 * d, d)                   # FC[r, h^a, i^a, i^q]     (3)
        self.FC_m = nn.Linear(4 * d, d)                   # FC[r, h^m, i^m, i^q]     (3)
        self.FC_v = nn.Linear(3 * d, d)                   # FC[r, h^v, i^q]          (4)
        self.W_a = nn.Linear(2 * d, d)                    # W^a, b^a                 (5)
        self.W_m = nn.Linear(2 * d, d)                    # W^m, b^m                 (6)
        self.W_alpha_a = nn.Linear(d, S, bias=False)      # c^a -> S write logits    (7)
        self.W_alpha_m = nn.Linear(d, S, bias=False)      # c^m -> S write logits    (7)
        self.FC_g = nn.Linear(3 * d, d)                   # FC[h^v, c^m, c^a]        (9)
        self.W_g = nn.Linear(d, 3, bias=False)            # W_g                      (9)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> VisualMemoryState:
        zeros = like.new_zeros(batch_size, self.d)
        return VisualMemoryState(like.new_zeros(batch_size, self.S, self.d), zeros, zeros, zeros)

    def step(self, state: VisualMemoryState, i_a_t, i_m_t, i_q):
        """One time step. Returns the new state and the step's weights ``{"beta", "alpha_a",
        "alpha_m", "mu"}`` (for inspection and tests)."""
        M, h_a, h_m, h_v = state
        # read (1)-(2): weights from the previous hidden states
        beta = torch.softmax(self.W_e(torch.tanh(self.FC_read(torch.cat([h_v, h_m, h_a], -1)))), -1)
        r = memory_read(beta, M)
        # hidden states (3)-(4), each guided by the question content i^q
        h_a_new = self.sigma(self.FC_a(torch.cat([r, h_a, i_a_t, i_q], -1)))
        h_m_new = self.sigma(self.FC_m(torch.cat([r, h_m, i_m_t, i_q], -1)))
        h_v_new = self.sigma(self.FC_v(torch.cat([r, h_v, i_q], -1)))
        # contents (5)-(6) and write weights (7)
        c_a = self.sigma(self.W_a(torch.cat([i_a_t, h_a], -1)))
        c_m = self.sigma(self.W_m(torch.cat([i_m_t, h_m], -1)))
        alpha_a = torch.softmax(self.W_alpha_a(c_a), -1)
        alpha_m = torch.softmax(self.W_alpha_m(c_m), -1)
        # retention gate (8)-(9) and write (10)
        mu = retention_gate(self.W_g(torch.tanh(self.FC_g(torch.cat([h_v, c_m, c_a], -1)))))
        M_new = visual_memory_write(M, mu, alpha_a, c_a, alpha_m, c_m)
        weights = {"beta": beta, "alpha_a": alpha_a, "alpha_m": alpha_m, "mu": mu}
        return VisualMemoryState(M_new, h_a_new, h_m_new, h_v_new), weights

    def forward(self, I_a, I_m, q_last, valid):
        """``I_a``, ``I_m`` (B, N, d) encoder outputs; ``q_last`` (B, d) the question LSTM's last
        state; ``valid`` (B, N) real frames. Returns ``Vid`` (B, N, d) = [h^v_t], zero at padding."""
        i_q = self.W_q(q_last)
        state = self.initial_state(I_a.shape[0], I_a)
        Vid = []
        for t in range(I_a.shape[1]):
            new, _ = self.step(state, I_a[:, t], I_m[:, t], i_q)
            live = valid[:, t]
            # past a video's end nothing is written or read: the state stays as it was
            state = VisualMemoryState(*(_where_rows(live, n, o) for n, o in zip(new, state)))
            Vid.append(new.h_v.masked_fill(~live.unsqueeze(1), 0.0))
        return torch.stack(Vid, dim=1)


class VideoAugmentedTextMemory(nn.Module):
    """Video-augmented textual memory, eqs. (11)-(16): one step per word, guided by the video."""

    def __init__(self, d: int, S: int, activation: str = "relu"):
        super().__init__()
        self.d, self.S = d, S
        self.sigma = _ACTIVATIONS[activation]
        self.W_a = nn.Linear(d, d, bias=False)            # i^a = W_a I^a           (11)
        self.W_m = nn.Linear(d, d, bias=False)            # i^m = W_m I^m           (11)
        self.FC_read = nn.Linear(2 * d, 2 * d)            # FC[h^q, i^q_t]          (12)
        self.V_e = nn.Linear(2 * d, S, bias=False)        # V_e ∈ R^{2d×S}          (12)
        self.FC_h = nn.Linear(5 * d, d)                   # FC[i^q_t, r, h^q, i^a, i^m] (13)
        self.FC_c = nn.Linear(2 * d, d)                   # FC[i^q_t, h^q]          (14)
        self.FC_w = nn.Linear(2 * d, d)                   # FC[c^q_t, h^q]          (15)
        self.v_a = nn.Linear(d, S, bias=False)            # v_a                     (15)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> TextMemoryState:
        return TextMemoryState(like.new_zeros(batch_size, self.S, self.d), like.new_zeros(batch_size, self.d))

    def step(self, state: TextMemoryState, i_q_t, i_a, i_m):
        """One word. Returns the new state and ``{"beta", "alpha"}``."""
        M, h_q = state
        beta = torch.softmax(self.V_e(torch.tanh(self.FC_read(torch.cat([h_q, i_q_t], -1)))), -1)  # (12)
        r = memory_read(beta, M)                                                                   # (11)
        h_q_new = self.sigma(self.FC_h(torch.cat([i_q_t, r, h_q, i_a, i_m], -1)))                 # (13)
        c_q = self.sigma(self.FC_c(torch.cat([i_q_t, h_q], -1)))                                  # (14)
        alpha = torch.softmax(self.v_a(torch.tanh(self.FC_w(torch.cat([c_q, h_q], -1)))), -1)     # (15)
        M_new = text_memory_write(M, alpha, c_q)                                                   # (16)
        return TextMemoryState(M_new, h_q_new), {"beta": beta, "alpha": alpha}

    def forward(self, I_q, a_last, m_last, valid):
        """``I_q`` (B, L, d) question LSTM outputs; ``a_last``, ``m_last`` (B, d) the video LSTMs'
        last states; ``valid`` (B, L) real words. Returns ``Tex`` (B, L, d) = [h^q_t], zero at padding."""
        i_a, i_m = self.W_a(a_last), self.W_m(m_last)
        state = self.initial_state(I_q.shape[0], I_q)
        Tex = []
        for t in range(I_q.shape[1]):
            new, _ = self.step(state, I_q[:, t], i_a, i_m)
            live = valid[:, t]
            state = TextMemoryState(*(_where_rows(live, n, o) for n, o in zip(new, state)))
            Tex.append(new.h_q.masked_fill(~live.unsqueeze(1), 0.0))
        return torch.stack(Tex, dim=1)


def _where_rows(rows: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(rows.view(-1, *([1] * (new.dim() - 1))), new, old)


# --------------------------------------------------------------------------- non-local blocks


class NonLocalCoAttention(nn.Module):
    """Eqs. (17)-(22): question- and video-based self-attention, V2T / T2V attention, co-attention
    fusion ``O = [V0, A, V0⊙A, V0⊙B]`` (B, N_frames, 4d). See the module docstring for why the
    cross stage reads ``V0`` and ``T0``."""

    def __init__(self, d: int, max_len_q: int):
        super().__init__()
        self.max_len_q = max_len_q

        def proj(n_in=d):
            return nn.Linear(n_in, d, bias=False)

        self.W_q_T, self.W_k_T, self.W_v_T = proj(), proj(), proj()                # (18)
        self.W_q_V, self.W_k_V, self.W_v_V = proj(), proj(), proj()                # (19)
        self.W_q_A, self.W_k_A, self.W_v_A = proj(max_len_q), proj(), proj()      # (20)
        self.W_q_B, self.W_k_B, self.W_v_B = proj(max_len_q), proj(), proj()      # (21)

    def forward(self, Vid, Tex, vid_valid, tex_valid):
        n_words = Tex.shape[1]
        if n_words > self.max_len_q:
            raise ValueError(f"the text has {n_words} tokens but the model was built with max_len_q={self.max_len_q}")
        T0 = attention(self.W_q_T(Tex), self.W_k_T(Tex), self.W_v_T(Tex), tex_valid)   # (18)
        V0 = attention(self.W_q_V(Vid), self.W_k_V(Vid), self.W_v_V(Vid), vid_valid)   # (19)
        # padded words/frames are zero rows, so they add nothing to S (a word column each)
        T0 = T0.masked_fill(~tex_valid.unsqueeze(2), 0.0)
        V0 = V0.masked_fill(~vid_valid.unsqueeze(2), 0.0)
        S = torch.bmm(V0, T0.transpose(1, 2))                                          # (frames, words)
        S = F.pad(S, (0, self.max_len_q - n_words))                                    # -> max_len_q columns
        A = attention(self.W_q_A(S), self.W_k_A(T0), self.W_v_A(T0), tex_valid)        # (20) V2T
        B = attention(self.W_q_B(S), self.W_k_B(V0), self.W_v_B(V0), vid_valid)        # (21) T2V
        return torch.cat([V0, A, V0 * A, V0 * B], dim=-1)                              # (22)


# --------------------------------------------------------------------------- the model


def _lengths_cpu(lengths, expected: int, longest: int, what: str) -> torch.Tensor:
    lengths = torch.as_tensor(lengths).reshape(-1).to("cpu", torch.int64)
    if lengths.numel() != expected or lengths.min() < 1 or lengths.max() > longest:
        raise ValueError(f"{what} must hold {expected} values in [1, {longest}], got {lengths.tolist()}")
    return lengths


def _valid(lengths: torch.Tensor, width: int, device) -> torch.Tensor:
    return torch.arange(width, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


class MemoryAttention(nn.Module):
    """The network of Cai et al., "Feature Augmented Memory with Global Attention Network for
    VideoQA" (IJCAI 2020); see the module docstring for the equations and every choice the paper leaves open.

    ``MemoryAttention(appearance_dim, motion_dim, hidden_size=512, ..., task="multiple_choice")``.

    ``forward(vid_feats, qas, qas_lengths, vid_lengths=None)``:

    * ``vid_feats (B, T, appearance_dim + motion_dim)`` = [appearance | motion] per frame;
    * multiple choice: ``qas (B, C, L, bert_dim)`` token features of "question [SEP] answer_k"
      (or ``(B, C, L)`` ids when ``use_bert=False``), ``qas_lengths (B, C)``;
      open-ended and count: the question alone, ``qas (B, L, bert_dim)`` / ``(B, L)``, ``qas_lengths (B,)``;
    * ``vid_lengths (B,)`` optional: frames at or past a video's length are padding, ignored exactly.

    Returns ``(logits, predict)``: ``(scores (B, C), argmax)``, ``(logits (B, num_answers), argmax)``
    or ``(prediction (B, 1), count rounded and clamped to count_range (B,))``.
    """

    #: forward accepts ``vid_lengths`` and ignores padded frames exactly.
    supports_vid_lengths = True

    def __init__(
        self,
        appearance_dim: int = 2048,
        motion_dim: int = 4096,
        hidden_size: int = 512,
        word_dim: int = 300,
        video_memory_size: int = 50,
        text_memory_size: int = 30,
        max_len_q: int = 37,
        task: str = "multiple_choice",
        num_answers: int = 1000,
        use_bert: bool = True,
        bert_dim: int = 768,
        vocab_size: Optional[int] = None,
        glove_embed=None,
        dropout: float = 0.0,
        activation: str = "relu",
        count_range: tuple = (1, 10),
    ):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        d = hidden_size
        self.appearance_dim, self.motion_dim, self.hidden_size = appearance_dim, motion_dim, d
        self.word_dim, self.max_len_q, self.task, self.num_answers = word_dim, max_len_q, task, num_answers
        self.use_bert, self.bert_dim = use_bert, bert_dim
        self.count_range = tuple(count_range)

        # 3.1 feature extraction
        self.input_dropout = nn.Dropout(dropout)
        self.appearance_encoder = nn.LSTM(appearance_dim, d, batch_first=True)
        self.motion_encoder = nn.LSTM(motion_dim, d, batch_first=True)
        if use_bert:
            self.word_embedding = nn.Linear(bert_dim, word_dim)
        elif glove_embed is not None:
            if isinstance(glove_embed, (str, bytes)) or hasattr(glove_embed, "__fspath__"):
                import numpy as np  # a GloVe matrix saved with np.save

                glove_embed = np.load(glove_embed)
            weights = torch.as_tensor(glove_embed, dtype=torch.float32)
            if weights.shape[1] != word_dim:
                raise ValueError(f"glove_embed has width {weights.shape[1]}, word_dim is {word_dim}")
            self.word_embedding = nn.Embedding.from_pretrained(weights, freeze=False)
        else:
            if not vocab_size:
                raise ValueError("use_bert=False needs vocab_size (or glove_embed)")
            self.word_embedding = nn.Embedding(vocab_size, word_dim)
        self.question_encoder = nn.LSTM(word_dim, d, batch_first=True)

        # 3.2 memories, 3.3 non-local blocks
        self.visual_memory = TextAugmentedVisualMemory(d, video_memory_size, activation)
        self.text_memory = VideoAugmentedTextMemory(d, text_memory_size, activation)
        self.non_local = NonLocalCoAttention(d, max_len_q)

        # 3.4 answer generation: only the task's own head (no parameter left without gradient)
        if task == "multiple_choice":
            self.head = nn.Linear(4 * d, 1, bias=False)     # p = W_0^T O
        elif task == "open_ended":
            self.head = nn.Linear(4 * d, num_answers)       # W_op^T O + b_p
        else:
            self.head = nn.Linear(4 * d, 1)                 # regressed count

    # ---- encoders ---------------------------------------------------------------------------
    @staticmethod
    def _run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: Optional[torch.Tensor]):
        """(B, L, in) -> outputs (B, L', d) zero past each length, last state (B, d) at each length."""
        if lengths is None:
            out, (h, _) = lstm(x)
            return out, h[-1]
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, _) = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)
        return out, h[-1]

    def encode_video(self, vid_feats, vid_lengths=None):
        """3.1: ``I^a``, ``I^m`` (B, T, d), their last states (B, d) and the frame mask (B, T)."""
        B, T, D = vid_feats.shape
        if D != self.appearance_dim + self.motion_dim:
            raise ValueError(f"vid_feats has width {D}; expected appearance_dim + motion_dim = "
                             f"{self.appearance_dim} + {self.motion_dim}")
        lengths = None if vid_lengths is None else _lengths_cpu(vid_lengths, B, T, "vid_lengths")
        F_a, F_m = vid_feats.split([self.appearance_dim, self.motion_dim], dim=-1)
        I_a, a_last = self._run_lstm(self.appearance_encoder, self.input_dropout(F_a), lengths)
        I_m, m_last = self._run_lstm(self.motion_encoder, self.input_dropout(F_m), lengths)
        if lengths is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=vid_feats.device)
        else:  # pad_packed_sequence stops at the longest length: restore T
            I_a, I_m = (F.pad(I, (0, 0, 0, T - I.shape[1])) for I in (I_a, I_m))
            valid = _valid(lengths, T, vid_feats.device)
        return I_a, I_m, a_last, m_last, valid

    def encode_text(self, tokens, lengths):
        """3.1: ``I^q`` (B, L', d) with L' the longest length, its last state (B, d), word mask."""
        n = tokens.shape[0]
        lengths = _lengths_cpu(lengths, n, tokens.shape[1], "qas_lengths")
        if lengths.max() > self.max_len_q:
            raise ValueError(f"a text has {int(lengths.max())} tokens but the model was built with "
                             f"max_len_q={self.max_len_q}")
        Q = self.input_dropout(self.word_embedding(tokens))
        I_q, q_last = self._run_lstm(self.question_encoder, Q, lengths)
        return I_q, q_last, _valid(lengths, I_q.shape[1], tokens.device)

    # ---- forward ----------------------------------------------------------------------------
    def texts(self, qas, qas_lengths):
        """The texts this task encodes, flattened ``(B*C, L[, D])``, their lengths, and C."""
        qas_lengths = torch.as_tensor(qas_lengths)
        token_dims = 2 if self.use_bert else 1  # (L, D) features or (L,) ids per text
        if self.task == "multiple_choice":
            if qas.dim() != 2 + token_dims or qas_lengths.dim() != 2:
                raise ValueError("multiple choice needs qas (B, C, L[, D]) and qas_lengths (B, C)")
            return qas.flatten(0, 1), qas_lengths.reshape(-1), qas.shape[1]
        if qas.dim() != 1 + token_dims or qas_lengths.dim() != 1:
            raise ValueError(f"task {self.task!r} needs the question qas (B, L[, D]) and qas_lengths (B,)")
        return qas, qas_lengths, 1

    def encode_texts(self, qas, qas_lengths):
        """The frame-independent part of :meth:`forward`, batch first: ``(I^q, q_last, word mask)`` of
        every text, each ``(B, C, ...)``. A training step computes it once for all its views."""
        texts, text_lengths, C = self.texts(qas, qas_lengths)
        B = texts.shape[0] // C
        return tuple(x.reshape(B, C, *x.shape[1:]) for x in self.encode_text(texts, text_lengths))

    def forward(self, vid_feats, qas, qas_lengths, vid_lengths=None, text=None):
        B = vid_feats.shape[0]
        multiple_choice = self.task == "multiple_choice"
        texts, text_lengths, C = self.texts(qas, qas_lengths)

        I_a, I_m, a_last, m_last, vid_valid = self.encode_video(vid_feats, vid_lengths)
        if text is None:
            I_q, q_last, tex_valid = self.encode_text(texts, text_lengths)
        else:  # encode_texts, computed once for every view of a training step
            I_q, q_last, tex_valid = (x.flatten(0, 1) for x in text)
        if C > 1:  # every candidate text meets the same video
            I_a, I_m, a_last, m_last, vid_valid = (
                x.repeat_interleave(C, dim=0) for x in (I_a, I_m, a_last, m_last, vid_valid)
            )
        Vid = self.visual_memory(I_a, I_m, q_last, vid_valid)        # (1)-(10)
        Tex = self.text_memory(I_q, a_last, m_last, tex_valid)       # (11)-(16)
        O = self.non_local(Vid, Tex, vid_valid, tex_valid)           # (17)-(22)
        w = vid_valid.unsqueeze(2).to(O.dtype)
        pooled = (O * w).sum(dim=1) / w.sum(dim=1)                   # mean over real frames
        out = self.head(pooled)
        if multiple_choice:
            scores = out.view(B, C)
            return scores, scores.argmax(dim=1)
        if self.task == "open_ended":
            return out, out.argmax(dim=1)
        low, high = self.count_range
        return out, out.detach().squeeze(1).round().clamp(low, high)


# --------------------------------------------------------------------------- losses (3.4)


def count_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L2 loss of the count task (Table 1's note): ``mean((p - y)^2)``; ``prediction (B, 1)``
    or ``(B,)``, ``target (B,)`` counts (integer or float). Usable as ``sparc.wrap(..., task_loss=count_mse)``."""
    return F.mse_loss(prediction.reshape(-1).float(), target.reshape(-1).to(prediction.device).float())


def task_loss_for(task: str):
    """The paper's loss for ``task``, in the form ``sparc.wrap(task_loss=...)`` takes: ``"hinge"``
    (eq. 23) for multiple choice, ``"ce"`` for open-ended, :func:`count_mse` for counting.
    With a mixup technique, multiple choice must use ``"ce"`` (hinge needs hard labels)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return {"multiple_choice": "hinge", "open_ended": "ce", "count": count_mse}[task]


# --------------------------------------------------------------------------- adapter


class MemoryAdapter(Adapter):
    """Drives the reference :class:`MemoryAttention` (``lengths`` mode) and HME (the doc-doc/NExT-QA
    class and sparc's reference ``HME``, through ``sparc.adapters.hme``: ``hme_subset_mode`` and
    ``forward_hme``). Any model that is not a :class:`MemoryAttention` is driven as HME.

    The task is the adapter's, fixed at construction because the techniques read it before any
    forward (``MemoryAdapter()`` multiple choice, ``MemoryAdapter(open_ended=True)`` or
    ``MemoryAdapter(task="open_ended")``, ``MemoryAdapter(task="count")``);
    ``MemoryAdapter.for_model(model)`` reads it from a MemoryAttention's ``task``. Forwarding a
    MemoryAttention built for another task is an error.

    Batch fields: ``vid_feats (B, T, Da + Dm)``, optional ``vid_lengths (B,)``, ``answer``, ``qid``;
    multiple choice ``qas (B, C, L, D)``, ``qas_lengths (B, C)`` (candidate axis 1, so mixup's
    "concat" scores 2C candidates); open-ended and count ``qns (B, L, D)``, ``qns_lengths (B,)``
    (the ``question`` fields open-ended mixup interpolates; ids cannot be interpolated).

    Count: ``forward`` returns the ``(B, 1)`` prediction as ``logits``. Of sparc's techniques only
    the frame machinery applies (``forward_subset`` in lengths mode, e.g. for a user's own guided
    MSE on causal frames); TemporalGuidance (CE + KL), SpatialDistillation (CE to the teacher's
    distribution over candidates) and the mixups (one-hot class targets) all need a distribution
    over answers and do not make sense for a regressed count. Train it with
    ``sparc.wrap(model, adapter, [], task_loss=count_mse)``.

    ``find_unused_parameters`` (DDP): False suits MemoryAttention whenever the whole-video view has
    two or more frames, which then reaches every parameter of the model's task in every step. A
    one-frame video never reads what its single memory step writes (the weights of eqs. 3 and
    5-10 get no gradient from it); pass True to train on one-frame videos, and when driving the
    original HME class, whose ``linear_qns`` is never used (``for_model`` does so).

    Multiple choice reports ``hypothesis (B, C, D)``: the per-candidate vector the model's scorer reads
    (MemoryAttention: the pooled ``O`` before ``head``; HME: ``vq2word_hme``'s input), and contrastive
    masking's :meth:`mask_text`; ``mask_token_id`` is the id it writes into word-id ``qas``.
    """

    temporal = {"vid_feats": 1}
    subset_mode = "lengths"
    lengths_field = "vid_lengths"

    def __init__(self, task: str = "multiple_choice", *, open_ended: bool = False,
                 num_answers: Optional[int] = None, find_unused_parameters: bool = False,
                 mask_token_id: Optional[int] = None):
        if open_ended:
            if task not in ("multiple_choice", "open_ended"):
                raise ValueError(f"open_ended=True contradicts task={task!r}")
            task = "open_ended"
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.open_ended = task == "open_ended"
        if task == "multiple_choice":
            self.candidate = {"qas": 1, "qas_lengths": 1}
            self.question = {}
        else:
            self.candidate = {}
            self.question = {"qns": 1, "qns_lengths": 0}
        # wrap() checks answer indices against it when no priors are given (0: unknown; counts are no indices)
        self.num_answers = int(num_answers or 0) if task != "count" else 0
        self.find_unused_parameters = find_unused_parameters
        self.mask_token_id = mask_token_id
        if task == "multiple_choice":   # contrastive masking's hooks
            self.outputs = frozenset({"logits", "hypothesis"})
            self.text_tokens = "features" if mask_token_id is None else "ids"

    @classmethod
    def for_model(cls, model, **kwargs) -> "MemoryAdapter":
        """An adapter for ``model``'s task. HME is multiple choice; the original class leaves
        never-read layers trainable (``find_unused_parameters=True``), sparc's reference HME (the one
        with ``supports_vid_lengths``) freezes them."""
        if isinstance(model, MemoryAttention):
            num_answers = model.num_answers if model.task == "open_ended" else None
            return cls(model.task, num_answers=kwargs.pop("num_answers", num_answers), **kwargs)
        kwargs.setdefault("find_unused_parameters", not getattr(model, "supports_vid_lengths", False))
        return cls("multiple_choice", **kwargs)

    def mode_for(self, model) -> str:
        if isinstance(model, MemoryAttention):
            return "lengths"
        from sparc.adapters.hme import hme_subset_mode  # lazily: HME lives in its own module

        return hme_subset_mode(model)

    def _texts(self, inputs: dict):
        if self.task == "multiple_choice":
            return inputs["qas"], inputs["qas_lengths"]
        return inputs["qns"], inputs["qns_lengths"]

    def encode_text(self, model, inputs: dict):
        if not isinstance(model, MemoryAttention):
            from sparc.adapters.hme import encode_text_hme

            return encode_text_hme(model, inputs)
        return {"texts": model.encode_texts(*self._texts(inputs))}

    def forward(self, model, inputs: dict, text=None) -> ModelOutput:
        if not isinstance(model, MemoryAttention):
            from sparc.adapters.hme import forward_hme

            return forward_hme(model, inputs) if text is None else forward_hme(model, inputs, text=text)
        if model.task != self.task:
            raise ValueError(f"the model was built for task {model.task!r}, the adapter for {self.task!r}")
        texts, lengths = self._texts(inputs)
        multiple_choice = self.task == "multiple_choice"
        with scorer_inputs(model.head if multiple_choice else None) as seen:
            out, _ = model(inputs["vid_feats"], texts, lengths, vid_lengths=inputs.get("vid_lengths"),
                           text=None if text is None else text["texts"])
        return ModelOutput(logits=out, hypothesis=per_candidate(seen, out.shape[0]) if multiple_choice else None)

    def mask_text(self, inputs: dict, which: torch.Tensor, masker) -> dict:
        """Contrastive masking (:meth:`Adapter.mask_text`; multiple choice only)."""
        if self.task != "multiple_choice":
            raise ValueError(f"MemoryAdapter(task={self.task!r}) has no candidate hypotheses to mask")
        from sparc.adapters.hga import mask_qas_text  # the qas / qas_lengths layout HGA and HME share

        return mask_qas_text(self, inputs, which, masker, self.mask_token_id)
