"""Reference HME: heterogeneous memory enhanced multimodal attention for multiple-choice video QA.

Fan et al., "Heterogeneous Memory Enhanced Multimodal Attention Model for Video Question
Answering", CVPR 2019.

This module is checkpoint- and call-compatible with the public implementation in
doc-doc/NExT-QA @ 6b92588 (``networks/VQAModel/HME.py`` and what it imports:
``EncoderRNN.EncoderVidCoMem`` / ``EncoderQns``, ``Attention.TempAttention`` /
``MultiModalAttentionModule``, ``memory_rand.MemoryRamTwoStreamModule`` / ``MemoryRamModule`` /
``MMModule``). Constructor arguments, ``forward`` signature and every state_dict key are the
original's, so an original build script ports by changing its imports and a released checkpoint
loads with ``load_state_dict(sd)`` (strict).

The model: appearance and motion features each pass two stacked LSTMs; a question+answer LSTM (two
layers) encodes each candidate; question-guided temporal attention pools each video stream; a
two-stream (heterogeneous) video memory and a question memory are read by a multimodal fusion
module (two LSTM cells, three reasoning steps); a linear layer scores the candidate.

It is an independent implementation. Differences from the original, all of which leave the
outputs unchanged wherever the original is well defined:

* Batched: the original loops over candidates, then over samples, running each memory step on
  one row; here all samples and candidates run at once. The video memory does not depend on the
  candidate, so it runs once per video instead of once per candidate, and the fusion's last
  attention read (whose result the original computes and discards) is skipped.
* Batch size 1 works (the original ``.squeeze()``-ed the batch axis away).
* Optional ``vid_lengths``: the video LSTMs run packed, temporal attention and the fusion's
  attention ignore padded frames, and the fusion starts from each sample's last *real* frame, so
  a padded sample scores exactly as the same sample sliced to its length. The memory banks have a
  fixed number of slots (``max_len_v`` / ``max_len_q``) that is unrelated to the number of frames
  or words, and both memories are causal (step t reads only inputs up to t), so padding can be
  ignored exactly.
* Parameters the original builds but never reads (``linear_qns``, ``mm_att.Wvh``,
  ``mm_att.Wth``) are kept for the checkpoint keys but frozen (``requires_grad=False``), so
  DistributedDataParallel needs no ``find_unused_parameters``. They never received a gradient.
* Any number of candidates C; lengths may live on any device.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sparc.adapters.base import per_candidate, scorer_inputs
from sparc.adapters.hga import EncoderQns, encode_questions_once, questions_served, rnn_class
from sparc.outputs import ModelOutput
from sparc.rows import select_rows

__all__ = [
    "EncoderQns",
    "EncoderVidCoMem",
    "HME",
    "MMModule",
    "MemoryRamModule",
    "MemoryRamTwoStreamModule",
    "MultiModalAttentionModule",
    "TempAttention",
    "fixture_model",
    "forward_hme",
    "hme_subset_mode",
]


# --------------------------------------------------------------------------- helpers


def _cpu_lengths(lengths) -> torch.Tensor:
    # pack_padded_sequence wants a 1-D int64 tensor on the CPU.
    return torch.as_tensor(lengths).reshape(-1).to("cpu", torch.int64)


def _valid(lengths, max_len: int, device) -> torch.Tensor:
    """(N, max_len) bool, True at positions < length."""
    lengths = torch.as_tensor(lengths, device=device).reshape(-1, 1)
    return torch.arange(max_len, device=device).unsqueeze(0) < lengths


def _masked_softmax(scores: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over the last axis; entries where ``valid`` is False get weight exactly 0."""
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return torch.softmax(scores, dim=-1)


# --------------------------------------------------------------------------- encoders


class EncoderVidCoMem(nn.Module):
    """Appearance and motion streams, each through two stacked LSTMs (``EncoderRNN.EncoderVidCoMem``).

    ``vid_feats[..., :dim_app]`` is the appearance stream and everything after it the motion
    stream. ``input_dropout_p`` is stored but, as in the original, never applied.
    """

    def __init__(
        self,
        dim_app: int,
        dim_motion: int,
        dim_hidden: int,
        input_dropout_p: float = 0.2,
        rnn_dropout_p: float = 0,
        n_layers: int = 1,
        bidirectional: bool = False,
        rnn_cell: str = "gru",
    ):
        super().__init__()
        self.dim_app = dim_app
        self.dim_motion = dim_motion
        self.dim_hidden = dim_hidden
        self.input_dropout_p = input_dropout_p
        self.rnn_dropout_p = rnn_dropout_p
        self.n_layers = n_layers
        self.bidirectional = bidirectional
        self.rnn_cell = rnn_cell

        rnn = rnn_class(rnn_cell)

        def layer(dim_in):
            return rnn(dim_in, dim_hidden, n_layers, batch_first=True, bidirectional=bidirectional,
                       dropout=rnn_dropout_p)

        self.rnn_app_l1 = layer(dim_app)
        self.rnn_app_l2 = layer(dim_hidden)
        self.rnn_motion_l1 = layer(dim_motion)
        self.rnn_motion_l2 = layer(dim_hidden)

    def forward(self, vid_feats: torch.Tensor, vid_lengths=None):
        """vid_feats (B, T, dim_app + dim_motion) -> (app_l1, app_l2, motion_l1, motion_l2), each
        (B, T, H). With ``vid_lengths`` (B,) every LSTM runs packed: frames past a sample's length
        never enter its recurrence and its output rows there are zero."""
        num_frames = vid_feats.shape[1]
        lengths = None
        if vid_lengths is not None:
            lengths = _cpu_lengths(vid_lengths)
            if lengths.numel() != vid_feats.shape[0] or lengths.min() < 1 or lengths.max() > num_frames:
                raise ValueError(
                    f"vid_lengths must hold {vid_feats.shape[0]} values in [1, {num_frames}], got {lengths.tolist()}"
                )

        def run(rnn, x):
            if lengths is None:
                return rnn(x)[0]
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=num_frames)[0]

        app_l1 = run(self.rnn_app_l1, vid_feats[:, :, : self.dim_app])
        app_l2 = run(self.rnn_app_l2, app_l1)
        motion_l1 = run(self.rnn_motion_l1, vid_feats[:, :, self.dim_app :])
        motion_l2 = run(self.rnn_motion_l2, motion_l1)
        return app_l1, app_l2, motion_l1, motion_l2


# --------------------------------------------------------------------------- attention


class TempAttention(nn.Module):
    """Question-guided additive attention over frames (``Attention.TempAttention``)."""

    def __init__(self, text_dim: int, visual_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.linear_text = nn.Linear(text_dim, hidden_dim)
        self.linear_visual = nn.Linear(visual_dim, hidden_dim)
        self.linear_att = nn.Linear(hidden_dim, 1, bias=False)
        for linear in (self.linear_text, self.linear_visual, self.linear_att):
            nn.init.xavier_normal_(linear.weight)

    def forward(self, qns_embed, vid_outputs, frame_mask=None):
        """qns_embed (B, Dq) or (B, C, Dq) (one query per candidate), vid_outputs (B, T, Dv),
        frame_mask (B, T) True at real frames -> (context (B[, C], Dv), weights (B[, C], T))."""
        per_candidate = qns_embed.dim() == 3
        query = self.linear_text(qns_embed if per_candidate else qns_embed.unsqueeze(1))  # (B, C, H)
        keys = self.linear_visual(vid_outputs)  # (B, T, H), shared by every candidate
        scores = self.linear_att(torch.tanh(query.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
        beta = _masked_softmax(scores, None if frame_mask is None else frame_mask.unsqueeze(1))
        context = torch.matmul(beta, vid_outputs)  # (B, C, Dv)
        if not per_candidate:
            return context.squeeze(1), beta.squeeze(1)
        return context, beta


class MultiModalAttentionModule(nn.Module):
    """One reasoning read of the fusion module (``Attention.MultiModalAttentionModule``): attend
    over the video memory and the question memory with the controller state ``h``, weigh the two
    summaries against each other, and update ``h``.

    ``Wvh`` and ``Wth`` exist in checkpoints but the original's forward never reads them; they are
    frozen here so every trainable parameter receives a gradient.
    """

    def __init__(self, hidden_size: int = 512, simple: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.simple = simple  # stored, unused, as in the original

        def param(*shape):
            return nn.Parameter(torch.empty(*shape))

        d = hidden_size
        self.Wav, self.Wat, self.Uav, self.Uat = param(d, d), param(d, d), param(d, d), param(d, d)
        self.Vav, self.Vat = param(d), param(d)
        self.bav, self.bat = param(1, 1, d), param(1, 1, d)
        self.Whh, self.Wvh, self.Wth = param(d, d), param(d, d), param(d, d)
        self.bh = param(1, 1, d)
        self.video_sum_encoder = nn.Linear(d, d)
        self.question_sum_encoder = nn.Linear(d, d)
        self.Wb, self.Vbv, self.Vbt = param(d, d), param(d, d), param(d, d)
        self.bbv, self.bbt, self.wb = param(d), param(d), param(d)
        self.init_weights()
        self.Wvh.requires_grad_(False)
        self.Wth.requires_grad_(False)

    def init_weights(self) -> None:
        # The original's initialisation.
        with torch.no_grad():
            for p in (self.Wav, self.Wat, self.Uav, self.Uat, self.Vav, self.Vat, self.Whh, self.Wvh, self.Wth):
                p.normal_(0.0, 0.1)
            for p in (self.Wb, self.Vbv, self.Vbt, self.wb):
                p.normal_(0.0, 0.01)
            for p in (self.bav, self.bat, self.bh, self.bbv, self.bbt):
                p.zero_()

    @staticmethod
    def _read(h, memory, W, U, b, v, valid):
        """Additive attention of query h (N, d) over memory (N, S, d) -> summary (N, d)."""
        scores = torch.matmul(torch.tanh(torch.matmul(memory, W) + torch.matmul(h, U).unsqueeze(1) + b), v)
        weights = _masked_softmax(scores, valid)
        return (weights.unsqueeze(-1) * memory).sum(dim=1)

    def forward(self, h, hidden_frames, hidden_text, inv_attention=False, frames_mask=None, text_mask=None):
        """h (N, d); hidden_frames (N, T, d) and hidden_text (N, L, d), or (T, d) / (L, d) for one
        sample as the original is called; masks (N, T) / (N, L) True at real rows -> (N, d)."""
        if hidden_frames.dim() == 2:
            hidden_frames = hidden_frames.unsqueeze(0)
        if hidden_text.dim() == 2:
            hidden_text = hidden_text.unsqueeze(0)
        # inv_attention (never set by HME) negates the attention scores
        v_video, v_text = (-self.Vav, -self.Vat) if inv_attention else (self.Vav, self.Vat)
        video_sum = self._read(h, hidden_frames, self.Wav, self.Uav, self.bav, v_video, frames_mask)
        text_sum = self._read(h, hidden_text, self.Wat, self.Uat, self.bat, v_text, text_mask)

        # How much to trust each modality: a softmax over the (video, question) pair.
        gate_h = torch.matmul(h, self.Wb)
        video_gate = torch.matmul(video_sum, self.Vbv) + self.bbv + gate_h
        text_gate = torch.matmul(text_sum, self.Vbt) + self.bbt + gate_h
        beta = torch.softmax(torch.matmul(torch.tanh(torch.stack((video_gate, text_gate), dim=1)), self.wb), dim=1)

        mixed = (beta[:, 0:1] * self.video_sum_encoder(video_sum)
                 + beta[:, 1:2] * self.question_sum_encoder(text_sum))
        return torch.tanh(torch.matmul(h, self.Whh) + mixed + self.bh.view(-1))


# --------------------------------------------------------------------------- memories


class MemoryRamModule(nn.Module):
    """Question memory (``memory_rand.MemoryRamModule``): a recurrent controller that reads from
    and writes to ``memory_bank_size`` slots at every word and returns its hidden states.

    ``forward(hidden_frames, nImg)`` takes (L, input_size) as the original does, or a batch
    (N, L, input_size); it runs ``nImg`` steps (default: all L) and returns (nImg, hidden) or
    (N, nImg, hidden). Step t reads inputs up to t only, so rows past a sample's length can simply
    be ignored downstream.
    """

    def __init__(self, input_size: int = 1024, hidden_size: int = 512, memory_bank_size: int = 100, device=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.memory_bank_size = memory_bank_size
        self.device = device  # stored only; tensors follow the input's device

        both = hidden_size + input_size
        self.hidden_to_content = nn.Linear(both, hidden_size)
        self.write_gate = nn.Linear(both, 1)
        self.write_prob = nn.Linear(both, memory_bank_size)
        self.read_gate = nn.Linear(both, 1)
        self.read_prob = nn.Linear(both, memory_bank_size)
        self.Wxh = nn.Parameter(torch.empty(input_size, hidden_size))
        self.Wrh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.Whh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bh = nn.Parameter(torch.empty(hidden_size))
        self.init_weights()

    def init_weights(self) -> None:
        with torch.no_grad():
            for p in (self.Wxh, self.Wrh, self.Whh):
                p.normal_(0.0, 0.1)
            self.bh.zero_()

    def forward(self, hidden_frames: torch.Tensor, nImg=None) -> torch.Tensor:
        batched = hidden_frames.dim() == 3
        x_all = hidden_frames if batched else hidden_frames.unsqueeze(0)
        steps = x_all.shape[1] if nImg is None else int(nImg)
        n = x_all.shape[0]
        memory = x_all.new_zeros(n, self.memory_bank_size, self.hidden_size)
        h = x_all.new_zeros(n, self.hidden_size)
        hiddens = []
        # unbind once: indexing x_all[:, t] per step would cost a full-size zero gradient per step
        for x in x_all.unbind(1)[:steps]:
            xh = torch.cat((x, h), dim=1)
            # read: a gated, softly addressed slot mixture
            address = torch.softmax(self.read_prob(xh), dim=1)
            read = torch.sigmoid(self.read_gate(xh)) * torch.bmm(address.unsqueeze(1), memory).squeeze(1)
            h_next = F.relu(torch.matmul(x, self.Wxh) + torch.matmul(read, self.Wrh) + torch.matmul(h, self.Whh) + self.bh)
            # write: content into softly addressed slots, erasing them in proportion
            content = F.relu(self.hidden_to_content(xh))
            address = torch.softmax(self.write_prob(xh), dim=1).unsqueeze(2)  # (n, slots, 1)
            gate = torch.sigmoid(self.write_gate(xh)).unsqueeze(2)  # (n, 1, 1)
            memory = gate * address * content.unsqueeze(1) + (1.0 - address) * memory
            h = h_next
            hiddens.append(h)
        out = torch.stack(hiddens, dim=1) if hiddens else x_all.new_zeros(n, 0, self.hidden_size)
        return out if batched else out[0]


class MemoryRamTwoStreamModule(nn.Module):
    """Heterogeneous video memory (``memory_rand.MemoryRamTwoStreamModule``): three controllers
    (shared, appearance, motion) share one memory; at each frame a softmax chooses between keeping
    the memory, writing appearance content and writing motion content. Returns the shared
    controller's hidden states.

    ``forward(hidden_out_a, hidden_out_m, nImg)``: (T, input_size) each as the original, or
    batches (N, T, input_size); ``nImg`` steps (default T) -> (nImg, hidden) or (N, nImg, hidden).
    Causal, like :class:`MemoryRamModule`.
    """

    def __init__(self, input_size: int, hidden_size: int = 512, memory_bank_size: int = 100, device=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.memory_bank_size = memory_bank_size
        self.device = device  # stored only

        hid, both = hidden_size, hidden_size + input_size
        self.hidden_to_content_a = nn.Linear(both, hid)
        self.hidden_to_content_m = nn.Linear(both, hid)
        self.write_prob = nn.Linear(hid * 3, 3)
        self.write_prob_a = nn.Linear(both, memory_bank_size)
        self.write_prob_m = nn.Linear(both, memory_bank_size)
        self.read_prob = nn.Linear(hid * 3, memory_bank_size)
        self.read_to_hidden = nn.Linear(hid * 2, hid)
        self.read_to_hidden_a = nn.Linear(hid * 2 + input_size, hid)
        self.read_to_hidden_m = nn.Linear(hid * 2 + input_size, hid)

    def forward(self, hidden_out_a: torch.Tensor, hidden_out_m: torch.Tensor, nImg=None) -> torch.Tensor:
        batched = hidden_out_a.dim() == 3
        app = hidden_out_a if batched else hidden_out_a.unsqueeze(0)
        mot = hidden_out_m if batched else hidden_out_m.unsqueeze(0)
        steps = app.shape[1] if nImg is None else int(nImg)
        n = app.shape[0]
        memory = app.new_zeros(n, self.memory_bank_size, self.hidden_size)
        h = app.new_zeros(n, self.hidden_size)
        h_a, h_m = torch.zeros_like(h), torch.zeros_like(h)
        hiddens = []
        for x_a, x_m in zip(app.unbind(1)[:steps], mot.unbind(1)[:steps]):
            state = torch.cat((h_a, h_m, h), dim=1)
            read = torch.bmm(torch.softmax(self.read_prob(state), dim=1).unsqueeze(1), memory).squeeze(1)
            h_next = F.relu(self.read_to_hidden(torch.cat((read, h), dim=1)))
            h_a_next = F.relu(self.read_to_hidden_a(torch.cat((x_a, read, h_a), dim=1)))
            h_m_next = F.relu(self.read_to_hidden_m(torch.cat((x_m, read, h_m), dim=1)))

            choice = torch.softmax(self.write_prob(state), dim=1)  # keep / write app / write motion
            in_a, in_m = torch.cat((h_a, x_a), dim=1), torch.cat((h_m, x_m), dim=1)
            content_a = F.relu(self.hidden_to_content_a(in_a)).unsqueeze(1)
            content_m = F.relu(self.hidden_to_content_m(in_m)).unsqueeze(1)
            address_a = torch.softmax(self.write_prob_a(in_a), dim=1)
            address_m = torch.softmax(self.write_prob_m(in_m), dim=1)
            memory = (choice[:, 0, None, None] * memory
                      + (choice[:, 1, None] * address_a).unsqueeze(2) * content_a
                      + (choice[:, 2, None] * address_m).unsqueeze(2) * content_m)
            h, h_a, h_m = h_next, h_a_next, h_m_next
            hiddens.append(h)
        out = torch.stack(hiddens, dim=1) if hiddens else app.new_zeros(n, 0, self.hidden_size)
        return out if batched else out[0]


class MMModule(nn.Module):
    """Multimodal fusion and reasoning (``memory_rand.MMModule``): two stacked LSTM cells, fed
    first with the video's last state and then with their own state fused with a
    :class:`MultiModalAttentionModule` read of both memories; returns both cells' final states."""

    def __init__(self, dim: int, input_drop_p: float, device=None):
        super().__init__()
        self.hidden_size = dim
        self.lstm_mm_1 = nn.LSTMCell(dim, dim)
        self.lstm_mm_2 = nn.LSTMCell(dim, dim)
        self.hidden_encoder_1 = nn.Linear(dim * 2, dim)
        self.hidden_encoder_2 = nn.Linear(dim * 2, dim)
        self.dropout = nn.Dropout(input_drop_p)
        self.mm_att = MultiModalAttentionModule(dim)
        self.device = device  # stored only
        nn.init.xavier_normal_(self.hidden_encoder_1.weight)
        nn.init.xavier_normal_(self.hidden_encoder_2.weight)

    def forward(self, svt_tmp, memory_ram_vid, memory_ram_txt, loop=3, vid_mask=None, txt_mask=None):
        """svt_tmp (N, 2*dim); memories (N, T, dim) / (N, L, dim) (or unbatched (T, dim) / (L, dim)
        with N = 1); masks True at real rows -> (N, 2*dim)."""
        zeros = svt_tmp.new_zeros(svt_tmp.shape[0], self.hidden_size)
        state1, state2 = (zeros, zeros), (zeros, zeros)
        step_in = self.dropout(torch.tanh(self.hidden_encoder_1(svt_tmp)))
        for i in range(loop):
            state1 = self.lstm_mm_1(step_in, state1)
            state2 = self.lstm_mm_2(state1[0], state2)
            if i == loop - 1:
                break  # the original computes one more attention read here and never uses it
            read = self.mm_att(state2[0], memory_ram_vid, memory_ram_txt, frames_mask=vid_mask, text_mask=txt_mask)
            step_in = self.dropout(torch.tanh(self.hidden_encoder_2(torch.cat((state2[0], read), dim=1))))
        return torch.cat((state1[0], state2[0]), dim=1)


# --------------------------------------------------------------------------- HME


class HME(nn.Module):
    """HME (Fan et al., CVPR 2019) for multiple-choice video QA.

    ``HME(vid_encoder, qns_encoder, max_len_v, max_len_q, device, input_drop_p=0.2)`` as in
    doc-doc/NExT-QA: ``vid_encoder`` an :class:`EncoderVidCoMem`, ``qns_encoder`` a two-layer
    unidirectional LSTM :class:`EncoderQns` with the same hidden size; ``max_len_v`` /
    ``max_len_q`` are the numbers of video / question memory slots (not limits on T or L);
    ``device`` is only stored.
    """

    #: forward accepts ``vid_lengths`` and ignores padded frames exactly.
    supports_vid_lengths = True

    def __init__(self, vid_encoder, qns_encoder, max_len_v, max_len_q, device=None, input_drop_p=0.2):
        super().__init__()
        dim = qns_encoder.dim_hidden
        rnn = getattr(qns_encoder, "rnn", None)
        if not isinstance(rnn, nn.LSTM) or rnn.num_layers != 2 or rnn.bidirectional:
            # The question embedding is the LSTM's h_n of both layers (2*dim) and the question
            # memory reads dim-wide outputs: nothing else fits the layers below (nor did it in the original).
            raise ValueError("HME needs a 2-layer unidirectional LSTM question encoder")
        if getattr(vid_encoder, "dim_hidden", dim) != dim or getattr(vid_encoder, "bidirectional", False):
            raise ValueError("HME needs a unidirectional video encoder with the question encoder's hidden size")
        self.vid_encoder = vid_encoder
        self.qns_encoder = qns_encoder

        # hidden_dim=256 is hard-coded in the original; checkpoint shapes depend on it.
        self.temp_att_a = TempAttention(dim * 2, dim * 2, hidden_dim=256)
        self.temp_att_m = TempAttention(dim * 2, dim * 2, hidden_dim=256)
        self.mrm_vid = MemoryRamTwoStreamModule(dim, dim, max_len_v, device)
        self.mrm_txt = MemoryRamModule(dim, dim, max_len_q, device)
        self.mm_module_v1 = MMModule(dim, input_drop_p, device)

        self.linear_vid = nn.Linear(dim * 2, dim)  # used for BOTH streams, as in the original
        self.linear_qns = nn.Linear(dim * 2, dim)  # built but never used by the original: frozen
        self.linear_qns.requires_grad_(False)
        self.linear_mem = nn.Linear(dim * 2, dim)
        self.vq2word_hme = nn.Linear(dim * 3, 1)
        self.device = device

    def encode_text(self, qas, qas_lengths):
        """The frame-independent part of :meth:`forward`: every candidate through the question LSTM
        and the question memory, ``{"q_out", "qns_embed", "mem_txt"}`` each (B, C, ...). A training
        step computes it once and passes it to every view's forward as ``text``."""
        qas_lengths = torch.as_tensor(qas_lengths)
        batch_size, num_cands = qas_lengths.shape
        q_out, (q_h, _) = self.qns_encoder(qas.reshape(batch_size * num_cands, *qas.shape[2:]), qas_lengths.reshape(-1))
        qns_embed = q_h.transpose(0, 1).reshape(batch_size, num_cands, -1)  # [layer 1 | layer 2] h_n
        mem_txt = self.mrm_txt(q_out)  # (B*C, Lmax, dim)
        per_sample = lambda x: x.reshape(batch_size, num_cands, *x.shape[1:])
        return {"q_out": per_sample(q_out), "qns_embed": qns_embed, "mem_txt": per_sample(mem_txt)}

    def forward(self, vid_feats, qas, qas_lengths, vid_lengths=None, text=None):
        """Score every candidate answer.

        vid_feats (B, T, dim_app + dim_motion); qas (B, C, L, 768) BERT token features of
        "[CLS] q [SEP] a_k [SEP]" (or (B, C, L) token ids without BERT); qas_lengths (B, C);
        vid_lengths (B,) optional, frames >= length are padding; ``text`` optional, the
        :meth:`encode_text` of these qas (computed once for several views of one step).
        Returns (out (B, C) scores, predict_idx (B,)).
        """
        streams = self.vid_encoder(vid_feats, vid_lengths)
        out = self.vq_encoder(streams, qas, torch.as_tensor(qas_lengths), vid_lengths=vid_lengths, text=text)
        _, predict_idx = torch.max(out, 1)
        return out, predict_idx

    def vq_encoder(self, vid_feats, qns, qns_lengths, iter_num=3, vid_lengths=None, text=None):
        """Score candidates against encoded video.

        vid_feats: the four (B, T, dim) outputs of the video encoder. qns (B, C, L, ...) with
        qns_lengths (B, C) -> (B, C); or one candidate, qns (B, L, ...) with qns_lengths (B,) -> (B,)
        (the original's per-candidate call).
        """
        app_l1, app_l2, motion_l1, motion_l2 = vid_feats
        qns_lengths = torch.as_tensor(qns_lengths)
        one_candidate = qns_lengths.dim() == 1
        if one_candidate:
            qns, qns_lengths = qns.unsqueeze(1), qns_lengths.unsqueeze(1)
        batch_size, num_cands = qns_lengths.shape
        num_frames = app_l2.shape[1]
        device = app_l2.device
        app = torch.cat((app_l1, app_l2), dim=-1)
        motion = torch.cat((motion_l1, motion_l2), dim=-1)

        if vid_lengths is None:
            v_valid = None
            last = torch.full((batch_size,), num_frames - 1, device=device)
        else:
            v_lengths = torch.as_tensor(vid_lengths, device=device).reshape(-1)
            v_valid = _valid(v_lengths, num_frames, device)
            last = v_lengths - 1

        # Every candidate of every sample through the question LSTM at once (or reused from text).
        flat_lengths = qns_lengths.reshape(-1)
        if text is None:
            text = self.encode_text(qns, qns_lengths)
        q_out = text["q_out"].reshape(batch_size * num_cands, *text["q_out"].shape[2:])
        mem_txt = text["mem_txt"].reshape(batch_size * num_cands, *text["mem_txt"].shape[2:])
        qns_embed = text["qns_embed"]

        att_app, _ = self.temp_att_a(qns_embed, app, v_valid)  # (B, C, 2*dim)
        att_motion, _ = self.temp_att_m(qns_embed, motion, v_valid)

        # Memories: the video one once per video, the question one per candidate (over its words).
        rows = torch.arange(batch_size, device=device)
        start = torch.cat((app_l2[rows, last], motion_l2[rows, last]), dim=-1)  # last real frame
        mem_vid = self.mrm_vid(app_l2, motion_l2)  # (B, T, dim)
        q_valid = _valid(flat_lengths, q_out.shape[1], device)

        def per_candidate(x):
            return None if x is None else x.repeat_interleave(num_cands, dim=0)

        mem_output = self.mm_module_v1(
            per_candidate(start), per_candidate(mem_vid), mem_txt, iter_num,
            vid_mask=per_candidate(v_valid), txt_mask=q_valid,
        ).view(batch_size, num_cands, -1)

        fused = torch.cat(
            (torch.tanh(self.linear_vid(att_app)), torch.tanh(self.linear_vid(att_motion)),
             torch.tanh(self.linear_mem(mem_output))),
            dim=-1,
        )
        scores = self.vq2word_hme(fused).squeeze(-1)  # (B, C); the original's bare squeeze() lost B == 1
        return scores[:, 0] if one_candidate else scores


# --------------------------------------------------------------------------- adapter functions


def hme_subset_mode(model) -> str:
    """``"lengths"`` for a model whose forward honours ``vid_lengths`` (the reference :class:`HME`),
    ``"bucket"`` for the original doc-doc/NExT-QA class, which cannot ignore padded frames."""
    return "lengths" if getattr(model, "supports_vid_lengths", False) else "bucket"


def encode_text_hme(model, inputs: dict):
    """The question encodings of a step: the reference's own split (question LSTM and memory); for the
    original class, its question LSTM run once over the batch and served to every view
    (``sparc.adapters.hga.questions_served``: the two originals call it alike)."""
    if getattr(model, "supports_vid_lengths", False):
        return model.encode_text(inputs["qas"], inputs["qas_lengths"])
    if not isinstance(getattr(model, "qns_encoder", None), nn.Module) or inputs["vid_feats"].shape[0] == 1:
        return None
    return encode_questions_once(model, inputs["qas"], inputs["qas_lengths"])


def forward_hme(model, inputs: dict, text=None) -> ModelOutput:
    """Run the reference or the original HME on a batch dict (``vid_feats (B, T, D)``, ``qas (B, C,
    L, 768)``, ``qas_lengths (B, C)``, optional ``vid_lengths (B,)``).

    Guards for the original class: a batch of one is padded with a copy whose output is dropped
    (its ``.squeeze()`` removes the batch axis), ``qas_lengths`` go to the CPU (``pack_padded_sequence``
    refuses CUDA lengths and the original passes them through as given), and inputs are made
    contiguous. A single frame needs no guard: the original handles T == 1.

    ``hypothesis (B, C, 3 dim)``: what ``vq2word_hme`` scores per candidate (attended appearance,
    motion and the memory output), read from that layer's input for both classes.
    """
    vid, qas, qas_lengths = inputs["vid_feats"], inputs["qas"], torch.as_tensor(inputs["qas_lengths"])
    if getattr(model, "supports_vid_lengths", False):
        with scorer_inputs(getattr(model, "vq2word_hme", None)) as seen:
            out, _ = model(vid, qas, qas_lengths, vid_lengths=inputs.get("vid_lengths"), text=text)
        return ModelOutput(logits=out, hypothesis=per_candidate(seen, vid.shape[0]))
    vid_lengths = inputs.get("vid_lengths")
    if vid_lengths is not None and bool((torch.as_tensor(vid_lengths) < vid.shape[1]).any()):
        raise ValueError("the original HME cannot ignore padded frames; drive it through forward_subset (bucket mode)")
    vid, qas, qas_lengths = vid.contiguous(), qas.contiguous(), qas_lengths.cpu()
    single = vid.shape[0] == 1
    if single:
        vid, qas, qas_lengths = vid.repeat(2, 1, 1), qas.repeat(2, *[1] * (qas.dim() - 1)), qas_lengths.repeat(2, 1)
        text = select_rows(text, torch.zeros(2, dtype=torch.long))
    with questions_served(model, text) if text is not None else contextlib.nullcontext(), \
            scorer_inputs(getattr(model, "vq2word_hme", None)) as seen:
        out, _ = model(vid, qas, qas_lengths)
    hypothesis = per_candidate(seen, vid.shape[0])
    if single:
        out, hypothesis = out[:1], None if hypothesis is None else hypothesis[:1]
    return ModelOutput(logits=out, hypothesis=hypothesis)


# --------------------------------------------------------------------------- fixture builder


def fixture_model(config: dict):
    """Build the reference :class:`HME` from a fixture's ``config.json`` (the recorded constructor
    calls); returns ``(model, run)`` with ``run(model, inputs) -> {"out": ..., "predict_idx": ...}``."""
    from sparc.recorded_calls import Name, check_callee, parse_call

    ctor = config["constructor"]
    callee, args, kwargs = parse_call(ctor["vid_encoder"])
    check_callee(callee, "EncoderVidCoMem")
    vid_encoder = EncoderVidCoMem(*args, **kwargs)
    callee, args, kwargs = parse_call(ctor["qns_encoder"])
    check_callee(callee, "EncoderQns")
    qns_encoder = EncoderQns(*args, **kwargs)
    callee, args, kwargs = parse_call(ctor["model"])
    check_callee(callee, "HME")
    named = {"vid_encoder": vid_encoder, "qns_encoder": qns_encoder}

    def resolve(value):
        if isinstance(value, Name):
            if value in named:
                return named[value]
            return torch.device(value) if value in ("cpu", "cuda") else None
        return value

    model = HME(*[resolve(a) for a in args], **{k: resolve(v) for k, v in kwargs.items()})

    def run(model, inputs):
        out, predict_idx = model(inputs["vid_feats"], inputs["qas"], inputs["qas_lengths"])
        return {"out": out, "predict_idx": predict_idx}

    return model, run
