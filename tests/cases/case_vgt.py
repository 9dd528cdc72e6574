"""Contract cases for VGTAdapter: the reference VGT (mask mode, also bucket), the same model
open-ended (logits over an answer vocabulary), and a stand-in for sail-sg/VGT's original class
(bucket mode: it cannot hide clips)."""

import torch

from sparc.adapters.vgt import VGT, VGTAdapter
from sparc.contract import AdapterCase

FEAT, NUMF, REGIONS, D = 8, 2, 5, 16          # REGIONS = bnum: the graph transformer is bnum**2 wide
VOCAB, CLS, SEP = 40, 1, 2                    # tiny BERT vocabulary; [PAD] = 0
TINY_BERT = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 16, "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
             "attention_probs_dropout_prob": 0.0}


class OriginalLikeVGT(VGT):
    """Stands in for the original class: no usable video_mask (bucket mode must never hand it a
    partial one), crashes without video_mask or seq_len, needs contiguous video tensors, and fails
    when its text encoder sees a single sequence (it indexes ``pooler_output[-2]``). Its outputs
    otherwise equal the reference's (they agree whenever every clip is valid)."""

    honours_video_mask = False

    def forward(self, video, question=None, labels=None, answer=None, seq_len=None, video_mask=None,
                text_mask=None, max_seq_len=0, mode="vqa"):
        assert video_mask is not None, "the original evaluates `video_mask == 0`"
        assert seq_len is not None, "the original calls seq_len.view(-1)"
        assert bool((video_mask != 0).all()), "the original cannot hide clips"
        video[0].view(-1), video[1].view(-1)  # the original .view()s both
        texts = answer.shape[0] * answer.shape[1] if answer is not None else question.shape[0]
        assert texts > 1, "the original indexes BERT's pooler_output[-2]"
        return super().forward(video, question, labels, answer, seq_len, video_mask, text_mask, max_seq_len, mode)


def tiny_vgt(cls=VGT, seed=0, Q=0, dataset="nextqa"):
    torch.manual_seed(seed)
    return cls(bert_tokenizer=None, feature_dim=FEAT, N=1, h=2, d_model=D, d_ff=16, dropout=0.0, Q=Q, T=8,
               vocab_size=VOCAB, bnum=REGIONS, dataset=dataset, bert_config=TINY_BERT)


def _tokens(g, n, low=3):
    return torch.randint(low, VOCAB, (n,), generator=g).tolist()


def _video(g, batch_size, num_frames):
    video_o = torch.randn(batch_size, num_frames, NUMF, REGIONS, FEAT + 5, generator=g)
    video_o[..., FEAT:] = torch.rand(batch_size, num_frames, NUMF, REGIONS, 5, generator=g)  # relative boxes
    return video_o, torch.randn(batch_size, num_frames, NUMF, FEAT, generator=g)


def vgt_batch(batch_size, num_frames, seed, padded=False):
    """Multiple choice, as the original loader + collate make it: "[CLS] q [SEP] a_k [SEP]" padded to
    the batch's longest, ``seq_len`` = each sample's own padded width. ``padded``: the last row's
    video is one clip shorter (``video_len``)."""
    g = torch.Generator().manual_seed(100 + seed)
    rows, widths = [], []
    for _ in range(batch_size):
        q = _tokens(g, int(torch.randint(1, 4, (1,), generator=g)))
        cands = [[CLS] + q + [SEP] + _tokens(g, int(torch.randint(1, 4, (1,), generator=g))) + [SEP] for _ in range(5)]
        rows.append(cands)
        widths.append(max(len(c) for c in cands))
    L = max(widths)
    answer = torch.zeros(batch_size, 5, L, dtype=torch.long)
    for b, cands in enumerate(rows):
        for k, c in enumerate(cands):
            answer[b, k, : len(c)] = torch.tensor(c)
    video_o, video_f = _video(g, batch_size, num_frames)
    video_len = torch.full((batch_size,), num_frames, dtype=torch.long)
    if padded and num_frames > 2:
        video_len[-1] = num_frames - 1
    qids = [f"vgt-{seed}-{b}" for b in range(batch_size)]
    return {
        "video_o": video_o, "video_f": video_f, "video_len": video_len,
        "question": torch.zeros(batch_size, 1, dtype=torch.long),
        "answer": answer, "seq_len": torch.tensor(widths).unsqueeze(1).expand(-1, 5).contiguous(),
        "answer_id": torch.randint(0, 5, (batch_size,), generator=g),
        "question_id": qids, "qid": list(qids),
    }


# open-ended: a 6-answer vocabulary, "[CLS] a [SEP]" each
A2V = torch.tensor([[CLS, 5, SEP, 0], [CLS, 6, 7, SEP], [CLS, 8, SEP, 0], [CLS, 9, SEP, 0],
                    [CLS, 10, 11, SEP], [CLS, 12, SEP, 0]])
QMAX = 6


def vgt_open_batch(batch_size, num_frames, seed):
    g = torch.Generator().manual_seed(200 + seed)
    qs = [[CLS] + _tokens(g, int(torch.randint(1, QMAX - 1, (1,), generator=g))) + [SEP] for _ in range(batch_size)]
    question = torch.zeros(batch_size, max(len(q) for q in qs), dtype=torch.long)
    for b, q in enumerate(qs):
        question[b, : len(q)] = torch.tensor(q)
    video_o, video_f = _video(g, batch_size, num_frames)
    qids = [f"vgt-oe-{seed}-{b}" for b in range(batch_size)]
    return {"video_o": video_o, "video_f": video_f, "question": question,
            "answer_id": torch.randint(0, len(A2V), (batch_size,), generator=g), "question_id": qids, "qid": list(qids)}


CASES = [
    AdapterCase("vgt-reference", lambda seed: tiny_vgt(VGT, seed), VGTAdapter(),
                lambda b, t, s: vgt_batch(b, t, s, padded=True), 5, modes=("bucket",)),
    AdapterCase("vgt-reference-open-ended", lambda seed: tiny_vgt(VGT, seed, Q=QMAX),
                VGTAdapter(open_ended=True, a2v=A2V), vgt_open_batch, len(A2V), modes=("bucket",)),
    AdapterCase("vgt-original-like", lambda seed: tiny_vgt(OriginalLikeVGT, seed), VGTAdapter(), vgt_batch, 5),
]
