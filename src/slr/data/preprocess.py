"""Videos -> fixed-size uint8 clips, one `.npy` array per set (train/val/test) plus a manifest.

Each clip is decoded once, trimmed to its sign's frame range, sampled to `num_frames` and resized to
`frame_size` x `frame_size`. A set is stored as one uint8 array (N, T, H, W, C) that training memory-maps, so the
loader never decodes video and DVC hashes a handful of files, not one per clip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from slr.data.metadata import SETS, Index, Instance
from slr.data.video import VideoError, read_frames
from slr.errors import UserError
from slr.files import atomic_dir, write_json

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ClipResult:
    video_id: str
    clip: np.ndarray | None  # uint8 (T, H, W, C); None if the video is missing or unreadable
    decoded: int  # frames in the trimmed range before sampling
    problem: str  # "", "missing" or "unreadable"


def sample_indices(length: int, num_frames: int) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly over a clip of `length` frames.

    Takes the middle frame of each of `num_frames` equal segments, so the whole sign is covered however long it
    is. A clip shorter than `num_frames` repeats frames evenly (never pads with blanks, never truncates).
    """
    return np.floor((np.arange(num_frames) + 0.5) * length / num_frames).astype(np.int64)


def trim(frames: np.ndarray, frame_start: int, frame_end: int) -> np.ndarray:
    """Frames [frame_start, frame_end] (1-based, inclusive, -1 = to the end), clamped to the decoded length."""
    length = len(frames)
    first = min(max(frame_start, 1), length) - 1
    last = length if frame_end == -1 else min(max(frame_end, first + 1), length)
    return frames[first:last]


def resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to `size` (area interpolation), then centre-crop to `size` x `size`."""
    _, height, width, _ = frames.shape
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    resized = [cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack(resized)[:, top : top + size, left : left + size]


def process_clip(path: Path, instance: Instance, num_frames: int, frame_size: int) -> ClipResult:
    """Decode, trim, sample and resize one video; a bad video yields a result with `problem` set."""
    if not path.is_file():
        return ClipResult(instance.video_id, None, 0, "missing")
    try:
        frames = trim(read_frames(path), instance.frame_start, instance.frame_end)
    except VideoError:
        return ClipResult(instance.video_id, None, 0, "unreadable")
    clip = resize_square(frames[sample_indices(len(frames), num_frames)], frame_size)
    return ClipResult(instance.video_id, clip, len(frames), "")


def _process(args: tuple[Path, Instance, int, int]) -> ClipResult:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    return process_clip(*args)


def preprocess(
    index: Index,
    video_dir: Path,
    out_dir: Path,
    num_frames: int,
    frame_size: int,
    workers: int | None = None,
    sets: tuple[str, ...] = SETS,
) -> dict:
    """Preprocess `sets` of `index` into `out_dir`; return the data report (counts per set).

    The manifest lists, per set, the ids, labels and decoded frame counts of the stored clips, in array order, and
    the ids skipped as missing or unreadable.
    """
    if num_frames < 1 or frame_size < 8:
        raise UserError(f"need at least 1 frame of at least 8x8 pixels per clip, got {num_frames} of {frame_size}")
    workers = workers or os.cpu_count() or 1
    manifest: dict = {"glosses": list(index.glosses), "num_frames": num_frames, "frame_size": frame_size, "sets": {}}
    report: dict = {"classes": len(index.glosses)}
    with atomic_dir(out_dir) as tmp, ProcessPoolExecutor(workers) as pool:
        for name in sets:
            instances = index.of_set(name)
            jobs = [(video_dir / f"{i.video_id}.mp4", i, num_frames, frame_size) for i in instances]
            results = tqdm(pool.map(_process, jobs, chunksize=8), total=len(jobs), desc=name, unit="clip")
            manifest["sets"][name], report[name] = _store(name, instances, results, tmp, num_frames, frame_size)
        write_json(tmp / MANIFEST, manifest)
    return report


def _store(
    name: str, instances: list[Instance], results: Iterator[ClipResult], out: Path, num_frames: int, size: int
) -> tuple[dict, dict]:
    """Write the readable clips of one set to `out/<name>.npy`; return its manifest entry and report entry."""
    labels = {i.video_id: i.label for i in instances}
    path = out / f"{name}.npy"
    array = _open_array(path, len(instances), num_frames, size)
    entry: dict = {"video_ids": [], "labels": [], "frames": [], "missing": [], "unreadable": []}
    for result in results:
        if result.problem:
            entry[result.problem].append(result.video_id)
            continue
        array[len(entry["video_ids"])] = result.clip
        entry["video_ids"].append(result.video_id)
        entry["labels"].append(labels[result.video_id])
        entry["frames"].append(result.decoded)
    stored = len(entry["video_ids"])
    if stored < len(instances):  # skipped videos left empty rows at the end: copy to an array of the real length
        trimmed = _open_array(out / f".{name}.trimmed.npy", stored, num_frames, size)
        trimmed[:] = array[:stored]
        trimmed.flush()
        os.replace(out / f".{name}.trimmed.npy", path)
    array.flush()
    del array
    if instances and not stored:
        raise UserError(f"no readable video in the {name} set ({len(instances)} listed); check the video folder")
    report = {
        "listed": len(instances),
        "present": len(instances) - len(entry["missing"]),
        "readable": stored,
        "short": sum(f < num_frames for f in entry["frames"]),
    }
    return entry, report


def _open_array(path: Path, rows: int, num_frames: int, size: int) -> np.memmap:
    """A new uint8 (rows, T, H, W, C) `.npy` file, memory-mapped for writing clip by clip."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, num_frames, size, size, 3))
