"""Reading and writing `.mp4` files with OpenCV. Frames are uint8 RGB, (T, H, W, C)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from slr.errors import UserError
from slr.files import atomic_path


# A stream that ends before this fraction of the frames its container declares was cut off (a partial download).
# Not an exact comparison: containers' counts can be off by a frame or two (edit lists, estimated counts).
TRUNCATED_BELOW = 0.9
# MPEG-4 Part 2: the one encoder every OpenCV build can write (the pip wheels have no H.264 encoder).
FOURCC = "mp4v"


class VideoError(Exception):
    """A video that gives no clip; preprocessing skips it and reports its id under `reason`.

    Reasons: "missing" (no file), "unreadable" (OpenCV cannot open it: not a video, or cut off before its index),
    "zero_frame" (opens, no frame decodes), "truncated" (the stream ends before TRUNCATED_BELOW of its frames).
    """

    def __init__(self, reason: str, path: Path) -> None:
        super().__init__(f"{reason}: {path}")
        self.reason = reason


Frame = Callable[[np.ndarray], np.ndarray]


def decode(
    path: str | Path,
    first: int = 0,
    stop: int | None = None,
    pick: Callable[[int], Sequence[int]] | None = None,
    shrink: Frame | None = None,
) -> tuple[list[np.ndarray], int]:
    """Decode frames [first, stop) of `path` (0-based; stop None = to the end) as BGR uint8 (H, W, C).

    Returns the frames and the range's length. The range is clamped to the stream (a range starting past the end
    is its last frame), and decoding stops at `stop`, so a trimmed sign never costs the rest of a long video.
    `pick` (range length -> indices into the range, repeats allowed) returns only those frames, in that order, and
    `shrink` is applied to each as soon as it is decoded. Raises VideoError.

    Every frame is decoded (grab), but only the frames returned are converted to BGR (retrieve). With `shrink`, they
    are converted into one reused buffer and only the shrunk copy is kept: keeping full frames (fresh memory each)
    cost as much again as the conversion. Which frames to keep is planned from the container's frame count; where
    that count is wrong (a cut-off file, an estimate), the video is decoded a second time with the true length.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("missing", path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError("unreadable", path)
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        plan = set(_indices(first, stop, declared, pick)) if declared > 0 else None
        kept, count = _scan(capture, stop, lambda i: i >= first if plan is None else i in plan, shrink)
    finally:
        capture.release()
    if count == 0:
        raise VideoError("zero_frame", path)
    if (stop is None or count < stop) and count < TRUNCATED_BELOW * declared:
        raise VideoError("truncated", path)
    wanted = _indices(first, stop, count, pick)
    if not set(wanted) <= kept.keys():  # the container's count was wrong: decode again, now knowing the length
        capture = cv2.VideoCapture(str(path))
        try:
            kept, _ = _scan(capture, max(wanted) + 1, set(wanted).__contains__, shrink)
        finally:
            capture.release()
    start, end = _clamp(first, stop, count)
    return [kept[i] for i in wanted], end - start


def _clamp(first: int, stop: int | None, count: int) -> tuple[int, int]:
    """[first, stop) within a stream of `count` frames: at least one frame, the last one if `first` is past it."""
    start = min(first, count - 1)
    return start, max(count if stop is None else min(stop, count), start + 1)


def _indices(first: int, stop: int | None, count: int, pick: Callable[[int], Sequence[int]] | None) -> list[int]:
    """Stream indices of the frames to return, for a stream of `count` frames."""
    start, end = _clamp(first, stop, count)
    return [start + int(i) for i in (pick(end - start) if pick else range(end - start))]


def _scan(
    capture: cv2.VideoCapture, stop: int | None, keep: Callable[[int], bool], shrink: Frame | None
) -> tuple[dict[int, np.ndarray], int]:
    """Decode up to `stop` frames (None: all); return the frames whose index `keep` accepts, and the count."""
    kept: dict[int, np.ndarray] = {}
    count = 0
    buffer = None
    while (stop is None or count < stop) and capture.grab():
        if keep(count):
            ok, frame = capture.retrieve(buffer)
            if not ok:
                break
            if shrink is None:
                kept[count] = frame
            else:
                kept[count], buffer = shrink(frame), frame
        count += 1
    return kept, count


def read_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of `path`. Returns uint8 (T, H, W, C) RGB; raises VideoError if there is none."""
    frames, _ = decode(path)
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in frames])


def write_frames(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, C) RGB frames with FOURCC. Raises UserError where this OpenCV build cannot: that is
    the installation's fault, not the video's, so it is not a VideoError (which preprocessing skips)."""
    num, height, width, _ = frames.shape
    with atomic_path(path, durable=False) as tmp:  # videos are generated by the thousand and cheap to make again
        mp4 = tmp.with_suffix(".mp4")  # OpenCV picks the container from the file extension
        writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
        try:
            if not writer.isOpened():
                raise UserError(
                    f"OpenCV {cv2.__version__} cannot write {path} with the {FOURCC} encoder; install the "
                    "opencv-python-headless of requirements.txt (./dev.sh creates .venv from it)"
                )
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            writer.release()
            mp4.replace(tmp)
        finally:
            writer.release()
            mp4.unlink(missing_ok=True)
