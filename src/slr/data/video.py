"""Reading and writing `.mp4` files with OpenCV. Frames are uint8 RGB, (T, H, W, C)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from slr.files import atomic_path


class VideoError(Exception):
    """A video that is missing, unreadable or has no frames; preprocessing skips it and reports its id."""


def read_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of `path`. Returns uint8 (T, H, W, C) RGB; raises VideoError if there is none."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"missing: {path}")
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise VideoError(f"no decodable frames: {path}")
    return np.stack(frames)


def write_frames(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, C) RGB frames as MPEG-4 Part 2 (`mp4v`), which every OpenCV build can write."""
    num, height, width, _ = frames.shape
    with atomic_path(path) as tmp:
        mp4 = tmp.with_suffix(".mp4")  # OpenCV picks the container from the file extension
        writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        try:
            if not writer.isOpened():
                raise VideoError(f"OpenCV cannot write {path}: no mp4v encoder in this build")
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            mp4.replace(tmp)
        finally:
            writer.release()
            mp4.unlink(missing_ok=True)
