"""Shared by the benchmarks: a generated WLASL-like video set in benchmarks/scratch/ (gitignored).

Clips are 256x256 at 25 fps, 50-70 frames, like the release's pre-cut WLASL2000 videos: a synthetic signer
(slr.data.synthetic) signing there and back, written with the repository's own video writer (mp4v).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from slr.data.metadata import Index, Instance
from slr.data.synthetic import PATHS, Signer, render_clip, sign_of
from slr.data.video import write_frames

SCRATCH = Path(__file__).resolve().parent / "scratch"
SIZE, FPS = 256, 25


def _make(args: tuple[Path, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    sign = sign_of(seed % len(PATHS))  # one of the six original signs
    # Little pixel noise: mp4v spends its bits on noise (a clip would be ~1 MB, not WLASL's ~100-300 kB).
    signer = Signer(background=(40, 50, 60), body=(90, 110, 140), skin=(220, 180, 160),
                    offset=(float(rng.uniform(-0.08, 0.08)), 0.0), scale=float(rng.uniform(0.85, 1.15)),
                    speed=float(rng.uniform(0.8, 1.25)), noise=1.0)
    clips = [render_clip(sign, reverse, signer, SIZE, rng)[0] for reverse in (False, True)]
    frames = np.concatenate(clips)[: int(rng.integers(50, 71))]
    write_frames(path, frames, FPS)


def video_set(count: int) -> tuple[Index, Path]:
    """`count` generated videos (made once, then reused) and an index of them: every clip a pre-cut train clip."""
    video_dir = SCRATCH / "videos"
    paths = [video_dir / f"{k:05d}.mp4" for k in range(count)]
    todo = [(p, k) for k, p in enumerate(paths) if not p.is_file()]
    if todo:
        print(f"generating {len(todo)} videos in {video_dir} ...", flush=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_make, todo, chunksize=8))
    classes = math.ceil(count / 5)
    instances = tuple(
        Instance(video_id=p.stem, label=k % classes, split="train", frame_start=1, frame_end=-1,
                 bbox=(0, 0, SIZE, SIZE), signer_id=0)
        for k, p in enumerate(paths)
    )
    return Index(tuple(f"g{k}" for k in range(classes)), instances), video_dir


def machine() -> str:
    """CPU model, cores and load average, for the record."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"
