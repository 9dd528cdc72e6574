"""Small helpers the reference-model tests share (pytest puts tests/ on sys.path)."""

import torch

TOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    """Max abs difference within ``tol``."""
    return (a - b).abs().max().item() <= tol


def run_eval(model, *args, **kwargs):
    """``model(*args, **kwargs)`` in eval mode without gradients."""
    model.eval()
    with torch.no_grad():
        return model(*args, **kwargs)


def probs_with_answer(p, answer: int, C: int = 3):
    """Priors ``[T, C]`` whose answer column is ``p`` per frame and whose other candidates share the rest."""
    import numpy as np

    out = np.empty((len(p), C))
    out[:] = ((1 - np.asarray(p)) / (C - 1))[:, None]
    out[:, answer] = p
    return out


def assert_padded_frames_ignored(model, qas, lens, feat_dim: int, T: int = 6):
    """With ``vid_lengths``, garbage in the padded frames changes nothing: every video of a batch gives
    the output (and the prediction) it gives alone, cut to its length (HGA / HME call convention
    ``model(vid_feats, qas, qas_lengths, vid_lengths=...) -> (out, predict_idx)``)."""
    gen = torch.Generator().manual_seed(0)
    vid = torch.randn(2, T, feat_dim, generator=gen)
    for vid_lengths in ([3, 6], [1, 4], [6, 6]):
        padded = vid.clone()
        for b, n in enumerate(vid_lengths):
            padded[b, n:] = 50 * torch.randn(T - n, feat_dim, generator=gen)  # garbage
        out, idx = run_eval(model, padded, qas, lens, vid_lengths=torch.tensor(vid_lengths))
        for b, n in enumerate(vid_lengths):
            alone, alone_idx = run_eval(model, vid[b : b + 1, :n], qas[b : b + 1], lens[b : b + 1])
            assert close(out[b], alone[0]), (vid_lengths, b)
            assert idx[b].item() == alone_idx.item()


def assert_batch_rows_equal_batches_of_one(model, vid, qas, lens):
    """Each row of a batch equals that example run alone (shapes ``(1, C)`` and ``(1,)``), HGA / HME
    convention ``model(vid_feats, qas, qas_lengths) -> (out, predict_idx)``."""
    out, idx = run_eval(model, vid, qas, lens)
    for b in range(vid.shape[0]):
        out1, idx1 = run_eval(model, vid[b : b + 1], qas[b : b + 1], lens[b : b + 1])
        assert out1.shape == (1, qas.shape[1]) and idx1.shape == (1,)
        assert close(out1[0], out[b]) and idx1.item() == idx[b].item()
