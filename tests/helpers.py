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
