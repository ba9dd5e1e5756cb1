"""Clip storage: each set as shards of uint8 (n, T, H, W, C) `.npy` files, read in place as one array.

Shards rather than one array per set: preprocessing fills each shard under a temporary name and renames it when
complete, so a killed run leaves only complete shards to resume from; the finished shards become the output by
renaming their folder, with no final copy (at 16x224x224 a clip is 2.4 MB, 21,083 clips about 51 GB); and a few
hundred files, not one per clip, keep DVC's hashing fast. Bytes per clip: T x H x W x 3, plus a 128-byte `.npy`
header per shard and an empty row per present video that failed to decode.
"""

from __future__ import annotations

import errno
import operator
import os
from pathlib import Path

import numpy as np

from slr.errors import UserError

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
        buffers = [memoryview(np.ascontiguousarray(f, np.uint8)).cast("B") for f in frames]
        write_all(file.fileno(), buffers, file.tell() + row * clip_bytes, path)


def write_all(fd: int, buffers: list[memoryview], offset: int, path: Path) -> None:
    """pwritev all of `buffers` at `offset`. The kernel may write less than asked (a disk filling up, a signal):
    the rest is written until done, so a shard recorded as complete never holds a run of zeros; a write that makes
    no progress is the full disk it is."""
    while buffers:
        written = os.pwritev(fd, buffers, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        offset += written
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if written:
            buffers[0] = buffers[0][written:]


def check_shard(path: Path, rows: int, clip_shape: tuple[int, ...]) -> None:
    """Fail with the fix if the shard `path` is missing, damaged or shorter than the `rows` clips the manifest says it
    holds. Checked when a set is opened, from the header and the file size (no data read): a truncated shard would
    otherwise fail deep inside a DataLoader worker, or not at all where the memory map happens to cover the rows."""
    fix = "restore the clips with `dvc checkout data/clips`, or make them again with `dvc repro -f preprocess`"
    try:
        with path.open("rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(file)
            header = file.tell()
    except FileNotFoundError:
        raise UserError(f"shard {path} is missing; {fix}") from None
    except (OSError, ValueError, SyntaxError):
        raise UserError(f"shard {path} is damaged (no valid .npy header); {fix}") from None
    expected = header + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if dtype != np.uint8 or tuple(shape[1:]) != tuple(clip_shape) or shape[0] < rows:
        raise UserError(f"shard {path} holds {dtype} {tuple(shape)}, not the {rows} clips of {tuple(clip_shape)} the "
                        f"manifest lists; {fix}")
    if path.stat().st_size < expected:
        raise UserError(f"shard {path} is truncated ({path.stat().st_size} of {expected} bytes); {fix}")


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
        for path, shard_rows in zip(paths, rows):
            check_shard(path, max(shard_rows, default=-1) + 1, clip_shape)

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
