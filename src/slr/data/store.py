"""Clip storage: each set as shards of uint8 (n, T, H, W, C) `.npy` files, read in place as one array.

Shards rather than one array per set: a preprocessing run writes each shard once, atomically (temp file + rename),
so a killed run leaves only complete shards to resume from; the finished shards become the output by renaming
their folder, with no final copy (at 16x224x224 a clip is 2.4 MB, 21,083 clips about 50 GB); and a few hundred
files, not one per clip, keep DVC's hashing fast. Bytes per clip: T x H x W x 3, plus one 128-byte `.npy` header
per shard.
"""

from __future__ import annotations

import operator
from pathlib import Path

import numpy as np

from slr.files import atomic_path

MANIFEST = "manifest.json"  # in the clips folder: glosses, clip spec, and per set the ids, labels and shards

def shard_name(set_name: str, number: int) -> str:
    return f"{set_name}-{number:05d}.npy"


def write_shard(path: Path, clips: np.ndarray) -> None:
    """Save uint8 (n, T, H, W, C) clips as `path`, atomically: a reader never sees a partial shard."""
    with atomic_path(path) as tmp, tmp.open("wb") as file:
        np.save(file, clips)  # a file object: np.save would append ".npy" to the temporary name


def shard_rows(path: Path) -> int | None:
    """Clips in the shard at `path` (memory-mapped, not read), or None if it is absent or not a `.npy` file."""
    try:
        return np.load(path, mmap_mode="r").shape[0]
    except (OSError, ValueError):
        return None


class ClipArray:
    """One set's clips across its shards, indexed like a uint8 (N, T, H, W, C) array.

    An integer gives one clip (a read-only view of the memory-mapped shard); a slice gives a new array. Shards are
    mapped on first use in each process, so a DataLoader worker maps them itself instead of receiving a pickled
    copy of the data.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, paths: list[Path], counts: list[int], clip_shape: tuple[int, ...]) -> None:
        self.paths = paths
        self.starts = np.cumsum([0, *counts])  # first row of each shard; the last entry is the total
        self.shape = (int(self.starts[-1]), *clip_shape)
        self._maps: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            rows = range(*key.indices(len(self)))
            out = np.empty((len(rows), *self.shape[1:]), self.dtype)
            for row, index in enumerate(rows):
                out[row] = self[index]
            return out
        index = operator.index(key)
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} out of range for {len(self)} clips")
        index %= len(self)
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        if self._maps is None:
            self._maps = [np.load(path, mmap_mode="r") for path in self.paths]
        return self._maps[shard][index - self.starts[shard]]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """The whole set as one array (np.asarray(clips)); it reads every shard."""
        return self[:] if dtype is None else self[:].astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}
