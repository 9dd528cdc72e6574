"""Contract cases for STAGEAdapter: the reference STAGE (mask mode, also bucket) and a stand-in for
jayleicn/TVQAplus's original class (bucket mode with the adapter's guards)."""

import torch

from sparc.adapters.stage import STAGE, STAGEAdapter, stage_opt
from sparc.contract import AdapterCase


class OriginalLikeSTAGE(STAGE):
    """Stands in for the original class: exactly 5 hypotheses, contiguous inputs (it ``.view``\\ s them),
    a frame mask that is a prefix (it widens spans by positions, so it cannot honour a mask with
    holes), box labels required for its attention loss in training, no frame-mask support declared.
    Where it runs, its outputs equal the reference's."""

    supports_frame_mask = False
    supports_any_num_candidates = False

    def forward_main(self, batch):
        assert batch.qas_bert.shape[1] == self.num_a, "the original hard-codes 5 hypotheses"
        for name in ("qas_bert", "qas_mask", "sub_bert", "sub_mask", "vid", "vid_mask"):
            if name in batch:
                batch[name].view(-1)  # raises for non-contiguous input, as the original's .view does
        frames = batch.ts_label_mask
        assert bool((frames[:, 1:] <= frames[:, :-1]).all()), "the original counts span widths in positions"
        assert len(batch.qid) == frames.shape[0], "the original reads the batch size from qid"
        if self.use_sup_att and self.training and self.vfeat_flag:
            assert batch.att_labels is not None, "the original's attention loss needs box labels"
        return super().forward_main(batch)


def tiny_stage(cls=STAGE, seed=0, hidden=8, words=12, regions_dim=10, **opt):
    torch.manual_seed(seed)
    return cls(stage_opt(hsz=hidden, embedding_size=words, vfeat_size=regions_dim, dropout=0.0, **opt))


def stage_batch(batch_size, num_frames, seed, candidates=5, regions=4, sub_words=5, qa_words=6, words=12, regions_dim=10):
    """A random plain batch: padded videos (row 0 full length), padded regions, subtitle words and
    hypothesis words (features zero where masked), a ground-truth span inside each video."""
    g = torch.Generator().manual_seed(300 + seed)
    B, T = batch_size, num_frames
    lengths = torch.randint(max(1, (T + 1) // 2), T + 1, (B,), generator=g)
    lengths[0] = T
    frame = torch.arange(T)[None] < lengths[:, None]
    region = (torch.arange(regions)[None, None] < torch.randint(1, regions + 1, (B, T, 1), generator=g)) & frame[..., None]
    sub = (torch.arange(sub_words)[None, None] < torch.randint(1, sub_words + 1, (B, T, 1), generator=g)) & frame[..., None]
    qa = torch.arange(qa_words)[None, None] < torch.randint(2, qa_words + 1, (B, candidates, 1), generator=g)
    st = (torch.rand(B, generator=g) * lengths).long()
    ed = torch.minimum(st + torch.randint(0, 3, (B,), generator=g), lengths - 1)
    return {
        "qid": [f"stage-{seed}-{b}" for b in range(B)],
        "vid": torch.randn(B, T, regions, regions_dim, generator=g) * region[..., None],
        "vid_mask": region,
        "sub_bert": torch.randn(B, T, sub_words, words, generator=g) * sub[..., None],
        "sub_mask": sub,
        "ts_label_mask": frame,
        "qas_bert": torch.randn(B, candidates, qa_words, words, generator=g) * qa[..., None],
        "qas_mask": qa.float(),  # float: a pairwise mixup averages it (bool frame masks are left alone)
        "ts_label_st": st,
        "ts_label_ed": ed,
        "answer": torch.randint(0, candidates, (B,), generator=g),
    }


CASES = [
    AdapterCase("stage-reference", lambda seed: tiny_stage(STAGE, seed), STAGEAdapter(), stage_batch, 5, modes=("bucket",)),
    AdapterCase("stage-original-like", lambda seed: tiny_stage(OriginalLikeSTAGE, seed), STAGEAdapter(), stage_batch, 5),
]
