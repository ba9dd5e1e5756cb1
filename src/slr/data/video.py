"""Reading and writing `.mp4` files with OpenCV. Frames are uint8 RGB, (T, H, W, C).

OpenCV reports no decode errors: a file cut off mid-download opens where its index (`moov`) survived, and decodes
what is left without a word. Such a file shows in its container instead, whose sample table then points past the
end of the file; `cut_off` reads it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

import cv2
import numpy as np

from slr.errors import UserError
from slr.files import atomic_path


# A stream that ends early, far from the frame count its container declares, was cut off. Not an exact comparison:
# a container may declare a few frames more than its stream decodes (edit lists, a count rounded up from the
# duration): 20 of 113 real WLASL clips declare 1-3 frames more than OpenCV decodes, and 01377 declares 25, decodes
# 22 and is intact (its sample table ends at the end of the file). Far: short by more than DECLARED_SLACK frames and
# below TRUNCATED_BELOW of the count. A file cut off mid-download shows in its container first (cut_off).
DECLARED_SLACK = 3
TRUNCATED_BELOW = 0.9
# MPEG-4 Part 2: the one encoder every OpenCV build can write (the pip wheels have no H.264 encoder).
FOURCC = "mp4v"
# FFmpeg's decoding threads per video (0: one a core, OpenCV's default). One: preprocessing runs a process a core
# already, and on the real clips, quiet, one thread took 8% less time in all (37% less on clips of 240 lines or
# fewer, whose thread start-up weighs most), the same on 1080p (BENCHMARKS.md). The frames are the same bytes.
DECODER_THREADS = 1


class VideoError(Exception):
    """A video that gives no clip; preprocessing skips it and reports its id under `reason`.

    Reasons: "missing" (no file), "unreadable" (OpenCV cannot open it: not a video, or cut off before its index),
    "truncated" (cut off after its index: the container's sample table points past the end of the file, or the
    stream ends far from the frame count the container declares), "zero_frame" (opens, whole, no frame decodes).
    """

    def __init__(self, reason: str, path: Path) -> None:
        super().__init__(f"{reason}: {path}")
        self.reason = reason


class Span(NamedTuple):
    """The frames [start, stop) of a stream to sample, and how they were chosen (a label the caller reports)."""

    start: int
    stop: int
    how: str = "whole"


def whole(count: int) -> Span:
    """Every frame of a stream of `count` frames."""
    return Span(0, count)


Frame = Callable[[np.ndarray], np.ndarray]


def decode(
    path: str | Path,
    span: Callable[[int], Span] = whole,
    pick: Callable[[int], Sequence[int]] | None = None,
    shrink: Frame | None = None,
) -> tuple[list[np.ndarray], Span]:
    """Decode the frames of `path` that `span` (the stream's frame count -> the frames to sample) chooses, as BGR
    uint8 (H, W, C). Returns the frames and the span of the stream's true length. Raises VideoError.

    `pick` (span length -> indices into the span, repeats allowed) returns only those frames, in that order, and
    `shrink` is applied to each as soon as it is decoded. Decoding stops at the span's end where the span ends
    before the stream, so a sign in a long source video never costs the rest of the video.

    The span is planned from the frame count the container declares, and decided again from the count decoded;
    where the two differ (a container that over-counts, an estimate), the video is decoded a second time. Every
    frame is decoded (grab), but only the frames returned are converted to BGR (retrieve). With `shrink`, they are
    converted into one reused buffer and only the shrunk copy is kept: keeping full frames (fresh memory each) cost
    as much again as the conversion.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("missing", path)
    with _open(path) as capture:
        if cut_off(path):  # after the open: a file whose index is cut off is "unreadable", as OpenCV finds it
            raise VideoError("truncated", path)
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        plan = span(declared if declared > 0 else _count(path))  # no count in the container: count by decoding
        stop = plan.stop if plan.stop < declared else None  # else to the end: the stream may be longer than declared
        kept, count = _scan(capture, stop, set(_indices(plan, pick)).__contains__, shrink)
    if count == 0:
        raise VideoError("zero_frame", path)
    ended = stop is None or count < stop  # the stream ended by itself: `count` is its length
    if ended and count < declared - max(DECLARED_SLACK, (1 - TRUNCATED_BELOW) * declared):
        raise VideoError("truncated", path)
    final = span(count) if ended else plan
    wanted = _indices(final, pick)
    if not set(wanted) <= kept.keys():  # planned from a wrong count: decode again, now knowing the length
        with _open(path) as capture:
            kept, _ = _scan(capture, max(wanted) + 1, set(wanted).__contains__, shrink)
    return [kept[i] for i in wanted], final


@contextmanager
def _open(path: Path) -> Iterator[cv2.VideoCapture]:
    """`cv2.VideoCapture` of `path`, released on exit; VideoError "unreadable" where it does not open."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, DECODER_THREADS])
    try:
        if not capture.isOpened():
            raise VideoError("unreadable", path)
        yield capture
    finally:
        capture.release()


def _count(path: Path) -> int:
    """The number of frames that decode, for a container that declares none."""
    with _open(path) as capture:
        return _scan(capture, None, lambda i: False, None)[1]


def _indices(span: Span, pick: Callable[[int], Sequence[int]] | None) -> list[int]:
    """Stream indices of the frames to return."""
    length = span.stop - span.start
    return [span.start + int(i) for i in (pick(length) if pick else range(length))]


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


def cut_off(path: Path) -> bool:
    """Whether the MP4 at `path` holds less than its index says: a top-level box (the media data) claims more bytes
    than the file has, or a video track's samples end past the end of the file. False for a whole file, and where
    the file is not an MP4 this can read (then the decoded frame count decides)."""
    size = path.stat().st_size
    with path.open("rb") as file:
        try:
            top = list(_boxes(file, 0, size))
            if not top or top[0][0] not in FIRST_BOXES:  # not ISO-BMFF (an AVI, say): nothing to read here
                return False
            moov = next((box for kind, box in top if kind == b"moov"), None)
            return any(box[1] > size for _, box in top) or (
                moov is not None and any(end > size for end in _video_data_ends(file, moov)))
        except (struct.error, ValueError, KeyError):  # a table missing or malformed: the frame count decides
            return False


Box = tuple[int, int]  # the file offsets of a box's content and of its end
FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"}  # what an MP4 or QuickTime file starts with


def _boxes(file: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, Box]]:
    """The boxes (ISO/IEC 14496-12) between `start` and `end`: type, content offset, and the end the box claims
    (past `end` where the file is cut off; the walk stops there). Bytes that are no box (a type that is not four
    printable characters: trailing junk) end the walk."""
    while start + 8 <= end:
        file.seek(start)
        size, kind = struct.unpack(">I4s", file.read(8))
        if not all(32 <= c < 127 for c in kind):
            return
        head = 8
        if size == 1:  # a 64-bit size follows the type
            size, head = struct.unpack(">Q", file.read(8))[0], 16
        elif size == 0:  # to the end of the enclosing space
            size = end - start
        if size < head:
            raise ValueError(f"box of {size} bytes at {start}")
        yield kind, (start + head, start + size)
        start += size


def _child(file: BinaryIO, box: Box, kind: bytes) -> Box:
    """The content of the first `kind` box inside `box` (ValueError if there is none)."""
    found = next((b for k, b in _boxes(file, *box) if k == kind), None)
    if found is None:
        raise ValueError(f"no {kind!r} box")
    return found


def _table(file: BinaryIO, box: Box, item: str, skip: int = 0) -> list[tuple]:
    """The entries of a full box's table: after version and flags and `skip` more bytes, a 32-bit count, then the
    entries, each of struct format `item` (big-endian). A count past the box's end is cut to the entries it holds."""
    file.seek(box[0] + 4 + skip)
    count = struct.unpack(">I", file.read(4))[0]
    width = struct.calcsize(">" + item)
    data = file.read(min(count * width, max(0, box[1] - file.tell())))
    return [struct.unpack_from(">" + item, data, k * width) for k in range(len(data) // width)]


def _video_data_ends(file: BinaryIO, moov: Box) -> Iterator[int]:
    """For each video track, the file offset just past its last sample: the largest chunk offset (stco/co64) plus
    the sizes (stsz) of the samples in that chunk (stsc). Reads only that chunk's sizes."""
    for kind, trak in _boxes(file, *moov):
        if kind != b"trak":
            continue
        mdia = _child(file, trak, b"mdia")
        file.seek(_child(file, mdia, b"hdlr")[0] + 8)
        if file.read(4) != b"vide":
            continue
        tables = dict(_boxes(file, *_child(file, _child(file, mdia, b"minf"), b"stbl")))
        wide = b"co64" in tables
        offsets = [o for (o,) in _table(file, tables[b"co64" if wide else b"stco"], "Q" if wide else "I")]
        if not offsets:
            continue
        last = max(range(len(offsets)), key=offsets.__getitem__)
        runs = _table(file, tables[b"stsc"], "III") + [(len(offsets) + 1, 0, 0)]  # (first chunk, samples each, _)
        before = per = 0  # samples in the chunks before `last`, and in `last` (chunks are numbered from 1)
        for (first, each, _), (after, _, _) in zip(runs, runs[1:]):
            if first - 1 <= last < after - 1:
                before, per = before + (last - first + 1) * each, each
                break
            before += max(0, after - first) * each
        file.seek(tables[b"stsz"][0] + 4)
        fixed, samples = struct.unpack(">II", file.read(8))
        if fixed:
            yield offsets[last] + fixed * per
            continue
        file.seek(tables[b"stsz"][0] + 12 + 4 * before)
        sizes = file.read(4 * max(0, min(per, samples - before)))
        yield offsets[last] + sum(struct.unpack(f">{len(sizes) // 4}I", sizes))


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
