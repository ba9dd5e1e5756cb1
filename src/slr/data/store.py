"""Clip storage: each set as shards of uint8 (n, T, H, W, C) `.npy` files, read in place as one array.

Shards rather than one array per set: preprocessing fills each shard under a temporary name and renames it when
complete, so a killed run leaves only complete shards to resume from; the finished shards become the output by
renaming their folder, with no final copy (at 16x224x224 a clip is 2.4 MB, 21,083 clips about 51 GB); and a few
hundred files, not one per clip, keep DVC's hashing fast. Bytes per clip: T x H x W x 3, plus a 128-byte `.npy`
header per shard and an empty row per present video that failed to decode.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"  # in the clips folder: glosses, clip spec, and per set the ids, labels and shards


def shard_name(set_name: str, number: int) -> str:
    return f"{set_name}-{number:05d}.npy"


def create_shard(path: Path, rows: int, clip_shape: tuple[int, ...]) -> None:
    """Make `path` a zero-filled uint8 (rows, *clip_shape) `.npy` file (sparse on disk) for write_clip to fill.

    Worker processes write their clips straight into it: a clip never travels back to the main process (a 2.4 MB
    pickle at 16x224x224) and is never copied into a stacked array.
    """
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *clip_shape))


def write_clip(path: Path, row: int, frames: list[np.ndarray]) -> None:
    """Write a clip's uint8 (H, W, C) frames into row `row` of the shard file `path`, in place.

    One positioned write of the frames as they are: no stacked copy, no memory map to set up per clip, and no
    msync (a killed process's writes are in the page cache already; the shard is renamed into place only after
    every clip returned).
    """
    with path.open("r+b") as file:
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        clip_bytes = sum(frame.nbytes for frame in frames)
        os.pwritev(file.fileno(), [np.ascontiguousarray(f, np.uint8).data for f in frames],
                   file.tell() + row * clip_bytes)


class ClipArray:
    """One set's clips across its shards, indexed like a uint8 (N, T, H, W, C) array.

    An integer gives one clip (a read-only view of the memory-mapped shard); a slice gives a new array. `rows`
    lists, per shard, the rows that hold clips: a video that failed to decode leaves its row empty. Shards are
    mapped on first use in each process, so a DataLoader worker maps them itself instead of receiving a pickled
    copy of the data.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, paths: list[Path], rows: list[list[int]], clip_shape: tuple[int, ...]) -> None:
        self.paths, self.rows = paths, rows
        self.starts = np.cumsum([0, *map(len, rows)])  # first clip of each shard; the last entry is the total
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
        return self._maps[shard][self.rows[shard][index - self.starts[shard]]]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """The whole set as one array (np.asarray(clips)); it reads every shard."""
        return self[:] if dtype is None else self[:].astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}
