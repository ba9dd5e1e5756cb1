"""Reading and writing `.mp4` files with OpenCV. Frames are uint8 RGB, (T, H, W, C)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from slr.files import atomic_path


# A stream that ends before this fraction of the frames its container declares was cut off (a partial download).
# Not an exact comparison: containers' counts can be off by a frame or two (edit lists, estimated counts).
TRUNCATED_BELOW = 0.9


class VideoError(Exception):
    """A video that gives no clip; preprocessing skips it and reports its id under `reason`.

    Reasons: "missing" (no file), "unreadable" (OpenCV cannot open it: not a video, or cut off before its index),
    "zero_frame" (opens, no frame decodes), "truncated" (the stream ends before TRUNCATED_BELOW of its frames).
    """

    def __init__(self, reason: str, path: Path) -> None:
        super().__init__(f"{reason}: {path}")
        self.reason = reason


def decode(path: str | Path, first: int = 0, stop: int | None = None) -> tuple[list[np.ndarray], int]:
    """Decode frames [first, stop) of `path` (0-based; stop None = to the end) as BGR uint8 (H, W, C).

    Returns the frames and how many frames were decoded. The range is clamped to the stream: a range starting past
    the end gives the last frame. Decoding stops at `stop`, so a trimmed sign never costs the rest of a long video;
    frames before `first` are only grabbed (decoded, not converted to BGR). Raises VideoError.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("missing", path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError("unreadable", path)
        declared = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        frames: list[np.ndarray] = []
        count = 0
        while stop is None or count < stop:
            if count < first:
                ok = capture.grab()
            else:
                ok, frame = capture.read()
                if ok:
                    frames.append(frame)
            if not ok:
                break
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise VideoError("zero_frame", path)
    if (stop is None or count < stop) and count < TRUNCATED_BELOW * declared:
        raise VideoError("truncated", path)
    if not frames:  # the range starts past the end: decode again for the last frame (bad metadata only)
        return decode(path, count - 1, count)[0], count
    return frames, count


def read_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of `path`. Returns uint8 (T, H, W, C) RGB; raises VideoError if there is none."""
    frames, _ = decode(path)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames])


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
