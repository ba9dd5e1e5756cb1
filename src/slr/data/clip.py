"""One clip from one video: which frames (find the sign, sample uniformly), which window (crop) and what size.

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
from slr.data.video import Span, VideoError, decode

# A video cut to its sign may be a few frames longer or shorter than the sign's range (re-encoded, a frame dropped
# or repeated); WLASL's start_kit cuts exactly, clamped where the source ends first.
CUT_SLACK = 3


@dataclass(frozen=True)
class ClipSpec:
    """Everything besides the video itself that determines a stored clip's bytes."""

    num_frames: int
    frame_size: int
    crop: str  # "bbox" (the instance's box), "person" (the people detected), "center" or "none" (whole frame, padded)
    bbox_margin: float  # added on each side of the box (bbox or person), as a fraction of its size


@dataclass(frozen=True)
class ClipResult:
    video_id: str
    images: list[np.ndarray]  # the clip: num_frames uint8 (H, W, C) RGB images; none if the video gave no clip
    frames: int  # frames of the sign (the span sampled), before sampling
    problem: str  # "" or one of quality.REASONS
    fallback: bool  # crop "bbox" with the box outside the frame, or "person" with nobody found: centre crop used
    range: str = "whole"  # how the sign was found: sign_span's label


def sample_indices(length: int, num_frames: int) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly over a clip of `length` frames.

    Takes the middle frame of each of `num_frames` equal segments, so the whole sign is covered however long it
    is. A clip shorter than `num_frames` repeats frames evenly (never pads with blanks, never truncates).
    """
    return np.floor((np.arange(num_frames) + 0.5) * length / num_frames).astype(np.int64)


def sign_span(frame_start: int, frame_end: int, count: int) -> Span:
    """Where an instance's sign is in its video of `count` frames, decided from the video's own length.

    WLASL's range [frame_start, frame_end] (1-based, inclusive; frame_end -1: to the end) refers to the source
    video, and a copy may hold the source or the sign already cut out of it, clip by clip: WLASL's start_kit cuts
    only what it downloaded from YouTube, and copies the whole video where frame_end is -1. The label says which:

    - "whole": the range is the whole video (1, -1); nothing to decide.
    - "applied": the video reaches frame_end (or frame_end is -1): it is the source, and the range applies.
    - "ignored": the video is within CUT_SLACK frames of the range's length: the sign already cut out, taken whole.
    - "clamped": neither: the range is clamped to the video (a video that ends before the range starts: whole).

    The index's `fps` is not the file's and does not rescale the range: ranges are frame indices of the file.
    """
    first = max(frame_start, 1) - 1
    if frame_end == -1:
        if first == 0:
            return Span(0, count, "whole")
        stop, length = count, None  # to the end: the source, whatever its length
    else:
        stop = max(frame_end, first + 1)
        length = stop - first
    if count >= stop > first:
        return Span(first, stop, "applied")
    if length is not None and abs(count - length) <= CUT_SLACK:
        return Span(0, count, "ignored")
    return Span(first, count, "clamped") if count > first else Span(0, count, "clamped")


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
    """Decode, find the sign, sample, crop and resize one video; a bad video yields a result with `problem` set."""
    span = partial(sign_span, instance.frame_start, instance.frame_end)
    pick = partial(sample_indices, num_frames=spec.num_frames)
    try:
        if spec.crop == "person":
            images, sign, fallback = _person_clip(path, span, pick, spec)
        else:
            shrink = Shrink(instance.bbox, spec)
            images, sign = decode(path, span, pick, shrink)
            fallback = shrink.fallback
    except VideoError as exc:
        return ClipResult(instance.video_id, [], 0, exc.reason, False)
    # Frames, not np.stack(frames): a fresh 2.4 MB array per clip (16x224x224) cost a third of the decoding.
    return ClipResult(instance.video_id, images, sign.stop - sign.start, "", fallback, sign.how)


def _person_clip(path: Path, span: Callable[[int], Span], pick: Callable[[int], np.ndarray], spec: ClipSpec
                 ) -> tuple[list[np.ndarray], Span, bool]:
    """The clip cropped to the people found on FRAMES of its sampled frames, at source resolution (the detector
    needs the pixels a crop would drop); the frames, the sign's span, and whether nobody was found."""
    frames, sign = decode(path, span, pick)
    searched = np.unique(sample_indices(len(frames), FRAMES))  # a clip of fewer frames searches each once
    height, width = frames[0].shape[:2]
    window, fallback = crop_window(height, width, find_person([frames[k] for k in searched]), "person",
                                   spec.bbox_margin)
    return [to_square(frame, window, spec.frame_size) for frame in frames], sign, fallback
