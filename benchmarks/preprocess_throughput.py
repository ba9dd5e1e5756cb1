"""Preprocessing throughput against the decode-only limit, side by side in one run.

Decode-only: OpenCV reads every frame of every clip, with the same number of processes, and does nothing else.
Preprocess: slr.data.preprocess.preprocess on the same clips (decode, sample, crop, resize, write shards, manifest).
Write-only, for reference: the processes write as many bytes as preprocessing stores (T x H x W x 3 per clip) into
a fresh file, and do nothing else: on a slow disk, storing the clips alone can cost more than 1.25x decoding them.
Runs alternate, each `--repeats` times; the figure is the ratio of the medians (target: at most 1.25).

    PYTHONPATH=src python benchmarks/preprocess_throughput.py --clips 500 --frame-size 224
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from common import SCRATCH, machine, video_set
from slr.data.clip import ClipSpec
from slr.data.preprocess import preprocess


def count_frames(path: Path) -> int:
    """Decode every frame of `path` and throw it away: the least any preprocessing must do."""
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def decode_only(paths: list[Path], workers: int) -> int:
    with ProcessPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return sum(pool.map(count_frames, paths, chunksize=4))


def write_rows(args: tuple[Path, range, int]) -> None:
    path, rows, size = args
    clip = np.full(size, 7, np.uint8)
    with path.open("r+b") as file:
        for row in rows:
            os.pwrite(file.fileno(), clip.data, row * size)


def write_only(path: Path, clips: int, clip_bytes: int, workers: int) -> None:
    """Write `clips` x `clip_bytes` into a new file from `workers` processes, as preprocessing's workers do."""
    with path.open("wb") as file:
        file.truncate(clips * clip_bytes)
    jobs = [(path, range(k, clips, workers), clip_bytes) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_rows, jobs))
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    index, video_dir = video_set(args.clips)
    paths = [video_dir / f"{i.video_id}.mp4" for i in index.instances]
    workers = os.cpu_count() or 1
    spec = ClipSpec(args.num_frames, args.frame_size, crop="center", bbox_margin=0.0, trim=False)
    out = SCRATCH / "clips"
    print(f"machine: {machine()}")
    times: dict[str, list[float]] = {"decode-only": [], "preprocess": [], "write-only": []}
    clip_bytes = args.num_frames * args.frame_size * args.frame_size * 3
    frames = 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        frames = decode_only(paths, workers)
        times["decode-only"].append(time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        preprocess(index, video_dir, out, spec, sets=("train",))
        times["preprocess"].append(time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        write_only(SCRATCH / "write-only.bin", len(paths), clip_bytes, workers)
        times["write-only"].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"{len(paths)} clips, {frames} frames of 256x256, {workers} processes, "
          f"preprocess to {args.num_frames}x{args.frame_size}x{args.frame_size} ({clip_bytes:,} bytes a clip)")
    for name, ts in times.items():
        print(f"{name:12s} median {medians[name]:6.2f} s ({len(paths) / medians[name]:6.1f} clips/s); "
              f"runs {', '.join(f'{t:.2f}' for t in ts)}")
    print(f"preprocess / decode-only: {medians['preprocess'] / medians['decode-only']:.3f} (target <= 1.25)")
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
