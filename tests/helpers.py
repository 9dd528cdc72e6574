"""Small helpers the reference-model tests share (pytest puts tests/ on sys.path).

Equivalence tests (a masked frame is a removed frame, a row of a batch is that example alone, ...) run
in float64 with :func:`close64`: in float64 they test the arithmetic, while in float32 they would test
which kernels the CPU picks (another CPU's sums round differently, by 1e-4 on STAGE's span logits)."""

import copy

import torch

from sparc.contract import cast_floating

TOL = 1e-5
#: Relative tolerance of float64 equivalences: equal-in-exact-arithmetic float64 computations through
#: these small models agree to ~1e-15 relative on any CPU (eps64 = 2.2e-16); a real defect (a padded
#: frame leaking, a row seeing another row) moves outputs by 1e-3 or more, 10^7 times this.
REL64 = 1e-10


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    """Max abs difference within ``tol``."""
    return (a - b).abs().max().item() <= tol


def close64(a: torch.Tensor, b: torch.Tensor, rel: float = REL64) -> bool:
    """Two float64 tensors equal up to float64 rounding: max abs difference within ``rel`` times
    their largest magnitude."""
    assert a.dtype == b.dtype == torch.float64, (a.dtype, b.dtype)
    scale = max(a.abs().max().item(), b.abs().max().item())
    return (a - b).abs().max().item() <= rel * scale


#: The teachers' scoring (ALBEF's batched path, sparc.teachers.albef_batched; BlipTeacher) takes the
#: vocabulary log-softmax in float32 whatever the model's dtype, so their equivalences run a float64
#: model and differ only by that last step's float32 rounding: a few eps32 per scored token at the
#: log-likelihoods' scale, on any CPU (measured <= 1.1 with AVX-512, AVX2 and default kernels). 16 eps32
#: (4e-5 for log-likelihoods of ~22) is far below what attending to a wrong tree node, padding or
#: question token does (O(0.1)).
LL_K = 16


def close_ll(a: torch.Tensor, b: torch.Tensor, k: float = LL_K) -> bool:
    """ALBEF log-likelihoods (or probabilities) equal up to ``k`` float32 epsilons at ``b``'s scale
    (at least 1)."""
    from sparc.testing import EPS32

    scale = max(1.0, float(b.abs().max()))
    return float((a.double() - b.double()).abs().max()) <= k * EPS32 * scale


def as64(x):
    """``x`` (a tensor, or a dict / list / tuple of them) with its floating tensors in float64."""
    return cast_floating(x, torch.float64)


def model64(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model`` (a copy: module-scoped fixtures share theirs between tests)."""
    return copy.deepcopy(model).double()


def free_port() -> int:
    """A TCP port free right now, for torchrun's --master_port: a fixed port fails (EADDRINUSE) while
    another test run on the same machine holds it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_checked(command, **kwargs):
    """``subprocess.run(command, capture_output=True, text=True, **kwargs)`` that fails with the command's
    stderr tail: a subprocess test that fails on another machine says why."""
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    # A launcher's own traceback fills the stderr's end; the child's message that caused it comes first.
    err = done.stderr if len(done.stderr) <= 16000 else done.stderr[:8000] + "\n[...]\n" + done.stderr[-8000:]
    assert done.returncode == 0, f"{' '.join(map(str, command))} exited {done.returncode}:\n{err}"
    return done


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
    ``model(vid_feats, qas, qas_lengths, vid_lengths=...) -> (out, predict_idx)``). Runs a float64
    copy of ``model``: a leaking frame of garbage (50x the features' scale) would move ``out`` by far
    more than :data:`REL64`."""
    model, qas = model64(model), as64(qas)
    gen = torch.Generator().manual_seed(0)
    vid = torch.randn(2, T, feat_dim, generator=gen, dtype=torch.float64)
    for vid_lengths in ([3, 6], [1, 4], [6, 6]):
        padded = vid.clone()
        for b, n in enumerate(vid_lengths):
            padded[b, n:] = 50 * torch.randn(T - n, feat_dim, generator=gen, dtype=torch.float64)  # garbage
        out, idx = run_eval(model, padded, qas, lens, vid_lengths=torch.tensor(vid_lengths))
        for b, n in enumerate(vid_lengths):
            alone, alone_idx = run_eval(model, vid[b : b + 1, :n], qas[b : b + 1], lens[b : b + 1])
            assert close64(out[b], alone[0]), (vid_lengths, b)
            assert idx[b].item() == alone_idx.item()


def assert_batch_rows_equal_batches_of_one(model, vid, qas, lens):
    """Each row of a batch equals that example run alone (shapes ``(1, C)`` and ``(1,)``), HGA / HME
    convention ``model(vid_feats, qas, qas_lengths) -> (out, predict_idx)``; in float64 (a copy of
    ``model``), to :data:`REL64`."""
    model, vid, qas = model64(model), as64(vid), as64(qas)
    out, idx = run_eval(model, vid, qas, lens)
    for b in range(vid.shape[0]):
        out1, idx1 = run_eval(model, vid[b : b + 1], qas[b : b + 1], lens[b : b + 1])
        assert out1.shape == (1, qas.shape[1]) and idx1.shape == (1,)
        assert close64(out1[0], out[b]) and idx1.item() == idx[b].item()
