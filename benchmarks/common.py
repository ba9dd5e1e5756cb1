"""Shared by the benchmarks: a generated WLASL-like video set in benchmarks/scratch/ (gitignored).

Clips are 25 fps, a synthetic signer (slr.data.synthetic) signing there and back. Two kinds:
- `mp4v`: 256x256, 50-70 frames, like the release's pre-cut WLASL2000 videos, written with the repository's own video
  writer (MPEG-4 Part 2, cheap to decode);
- `h264`: any shape (WLASL's sources are e.g. 320x240 and 640x480), 60-70 frames, H.264 (libx264, High profile with
  B-frames, crf 18) as real WLASL copies are, written with PyAV (benchmarks/requirements.txt). A static textured
  background and per-pixel noise make the encoder spend bits as on camera footage, and so the decoder work.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from slr.data.metadata import Index, Instance
from slr.data.synthetic import PATHS, Signer, render_clip, sign_of
from slr.data.video import write_frames

SCRATCH = Path(__file__).resolve().parent / "scratch"
SIZE, FPS = 256, 25
CODECS = ("mp4v", "h264")


def _frames(seed: int, width: int, height: int, noise: float, lengths: tuple[int, int], signs: int) -> np.ndarray:
    """The signer signing `signs` times there and back alternately, `height` rows of a `width`-square rendering,
    cut to a length drawn from `lengths` (low, high exclusive)."""
    rng = np.random.default_rng(seed)
    sign = sign_of(seed % len(PATHS))  # one of the six original signs
    signer = Signer(background=(40, 50, 60), body=(90, 110, 140), skin=(220, 180, 160),
                    offset=(float(rng.uniform(-0.08, 0.08)), 0.0), scale=float(rng.uniform(0.85, 1.15)),
                    speed=float(rng.uniform(0.8, 1.25)), noise=noise)
    clips = [render_clip(sign, k % 2 == 1, signer, width, rng)[0] for k in range(signs)]
    top = (width - height) // 2
    return np.concatenate(clips)[: int(rng.integers(*lengths)), top : top + height]


def _make_mp4v(path: Path, seed: int) -> None:
    # Little pixel noise: mp4v spends its bits on noise (a clip would be ~1 MB, not WLASL's ~100-300 kB).
    write_frames(path, _frames(seed, SIZE, SIZE, noise=1.0, lengths=(50, 71), signs=2), FPS)


def _make_h264(path: Path, seed: int, width: int, height: int) -> None:
    import av  # benchmark-only dependency, needed for this kind alone

    frames = _frames(seed, width, height, noise=4.0, lengths=(60, 71), signs=3)
    rng = np.random.default_rng([seed, 1])
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2)
    texture = cv2.normalize(texture, None, 0, 80, cv2.NORM_MINMAX).astype(np.int16) - 40
    frames = np.clip(frames + texture, 0, 255).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    tmp.replace(path)


def _make(args: tuple[Path, int, str, int, int]) -> None:
    path, seed, codec, width, height = args
    if codec == "mp4v":
        _make_mp4v(path, seed)
    else:
        _make_h264(path, seed, width, height)


def video_set(count: int, codec: str = "mp4v", shape: tuple[int, int] = (SIZE, SIZE)) -> tuple[Index, Path]:
    """`count` generated videos of `codec` at `shape` (width, height; mp4v: 256x256 only), made once then reused,
    and an index of them: every clip a pre-cut train clip."""
    if codec == "h264":
        try:
            import av  # noqa: F401
        except ImportError:
            raise SystemExit("--codec h264 needs PyAV: pip install -r benchmarks/requirements.txt") from None
    elif shape != (SIZE, SIZE):
        raise SystemExit(f"mp4v clips are {SIZE}x{SIZE}; other shapes need --codec h264")
    width, height = shape
    video_dir = SCRATCH / ("videos" if codec == "mp4v" else f"videos-h264-{width}x{height}")
    paths = [video_dir / f"{k:05d}.mp4" for k in range(count)]
    todo = [(p, k, codec, width, height) for k, p in enumerate(paths) if not p.is_file()]
    if todo:
        print(f"generating {len(todo)} videos in {video_dir} ...", flush=True)
        video_dir.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_make, todo, chunksize=8))
    classes = math.ceil(count / 5)
    instances = tuple(
        Instance(video_id=p.stem, label=k % classes, split="train", frame_start=1, frame_end=-1,
                 bbox=(0, 0, width, height), signer_id=0)
        for k, p in enumerate(paths)
    )
    return Index(tuple(f"g{k}" for k in range(classes)), instances), video_dir


def machine() -> str:
    """CPU model, cores and load average, for the record."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load}"
