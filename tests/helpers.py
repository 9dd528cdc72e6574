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
