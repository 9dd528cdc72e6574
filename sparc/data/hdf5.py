"""HDF5 feature files read lazily: one handle per file and process (a DataLoader worker opens its own;
h5py handles do not survive a fork), and the ``ids`` dataset of a file as a ``{video: row}`` index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict


def import_h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading HDF5 features needs h5py: pip install 'sparc-videoqa[h5]'") from None
    return h5py


class LazyH5:
    """``dataset(path, name)`` and ``ids(path)`` over files opened on first use in each process."""

    def __init__(self):
        self._files: Dict[str, object] = {}
        self._pid = None
        self._ids: Dict[str, Dict[str, int]] = {}

    def file(self, path: Path):
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if str(path) not in self._files:
            self._files[str(path)] = import_h5py().File(path, "r")
        return self._files[str(path)]

    def dataset(self, path: Path, name: str):
        f = self.file(path)
        if name not in f:
            raise ValueError(f"{path}: no dataset {name!r} (has {sorted(f.keys())}) (field: {name})")
        return f[name]

    def ids(self, path: Path) -> Dict[str, int]:
        """``{video id as text: row}`` of the file's ``ids`` dataset (integers or bytes)."""
        if str(path) not in self._ids:
            ids = self.dataset(path, "ids")[()].tolist()
            self._ids[str(path)] = {(i.decode() if isinstance(i, bytes) else str(i)): n for n, i in enumerate(ids)}
        return self._ids[str(path)]

    def __getstate__(self):      # pickled into DataLoader workers: no open handles travel
        return {"_files": {}, "_pid": None, "_ids": self._ids}


__all__ = ["LazyH5", "import_h5py"]
