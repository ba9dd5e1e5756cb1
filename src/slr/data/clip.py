"""One clip from one video: which frames (trim to the sign, sample uniformly), which window (crop) and what size.

Everything here works on a single video, so preprocess.py can run it in any process, in any order, and get the same
bytes; the parallel, restartable work over a whole index lives there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from slr.data.metadata import Instance
from slr.data.person import FRAMES, find_person
from slr.data.video import VideoError, decode


@dataclass(frozen=True)
class ClipSpec:
    """Everything besides the video itself that determines a stored clip's bytes."""

    num_frames: int
    frame_size: int
    crop: str  # "bbox" (the instance's box), "person" (the people detected), "center" or "none" (whole frame, padded)
    bbox_margin: float  # added on each side of the box (bbox or person), as a fraction of its size
    trim: bool  # cut to the instance's frame range; False for pre-cut videos


@dataclass(frozen=True)
class ClipResult:
    video_id: str
    images: list[np.ndarray]  # the clip: num_frames uint8 (H, W, C) RGB images; none if the video gave no clip
    frames: int  # frames in the trimmed range, before sampling
    problem: str  # "" or one of quality.REASONS
    fallback: bool  # crop "bbox" with the box outside the frame, or "person" with nobody found: centre crop used


def sample_indices(length: int, num_frames: int) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly over a clip of `length` frames.

    Takes the middle frame of each of `num_frames` equal segments, so the whole sign is covered however long it
    is. A clip shorter than `num_frames` repeats frames evenly (never pads with blanks, never truncates).
    """
    return np.floor((np.arange(num_frames) + 0.5) * length / num_frames).astype(np.int64)


def frame_range(frame_start: int, frame_end: int) -> tuple[int, int | None]:
    """WLASL's [frame_start, frame_end] (1-based, inclusive, -1 = to the end) as 0-based [first, stop).

    At least one frame; video.decode clamps the range to the frames the video really has.
    """
    first = max(frame_start, 1) - 1
    return first, None if frame_end == -1 else max(frame_end, first + 1)


def crop_window(height: int, width: int, box: tuple[int, int, int, int] | None, crop: str, margin: float
                ) -> tuple[tuple[int, int, int, int], bool]:
    """The (top, left, height, width) window to keep from every frame, and whether the crop fell back to centre.

    "bbox" and "person": the smallest square holding the box (the instance's, or the people found) plus `margin` on
    each side, centred on the box, shifted to lie in the frame. An instance's box is in source pixels, which a
    pre-cut copy may not match, so a box that does not lie inside the frame, like no box at all (nobody found),
    falls back to the centre square. "center": the centred square. "none": the whole frame.
    """
    if crop == "none":
        return (0, 0, height, width), False
    side = min(height, width)
    x1, y1, x2, y2 = box or (0, 0, 0, 0)
    inside = 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    if crop == "center" or not inside:
        return ((height - side) // 2, (width - side) // 2, side, side), crop != "center"
    side = min(side, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    top = min(max(round((y1 + y2 - side) / 2), 0), height - side)
    left = min(max(round((x1 + x2 - side) / 2), 0), width - side)
    return (top, left, side, side), False


def to_square(frame: np.ndarray, window: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The BGR frame's window as an RGB `size` x `size` image: resized, a non-square window padded black.

    Shrinking averages whole factor x factor blocks first (INTER_AREA's fast path, taken when the sizes divide),
    then interpolates bilinearly for the rest (less than 2x, where bilinear sees every source pixel): as free of
    aliasing as INTER_AREA all the way, without its slow path for fractional scales.
    """
    top, left, height, width = window
    image = frame[top : top + height, left : left + width]
    factor = max(height, width) // size
    if factor >= 2:
        height, width = height // factor, width // factor
        image = cv2.resize(image[: height * factor, : width * factor], (width, height), interpolation=cv2.INTER_AREA)
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_y, pad_x = size - new_h, size - new_w
    if pad_y or pad_x:
        image = cv2.copyMakeBorder(image, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2,
                                   cv2.BORDER_CONSTANT, value=0)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Shrink:
    """Crop and resize a BGR frame to the stored RGB square; the window is fixed on the first frame (a video's
    frames share one size)."""

    bbox: tuple[int, int, int, int]
    spec: ClipSpec
    window: tuple[int, int, int, int] | None = None
    fallback: bool = False

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.window is None:
            height, width = frame.shape[:2]
            self.window, self.fallback = crop_window(height, width, self.bbox, self.spec.crop, self.spec.bbox_margin)
        return to_square(frame, self.window, self.spec.frame_size)


def process_clip(path: Path, instance: Instance, spec: ClipSpec) -> ClipResult:
    """Decode, trim, sample, crop and resize one video; a bad video yields a result with `problem` set."""
    first, stop = frame_range(instance.frame_start, instance.frame_end) if spec.trim else (0, None)
    pick = partial(sample_indices, num_frames=spec.num_frames)
    try:
        if spec.crop == "person":
            images, length, fallback = _person_clip(path, first, stop, pick, spec)
        else:
            shrink = Shrink(instance.bbox, spec)
            images, length = decode(path, first, stop, pick, shrink)
            fallback = shrink.fallback
    except VideoError as exc:
        return ClipResult(instance.video_id, [], 0, exc.reason, False)
    # Frames, not np.stack(frames): a fresh 2.4 MB array per clip (16x224x224) cost a third of the decoding.
    return ClipResult(instance.video_id, images, length, "", fallback)


def _person_clip(path: Path, first: int, stop: int | None, pick: Callable[[int], np.ndarray], spec: ClipSpec
                 ) -> tuple[list[np.ndarray], int, bool]:
    """The clip cropped to the people found on FRAMES of its sampled frames, at source resolution (the detector
    needs the pixels a crop would drop); the frames, the range's length, and whether nobody was found."""
    frames, length = decode(path, first, stop, pick)
    searched = np.unique(sample_indices(len(frames), FRAMES))  # a clip of fewer frames searches each once
    height, width = frames[0].shape[:2]
    window, fallback = crop_window(height, width, find_person([frames[k] for k in searched]), "person",
                                   spec.bbox_margin)
    return [to_square(frame, window, spec.frame_size) for frame in frames], length, fallback
