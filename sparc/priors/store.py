"""Sharded, atomic, memory-mapped storage of teacher priors.

An image-QA teacher scores every frame of a video against each question; for
question id ``qid`` it produces ``probs`` of shape ``[frames, candidates]``
(rows sum to 1).  Training looks these up by qid per batch, and datasets can
hold millions of questions, so the store is a directory of shards that are
memory-mapped, never loaded whole.

On-disk layout (format version 1)::

    store.json                  manifest: num_frames, num_candidates, dtype,
                                pad_frames, format_version, metadata
    shard-00000.npy             probs  [n, num_frames, num_candidates]
    shard-00000.lengths.npy     int64 [n] valid frames per row (pad_frames only)
    shard-00000.qids.json       list of n qids, in row order
    shard-00001.npy ...

Every file is written under a ``.tmp-`` name and then ``os.replace``d into
place.  A shard's qids file is renamed *last*, so a shard is complete exactly
when its ``shard-NNNNN.qids.json`` exists; readers ignore everything else
(temp files, a ``.npy`` whose qids file never arrived).  A killed writer thus
leaves only complete shards plus debris, and ``PriorStore.create(...,
resume=True)`` removes the debris and continues with the next shard number.

Files are deterministic: the same adds in the same order with the same
``shard_size`` produce byte-identical stores (no timestamps; JSON with
``sort_keys``), so a resumed run that restarts at a shard boundary matches an
uninterrupted one.

qids are strings.  Python/numpy ints are accepted everywhere a qid is taken
(``add``, ``lookup``, ``in``, ``get``, ``lengths``) and converted with
``str(int(qid))``, so ``7`` and ``"7"`` name the same question.  Any other
type is a ``TypeError``.

Only one writer per store directory at a time; nothing locks against a second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from sparc.resumable import atomic_path

__all__ = ["PriorStore", "PriorStoreWriter", "move_shards", "update_metadata"]

FORMAT_VERSION = 1
MANIFEST_NAME = "store.json"
TMP_PREFIX = ".tmp-"
ROW_SUM_ATOL = 1e-3
_DTYPES = ("float32", "float16")
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.qids\.json$")
# Files a writer may leave behind for shard N before its qids file lands.
_SHARD_DEBRIS_RE = re.compile(r"^shard-(\d{5,})\.(npy|lengths\.npy)$")


# --------------------------------------------------------------------------
# small helpers


def _norm_qid(qid: Any) -> str:
    """qid -> str.  ints (incl. numpy ints, not bools) become ``str(int(qid))``."""
    if isinstance(qid, str):
        return qid
    if isinstance(qid, (int, np.integer)) and not isinstance(qid, (bool, np.bool_)):
        return str(int(qid))
    raise TypeError(f"qid {qid!r}: qids must be str or int, got {type(qid).__name__} (field: qid)")


def _norm_qids(qids: Iterable[Any]) -> List[str]:
    # A bare string would otherwise be iterated character by character.
    if isinstance(qids, (str, bytes)):
        raise TypeError(f"expected a sequence of qids, got a single {type(qids).__name__} {qids!r}")
    return [_norm_qid(q) for q in qids]


def _to_numpy(x: Any) -> np.ndarray:
    """Array-like or torch tensor -> numpy, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor (bf16 has no numpy dtype)
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
        return x.numpy()
    return np.asarray(x)


def _shard_base(num: int) -> str:
    return f"shard-{num:05d}"


def _fsync_dir(path: str) -> None:
    # Makes the renames themselves durable; not possible on every platform.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(directory: str, name: str, write: Callable[[Any], None]) -> None:
    """``write(file)`` into ``directory/name``, durably, under the ``.tmp-`` name the readers ignore."""
    with atomic_path(os.path.join(directory, name), os.path.join(directory, TMP_PREFIX + name)) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def _atomic_write_bytes(directory: str, name: str, data: bytes) -> None:
    _atomic_write(directory, name, lambda f: f.write(data))


def _atomic_save_npy(directory: str, name: str, arr: np.ndarray) -> None:
    # A file handle: np.save(path) would append ".npy".
    _atomic_write(directory, name, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))


def _json_bytes(obj: Any) -> bytes:
    # sort_keys + fixed separators: byte-identical output for identical input.
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _normalize_metadata(metadata: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serializable: {e}") from None


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _norm_dtype(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    return name


def _read_manifest(path: str) -> Dict[str, Any]:
    mpath = os.path.join(path, MANIFEST_NAME)
    try:
        with open(mpath, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no prior store at {path!r} (missing {MANIFEST_NAME})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"prior store at {path!r} has format_version {version!r}; this code reads {FORMAT_VERSION}"
        )
    return manifest


def _complete_shards(path: str) -> List[int]:
    """Shard numbers whose qids file exists (= complete shards), ascending."""
    nums = []
    for name in os.listdir(path):
        m = _SHARD_RE.match(name)
        if m:
            nums.append(int(m.group(1)))
    return sorted(nums)


# --------------------------------------------------------------------------
# reader


class PriorStore:
    """Read-only, memory-mapped view of a prior store directory.

    Build one with :meth:`open` (or write one with :meth:`create` /
    :meth:`from_arrays`).  Shards are opened with ``np.load(mmap_mode="r")``;
    only the qid index (a ``dict[str, int]``) lives in memory.  Each shard
    holds one open file descriptor while the store is alive, so pick a
    ``shard_size`` that keeps the shard count moderate.

    Pickling (e.g. to DataLoader workers with spawn) re-opens the store from
    its path instead of copying the memory-mapped data.
    """

    def __init__(self, path: str, manifest: Dict[str, Any], shard_nums: List[int],
                 arrays: List[np.ndarray], lengths: Optional[List[np.ndarray]],
                 index: Dict[str, int]):
        # Use PriorStore.open(); this constructor trusts its arguments.
        self._path = path
        self._manifest = manifest
        self._shard_nums = shard_nums
        self._arrays = arrays
        self._lengths = lengths
        self._index = index
        sizes = [a.shape[0] for a in arrays]
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)

    # ---- construction -------------------------------------------------

    @classmethod
    def open(cls, path: "str | os.PathLike[str]") -> "PriorStore":
        """Open the store at ``path`` read-only; sees only complete shards.

        Raises ``FileNotFoundError`` if there is no manifest and ``ValueError``
        if a shard is inconsistent with the manifest or a qid occurs twice.
        """
        path = os.fspath(path)
        manifest = _read_manifest(path)
        T, C = int(manifest["num_frames"]), int(manifest["num_candidates"])
        dtype = np.dtype(manifest["dtype"])
        pad = bool(manifest.get("pad_frames", False))

        shard_nums = _complete_shards(path)
        arrays: List[np.ndarray] = []
        lengths: Optional[List[np.ndarray]] = [] if pad else None
        index: Dict[str, int] = {}
        offset = 0
        for num in shard_nums:
            base = os.path.join(path, _shard_base(num))
            with open(base + ".qids.json", "rb") as f:
                qids = json.loads(f.read().decode("utf-8"))
            arr = np.load(base + ".npy", mmap_mode="r", allow_pickle=False)
            where = f"prior store {path!r}, {_shard_base(num)}"
            if arr.dtype != dtype or arr.shape != (len(qids), T, C):
                raise ValueError(
                    f"{where}: array is {arr.dtype}{list(arr.shape)}, expected "
                    f"{dtype}{[len(qids), T, C]} from {MANIFEST_NAME} and the qids file"
                )
            if lengths is not None:
                lens = np.load(base + ".lengths.npy", allow_pickle=False)
                if lens.shape != (len(qids),) or (len(qids) and (lens.min() < 1 or lens.max() > T)):
                    raise ValueError(f"{where}: lengths file is inconsistent (shape {lens.shape})")
                lengths.append(lens.astype(np.int64, copy=False))
            for i, q in enumerate(qids):
                if not isinstance(q, str):
                    raise ValueError(f"{where}: qid {q!r} is not a string")
                prev = index.setdefault(q, offset + i)
                if prev != offset + i:
                    first = shard_nums[int(np.searchsorted(
                        np.cumsum([a.shape[0] for a in arrays]), prev, side="right"))]
                    raise ValueError(
                        f"qid {q!r} appears twice in prior store {path!r}: in "
                        f"{_shard_base(first)} and {_shard_base(num)}"
                    )
            arrays.append(arr)
            offset += len(qids)
        return cls(path, manifest, shard_nums, arrays, lengths, index)

    @staticmethod
    def create(path: "str | os.PathLike[str]", *, num_candidates: int, num_frames: int,
               shard_size: int = 65536, resume: bool = False, dtype: str = "float32",
               metadata: Optional[Mapping[str, Any]] = None,
               pad_frames: bool = False) -> "PriorStoreWriter":
        """Start writing a store at ``path``; returns a :class:`PriorStoreWriter`.

        See :class:`PriorStoreWriter` for the arguments.
        """
        return PriorStoreWriter(path, num_candidates=num_candidates, num_frames=num_frames,
                                shard_size=shard_size, resume=resume, dtype=dtype,
                                metadata=metadata, pad_frames=pad_frames)

    @classmethod
    def from_arrays(cls, path: "str | os.PathLike[str]", qids: Sequence[Any], probs: Any,
                    **create_kwargs: Any) -> "PriorStore":
        """Write ``qids``/``probs`` ([N, T, C] array, or a list of [t_i, C]
        with ``pad_frames=True``) to a new store and return it opened.

        For priors computed outside ``sparc extract-priors``: ``probs`` (numpy
        or torch) are probabilities over each question's candidates, every
        frame's row summing to 1, validated as :meth:`PriorStoreWriter.add`
        does (a ``ValueError`` naming the qid).  ``num_frames``/``num_candidates``
        default to the array's shape; other keywords go to :meth:`create`.
        Nothing is left at ``path`` when validation fails (unless it existed).
        """
        if not isinstance(probs, (list, tuple)):
            probs = _to_numpy(probs)
            if probs.ndim == 3:
                create_kwargs.setdefault("num_frames", probs.shape[1])
                create_kwargs.setdefault("num_candidates", probs.shape[2])
        existed = os.path.exists(path)
        try:
            with cls.create(path, **create_kwargs) as w:
                w.add_many(qids, probs)
        except BaseException:
            if not existed:  # a one-shot write: don't leave a manifest-only store that blocks the retry
                shutil.rmtree(path, ignore_errors=True)
            raise
        return cls.open(path)

    def __reduce__(self):
        return (PriorStore.open, (self._path,))

    # ---- properties ---------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def num_frames(self) -> int:
        return int(self._manifest["num_frames"])

    @property
    def num_candidates(self) -> int:
        return int(self._manifest["num_candidates"])

    @property
    def dtype(self) -> str:
        """Storage dtype name ("float32" or "float16"); lookups are float32."""
        return str(self._manifest["dtype"])

    @property
    def pad_frames(self) -> bool:
        return bool(self._manifest.get("pad_frames", False))

    @property
    def metadata(self) -> Dict[str, Any]:
        """Copy of the metadata dict given at create (``{}`` if none)."""
        return json.loads(json.dumps(self._manifest.get("metadata") or {}))

    @property
    def qids(self):
        """All qids in storage order (a read-only keys view: iterable, ``len``, ``in``)."""
        return self._index.keys()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, qid: Any) -> bool:
        try:
            return _norm_qid(qid) in self._index
        except TypeError:
            return False

    def __repr__(self) -> str:
        return (f"PriorStore({self._path!r}, n={len(self)}, num_frames={self.num_frames}, "
                f"num_candidates={self.num_candidates}, dtype={self.dtype!r}, "
                f"shards={len(self._arrays)})")

    # ---- reading ------------------------------------------------------

    def _rows(self, qids: List[str]) -> np.ndarray:
        """Global row numbers for qids; KeyError names the first missing one."""
        index = self._index
        try:
            return np.fromiter((index[q] for q in qids), dtype=np.int64, count=len(qids))
        except KeyError:
            missing = [q for q in qids if q not in index]
            more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise KeyError(f"qid {missing[0]!r} not in prior store {self._path!r}{more}") from None

    def _locate(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        return shard, rows - self._starts[shard]

    def get(self, qid: Any) -> np.ndarray:
        """Probs for one qid as an owned float32 ``np.ndarray [num_frames, num_candidates]``
        (padded frames, if any, are zero)."""
        q = _norm_qid(qid)
        shard, local = self._locate(self._rows([q]))
        return np.array(self._arrays[int(shard[0])][int(local[0])], dtype=np.float32)

    def lengths(self, qids: Iterable[Any]):
        """Valid frame counts as ``torch.LongTensor [B]`` (all ``num_frames`` unless pad_frames)."""
        import torch

        return torch.from_numpy(self._lengths_np(_norm_qids(qids)))

    def _lengths_np(self, qids: List[str]) -> np.ndarray:
        rows = self._rows(qids)
        if self._lengths is None:
            return np.full(len(qids), self.num_frames, dtype=np.int64)
        out = np.empty(len(qids), dtype=np.int64)
        shard, local = self._locate(rows)
        for s in np.unique(shard):
            m = shard == s
            out[m] = self._lengths[int(s)][local[m]]
        return out

    def lookup(self, qids: Iterable[Any], num_frames: Optional[int] = None,
               num_candidates: Optional[int] = None, return_lengths: bool = False):
        """Gather probs for ``qids`` (any order, repeats allowed).

        Returns ``torch.float32 [B, num_frames, num_candidates]`` (and, with
        ``return_lengths=True``, a ``LongTensor [B]`` of valid frame counts).
        ``num_frames``/``num_candidates`` are optional expectations checked
        against the store; a mismatch is a ``ValueError`` naming the first qid
        and the field.  A missing qid is a ``KeyError`` naming it and the path.
        """
        import torch

        qids = _norm_qids(qids)
        T, C = self.num_frames, self.num_candidates
        for field, expected, actual in (("num_frames", num_frames, T), ("num_candidates", num_candidates, C)):
            if expected is not None and int(expected) != actual:
                who = f"qid {qids[0]!r}" if qids else "lookup"
                raise ValueError(f"{who}: prior store {self._path!r} has {field}={actual}, "
                                 f"caller expects {int(expected)} (field: {field})")
        rows = self._rows(qids)
        out = np.empty((len(qids), T, C), dtype=np.dtype(self.dtype))
        if len(qids):
            shard, local = self._locate(rows)
            positions = np.arange(len(qids))
            for s in np.unique(shard):
                m = shard == s
                loc, pos = local[m], positions[m]
                order = np.argsort(loc, kind="stable")  # ascending reads are kinder to the page cache
                out[pos[order]] = self._arrays[int(s)][loc[order]]
        probs = torch.from_numpy(out).float()
        if return_lengths:
            return probs, torch.from_numpy(self._lengths_np(qids))
        return probs


# --------------------------------------------------------------------------
# writer


class PriorStoreWriter:
    """Appends priors to a store directory, one atomic shard per ``shard_size`` rows.

    Args:
        path: store directory (created if missing).
        num_candidates, num_frames: shape of each qid's probs.  With
            ``pad_frames=True`` ``num_frames`` is the maximum; shorter inputs
            are zero-padded and their lengths recorded.
        shard_size: rows per shard.  Buffered rows (up to this many, in the
            storage dtype) are held in memory until their shard is written.
        resume: continue an existing (possibly interrupted) store: its
            manifest must agree, complete shards are kept (their qids are in
            :attr:`existing`), leftover temp files and shard files without a
            qids file are deleted, and new shards are numbered after the last
            complete one.  Without ``resume`` a non-empty directory is a
            ``FileExistsError``.
        dtype: "float32" (default, exact) or "float16" (half the disk; values
            are validated before the cast).
        metadata: JSON-serializable dict stored in the manifest.  On resume,
            ``None`` keeps the stored metadata; anything else must match it.
        pad_frames: allow inputs with fewer than ``num_frames`` frames.

    Buffered rows are written as a shard every ``shard_size`` rows and on
    :meth:`close`.  As a context manager the writer closes (flushes) on exit
    *even when the block raises*: every row whose ``add`` succeeded survives,
    and the exception propagates.  A process that is killed loses only its
    buffered (not yet sharded) rows.
    """

    def __init__(self, path: "str | os.PathLike[str]", *, num_candidates: int, num_frames: int,
                 shard_size: int = 65536, resume: bool = False, dtype: str = "float32",
                 metadata: Optional[Mapping[str, Any]] = None, pad_frames: bool = False):
        self.path = os.fspath(path)
        self.num_frames = _check_pos_int("num_frames", num_frames)
        self.num_candidates = _check_pos_int("num_candidates", num_candidates)
        self.shard_size = _check_pos_int("shard_size", shard_size)
        self.dtype = _norm_dtype(dtype)
        self.pad_frames = bool(pad_frames)
        meta = _normalize_metadata(metadata)
        manifest = {
            "format": "sparc.priors",
            "format_version": FORMAT_VERSION,
            "num_frames": self.num_frames,
            "num_candidates": self.num_candidates,
            "dtype": self.dtype,
            "pad_frames": self.pad_frames,
            "metadata": meta,
        }

        os.makedirs(self.path, exist_ok=True)
        entries = os.listdir(self.path)
        existing: frozenset = frozenset()
        next_shard = 0
        if entries and not resume:
            raise FileExistsError(
                f"prior store directory {self.path!r} is not empty; pass resume=True to continue it"
            )
        if resume:
            self._clean_debris(entries)
            if os.path.exists(os.path.join(self.path, MANIFEST_NAME)):
                old = _read_manifest(self.path)
                for key in ("num_frames", "num_candidates", "dtype", "pad_frames"):
                    if old.get(key, False) != manifest[key]:
                        raise ValueError(
                            f"cannot resume prior store {self.path!r}: it has {key}={old.get(key)!r}, "
                            f"create() was given {key}={manifest[key]!r} (field: {key})"
                        )
                if metadata is not None and old.get("metadata", {}) != meta:
                    raise ValueError(
                        f"cannot resume prior store {self.path!r}: metadata differs from the stored "
                        f"metadata (field: metadata); pass metadata=None to keep it"
                    )
                store = PriorStore.open(self.path)
                existing = frozenset(store.qids)
                next_shard = store._shard_nums[-1] + 1 if store._shard_nums else 0
                del store  # drop the mmaps
            elif os.listdir(self.path):
                raise ValueError(
                    f"cannot resume {self.path!r}: it has files but no {MANIFEST_NAME}; not a prior store"
                )
            else:
                _atomic_write_bytes(self.path, MANIFEST_NAME, _json_bytes(manifest))
        else:
            _atomic_write_bytes(self.path, MANIFEST_NAME, _json_bytes(manifest))
        _fsync_dir(self.path)

        self.existing = existing
        self._seen = set(existing)  # everything in the store or this writer's buffer
        self._next_shard = next_shard
        self._buf_qids: List[str] = []
        self._buf_probs: List[np.ndarray] = []
        self._buf_lengths: List[np.ndarray] = []
        self._buffered = 0
        self._num_added = 0
        self._closed = False

    def _clean_debris(self, entries: List[str]) -> None:
        """Delete what a killed writer leaves: temp files and shard files without a qids file."""
        complete = {int(m.group(1)) for m in map(_SHARD_RE.match, entries) if m}
        for name in entries:
            m = _SHARD_DEBRIS_RE.match(name)
            if name.startswith(TMP_PREFIX) or (m and int(m.group(1)) not in complete):
                os.remove(os.path.join(self.path, name))

    # ---- info ---------------------------------------------------------

    def __contains__(self, qid: Any) -> bool:
        """True if qid is already in the store or was added by this writer."""
        try:
            return _norm_qid(qid) in self._seen
        except TypeError:
            return False

    @property
    def num_added(self) -> int:
        """Rows added through this writer (written or still buffered)."""
        return self._num_added

    # ---- validation ---------------------------------------------------

    def _check_shape(self, qid: str, shape: Tuple[int, ...], batch: bool) -> int:
        """Validate one item's [frames, candidates] shape; returns frames."""
        nd = 3 if batch else 2
        want = "[N, frames, candidates]" if batch else "[frames, candidates]"
        if len(shape) != nd:
            raise ValueError(f"qid {qid!r}: probs must be {want}, got shape {tuple(shape)} (field: shape)")
        F, C = shape[-2], shape[-1]
        if C != self.num_candidates:
            raise ValueError(f"qid {qid!r}: probs has {C} candidates, store expects "
                             f"{self.num_candidates} (field: num_candidates)")
        if F > self.num_frames or F < 1:
            raise ValueError(f"qid {qid!r}: probs has {F} frames, store expects "
                             f"{'at most ' if self.pad_frames else ''}{self.num_frames} (field: num_frames)")
        if F < self.num_frames and not self.pad_frames:
            raise ValueError(f"qid {qid!r}: probs has {F} frames, store expects {self.num_frames} "
                             f"(field: num_frames); create the store with pad_frames=True to allow "
                             f"shorter videos")
        return F

    @staticmethod
    def _as_float64(qid: str, probs: Any) -> np.ndarray:
        try:
            arr = _to_numpy(probs)
        except ValueError as e:  # e.g. ragged nested lists
            raise ValueError(f"qid {qid!r}: probs is not a rectangular array: {e} (field: probs)") from None
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"qid {qid!r}: probs has dtype {arr.dtype}, expected a real "
                             f"numeric array (field: probs)")
        return arr.astype(np.float64, copy=False)

    def _check_values(self, qids: List[str], arr: np.ndarray) -> None:
        """Vectorised value checks on [N, F, C] float64 (all rows valid)."""
        axes = (1, 2)
        bad = ~np.isfinite(arr).all(axis=axes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"qid {qids[i]!r}: probs contains NaN or inf (field: probs)")
        bad = (arr < 0).any(axis=axes)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"qid {qids[i]!r}: probs has negative values (min {arr[i].min():.6g}) (field: probs)")
        sums = arr.sum(axis=2)
        off = np.abs(sums - 1.0) > ROW_SUM_ATOL
        if off.any():
            i = int(np.argmax(off.any(axis=1)))
            f = int(np.argmax(off[i]))
            raise ValueError(f"qid {qids[i]!r}: probs frame {f} sums to {sums[i, f]:.6g}, expected 1 "
                             f"(atol {ROW_SUM_ATOL:g}) (field: probs)")

    def _check_qids(self, qids: List[str]) -> None:
        batch = set()
        for q in qids:
            if q == "":
                raise ValueError("qid '': empty qid (field: qid)")
            if q in self._seen or q in batch:
                where = "in the store" if q in self.existing else "already added"
                raise ValueError(f"qid {q!r}: duplicate qid ({where}; check writer.existing / "
                                 f"`qid in writer` first) (field: qid)")
            batch.add(q)

    def _pad_cast(self, arr: np.ndarray) -> np.ndarray:
        """[N, F, C] float64 -> [N, num_frames, C] storage dtype, zero frames past F."""
        N, F, C = arr.shape
        if F == self.num_frames:
            return arr.astype(self.dtype)
        out = np.zeros((N, self.num_frames, C), dtype=self.dtype)
        out[:, :F] = arr
        return out

    # ---- adding -------------------------------------------------------

    def add(self, qid: Any, probs: Any) -> None:
        """Add one qid's ``probs [frames, candidates]`` (array-like or tensor).

        Raises ``ValueError`` naming the qid and field for a bad shape, frame
        or candidate count, NaN/inf, negative values, a valid frame not
        summing to 1 (atol 1e-3, checked before any float16 cast), or a
        duplicate qid; ``TypeError`` for a qid that is not str/int.
        """
        self._check_open()
        q = _norm_qid(qid)
        self._check_qids([q])
        arr = self._as_float64(q, probs)
        F = self._check_shape(q, arr.shape, batch=False)
        arr = arr[None]
        self._check_values([q], arr)
        self._append([q], self._pad_cast(arr), np.array([F], dtype=np.int64))

    def add_many(self, qids: Sequence[Any], probs: Any) -> None:
        """Add ``probs [N, frames, candidates]`` for ``qids`` (length N).

        ``probs`` may also be a list of per-qid ``[frames_i, candidates]``
        arrays (ragged frames need ``pad_frames=True``).  All-or-nothing: the
        whole batch is validated before any row is added.
        """
        self._check_open()
        qs = _norm_qids(qids)
        self._check_qids(qs)
        if isinstance(probs, (list, tuple)):
            if len(probs) != len(qs):
                raise ValueError(f"add_many: {len(qs)} qids but {len(probs)} probs arrays (field: probs)")
            items = [self._as_float64(q, p) for q, p in zip(qs, probs)]
            lens = np.array([self._check_shape(q, a.shape, batch=False) for q, a in zip(qs, items)],
                            dtype=np.int64)
            for q, a in zip(qs, items):
                self._check_values([q], a[None])
            if not qs:
                return
            stacked = np.concatenate([self._pad_cast(a[None]) for a in items])
        else:
            who = qs[0] if qs else "<empty>"
            arr = self._as_float64(who, probs)
            if arr.ndim != 3 or arr.shape[0] != len(qs):
                raise ValueError(f"add_many: expected probs [N={len(qs)}, frames, candidates], "
                                 f"got shape {tuple(arr.shape)} (field: shape)")
            if not qs:
                return
            F = self._check_shape(qs[0], arr.shape, batch=True)
            self._check_values(qs, arr)
            lens = np.full(len(qs), F, dtype=np.int64)
            stacked = self._pad_cast(arr)
        self._append(qs, stacked, lens)

    def _append(self, qids: List[str], probs: np.ndarray, lengths: np.ndarray) -> None:
        self._seen.update(qids)
        self._num_added += len(qids)
        start = 0
        while start < len(qids):
            take = min(self.shard_size - self._buffered, len(qids) - start)
            end = start + take
            self._buf_qids.extend(qids[start:end])
            self._buf_probs.append(probs[start:end])
            self._buf_lengths.append(lengths[start:end])
            self._buffered += take
            start = end
            if self._buffered >= self.shard_size:
                self._flush()

    def _flush(self) -> None:
        """Write the buffer as the next shard (qids file last = commit point)."""
        if not self._buffered:
            return
        base = _shard_base(self._next_shard)
        probs = np.concatenate(self._buf_probs) if len(self._buf_probs) > 1 else self._buf_probs[0]
        _atomic_save_npy(self.path, base + ".npy", probs)
        if self.pad_frames:
            _atomic_save_npy(self.path, base + ".lengths.npy", np.concatenate(self._buf_lengths))
        _atomic_write_bytes(self.path, base + ".qids.json", _json_bytes(self._buf_qids))
        _fsync_dir(self.path)
        self._next_shard += 1
        self._buf_qids, self._buf_probs, self._buf_lengths = [], [], []
        self._buffered = 0

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"PriorStoreWriter for {self.path!r} is closed")

    def flush(self) -> None:
        """Write the buffered rows as a shard now (a job that cuts shards at its own boundaries,
        e.g. every N videos, gets the same files whether or not it was interrupted in between)."""
        self._check_open()
        self._flush()

    def abandon(self) -> None:
        """Close without writing the buffered rows (they are recomputed on resume); completed
        shards stay. For jobs whose shard boundaries must not depend on where they were stopped."""
        self._buf_qids, self._buf_probs, self._buf_lengths = [], [], []
        self._buffered = 0
        self._closed = True

    def close(self) -> None:
        """Write any buffered rows as a final (possibly short) shard. Idempotent."""
        if self._closed:
            return
        self._flush()
        self._closed = True

    def __enter__(self) -> "PriorStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # Flush even when the block raised: rows whose add() succeeded are
        # completed work and must survive; the exception still propagates.
        self.close()
        return False

    def __repr__(self) -> str:
        return (f"PriorStoreWriter({self.path!r}, added={self._num_added}, "
                f"existing={len(self.existing)}, buffered={self._buffered}, closed={self._closed})")


def move_shards(source: "str | os.PathLike[str]", dest: "str | os.PathLike[str]") -> int:
    """Move every complete shard of the store at ``source`` to the end of the store at ``dest``
    (renumbered after its last shard; the qids file moved last, so ``dest`` only ever shows complete
    shards), then remove ``source``. Both must agree on frames, candidates, dtype and padding; a qid
    present in both is an error. Safe to rerun after a kill: shards already moved are in ``dest``,
    the rest still in ``source``. Returns the number of shards moved."""
    source, dest = os.fspath(source), os.fspath(dest)
    src_manifest, dest_manifest = _read_manifest(source), _read_manifest(dest)
    for key in ("num_frames", "num_candidates", "dtype", "pad_frames"):
        if src_manifest.get(key, False) != dest_manifest.get(key, False):
            raise ValueError(f"cannot move shards of {source!r} into {dest!r}: {key} differs "
                             f"({src_manifest.get(key)!r} vs {dest_manifest.get(key)!r}) (field: {key})")
    existing = set(PriorStore.open(dest).qids)
    nums = _complete_shards(dest)
    next_num = nums[-1] + 1 if nums else 0
    moved = 0
    for num in _complete_shards(source):
        base, new_base = _shard_base(num), _shard_base(next_num)
        with open(os.path.join(source, base + ".qids.json"), "rb") as f:
            qids = json.loads(f.read().decode("utf-8"))
        clash = existing.intersection(qids)
        if clash:
            raise ValueError(f"qid {sorted(clash)[0]!r} is in both {source!r} and {dest!r} (field: qid)")
        # Data files are linked (copied where links fail) first, the qids file moved last: a kill at
        # any point leaves the shard complete in exactly one of the two stores.
        for suffix in (".npy", ".lengths.npy"):
            src = os.path.join(source, base + suffix)
            if os.path.exists(src):
                tmp = os.path.join(dest, TMP_PREFIX + new_base + suffix)
                if os.path.exists(tmp):
                    os.remove(tmp)
                try:
                    os.link(src, tmp)
                except OSError:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, os.path.join(dest, new_base + suffix))
        _fsync_dir(dest)
        os.replace(os.path.join(source, base + ".qids.json"), os.path.join(dest, new_base + ".qids.json"))
        _fsync_dir(dest)
        existing.update(qids)
        next_num += 1
        moved += 1
    for name in os.listdir(source):
        os.remove(os.path.join(source, name))
    os.rmdir(source)
    return moved


def update_metadata(path: "str | os.PathLike[str]", updates: Mapping[str, Any]) -> Dict[str, Any]:
    """Set keys of the metadata of the store at ``path`` (a value of ``None`` removes its key) and
    rewrite the manifest atomically; returns the new metadata. For what a job learns only while it
    runs (extraction records the videos it skipped); the shards are untouched."""
    path = os.fspath(path)
    manifest = _read_manifest(path)
    meta = dict(manifest.get("metadata") or {})
    for key, value in updates.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    manifest["metadata"] = _normalize_metadata(meta)
    _atomic_write_bytes(path, MANIFEST_NAME, _json_bytes(manifest))
    _fsync_dir(path)
    return manifest["metadata"]
