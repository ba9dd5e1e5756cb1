"""Real WLASL clips as copies hold them: a long uncut source beside cut clips, containers that declare more frames
than decode, files cut off mid-download, and a local copy of them all preprocessed against the real index.

The clips are ../shared/wlasl-real (WLASL_REAL overrides the location; see its README and clips.json); every test
here skips, naming the folder, where it is absent. The videos built from them (a long video joined from real clips,
the same sign cut out of it, copies cut short) are written into each test's tmp_path, never into the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from slr.data.clip import crop_window, sample_indices, sign_span, to_square
from slr.data.dataset import load_set
from slr.data.metadata import SETS, load_index
from slr.data.preprocess import prepare_clips
from slr.data.quality import REASONS, RANGES
from slr.data.sources import from_local
from slr.data.store import MANIFEST
from slr.data.video import VideoError, decode, read_frames, write_frames
from slr.files import read_json

REAL_DIR = Path(os.environ.get("WLASL_REAL", REPO.parent / "shared" / "wlasl-real"))
SIZE = 32  # stored frame size: small, the tests look at which frames are sampled, not at their detail


@pytest.fixture(scope="module")
def real() -> dict[str, dict]:
    """clips.json of the real clips, by video id."""
    if not (REAL_DIR / "clips.json").is_file():
        pytest.skip(f"real WLASL clips not found in {REAL_DIR} (set WLASL_REAL to their folder)")
    return {clip["video_id"]: clip for clip in json.loads((REAL_DIR / "clips.json").read_text())}


def _video(video_id: str) -> Path:
    return REAL_DIR / "videos" / f"{video_id}.mp4"


def _small(real: dict[str, dict], count: int) -> list[str]:
    """`count` real clips of the smallest resolution (288x192), in id order: one size, so they can be joined."""
    return sorted(v for v, c in real.items() if c["decoded"]["height"] == 192)[:count]


def _processed(path: Path) -> list[np.ndarray]:
    """Every frame of `path` as preprocessing stores it with crop "center" at SIZE (decoded the same way)."""
    frames, _ = decode(path)
    window, _ = crop_window(*frames[0].shape[:2], None, "center", 0.0)
    return [to_square(frame, window, SIZE) for frame in frames]


def _index(root: Path, instances: list[tuple[str, str, int, int]]) -> None:
    """root/WLASL_v0.3.json: one gloss per instance (video_id, set, frame_start, frame_end), and a source.json of a
    local copy (pre-cut, as WLASL's start_kit writes copies)."""
    entries = [{"gloss": f"g{k}", "instances": [{
        "video_id": video_id, "split": split, "frame_start": start, "frame_end": end, "bbox": [0, 0, 10, 10],
        "signer_id": 0, "url": f"https://example.org/{video_id}", "fps": 25}]}
        for k, (video_id, split, start, end) in enumerate(instances)]
    (root / "WLASL_v0.3.json").write_text(json.dumps(entries))
    (root / "source.json").write_text('{"source": "local", "precut": true, "resized": false}')


def _prepare(raw: Path, out: Path, num_frames: int, split: str = "asl100", crop: str = "center",
             max_missing: float = 0.0) -> dict:
    return prepare_clips(raw, out, split, num_frames=num_frames, frame_size=SIZE, crop=crop, bbox_margin=0.2,
                         drop_cross_split_duplicates=False, max_missing=max_missing)


def _stored(clips: Path, set_name: str) -> dict[str, np.ndarray]:
    """The stored clips of a set, by video id."""
    manifest = read_json(clips / MANIFEST)["sets"][set_name]
    array, _, _ = load_set(clips, set_name)
    return {video_id: np.asarray(array[k]) for k, video_id in enumerate(manifest["video_ids"])}


def test_a_long_source_video_is_cut_to_its_sign(real: dict[str, dict], tmp_path: Path) -> None:
    """Five real clips joined into one long video, its instance the middle clip's frames: the range applies there
    (the video reaches its end), and the clip sampled is the middle clip, as the clip itself gives it where a copy
    holds it already cut (range ignored); sampling the whole video, as a copy taken for pre-cut did, is not."""
    ids = _small(real, 5)
    parts = [read_frames(_video(v)) for v in ids]
    first = sum(len(p) for p in parts[:2])
    length = len(parts[2])
    raw = tmp_path / "raw"
    write_frames(raw / "videos" / "source.mp4", np.concatenate(parts), fps=25)
    shutil.copyfile(_video(ids[2]), raw / "videos" / "cut.mp4")
    _index(raw, [("source", "test", first + 1, first + length), ("cut", "test", first + 1, first + length)])
    quality = _prepare(raw, tmp_path / "clips", num_frames=8)

    assert quality["test"]["range_applied"] == ["source"] and quality["test"]["range_ignored"] == ["cut"]
    assert read_json(tmp_path / "clips" / MANIFEST)["sets"]["test"]["frames"] == [length, length]
    stored = _stored(tmp_path / "clips", "test")
    frames = _processed(raw / "videos" / "source.mp4")
    inside = [first + int(k) for k in sample_indices(length, 8)]
    assert np.array_equal(stored["source"], np.stack([frames[k] for k in inside]))  # frames of the range only

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b).mean())

    spread = np.stack([frames[int(k)] for k in sample_indices(len(frames), 8)])  # the range ignored
    assert distance(stored["source"], stored["cut"]) < distance(spread, stored["cut"]) / 3


def test_containers_that_over_count_keep_their_clips(real: dict[str, dict], tmp_path: Path) -> None:
    """The real clips whose container declares more frames than decode (01377: 25 declared, 22 decoded) are intact:
    each is kept, sampled from the frames it has, and counted as short where that is fewer than num_frames."""
    over = sorted(v for v, c in real.items() if c["decoded"]["declared_frames"] > c["decoded"]["frames"])
    if not over:
        pytest.skip(f"no clip of {REAL_DIR} declares more frames than decode")
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    for video_id in over:
        shutil.copyfile(_video(video_id), raw / "videos" / f"{video_id}.mp4")
    _index(raw, [(v, "train", 1, -1) for v in over])
    num_frames = 32
    quality = _prepare(raw, tmp_path / "clips", num_frames)

    decoded = {v: real[v]["decoded"]["frames"] for v in over}
    assert quality["train"]["readable"] == len(over) and not any(quality["train"]["skipped"].values())
    assert quality["train"]["short"] == [v for v in over if decoded[v] < num_frames]
    assert read_json(tmp_path / "clips" / MANIFEST)["sets"]["train"]["frames"] == [decoded[v] for v in over]
    for video_id, clip in _stored(tmp_path / "clips", "train").items():
        frames = _processed(raw / "videos" / f"{video_id}.mp4")
        assert len(frames) == decoded[video_id]
        assert np.array_equal(clip, np.stack([frames[k] for k in sample_indices(len(frames), num_frames)]))


def _index_end(data: bytes) -> int | None:
    """Where an MP4's index (moov) ends, if it comes before the media data (mdat); None if it comes after."""
    start = 0
    while start + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        if kind == b"mdat":
            return None
        if kind == b"moov":
            return start + size
        start += size
    raise AssertionError("no moov or mdat box")


def test_files_cut_off_mid_download_give_no_clip(real: dict[str, dict], tmp_path: Path) -> None:
    """Every real clip with the back half of its bytes removed, and every one whose index comes first cut just
    after its index, is reported truncated (it opens, and its index points past its end) or unreadable (its index
    was at the end, and is gone)."""
    reasons = {}
    for video_id in real:
        data = _video(video_id).read_bytes()
        cuts = {"half": len(data) // 2}
        if (end := _index_end(data)) is not None:
            cuts["after_index"] = end + 16  # the index and the headers of the boxes after it
        for name, size in cuts.items():
            path = tmp_path / f"{video_id}-{name}.mp4"
            path.write_bytes(data[:size])
            with pytest.raises(VideoError) as error:
                decode(path, partial(sign_span, 1, -1))
            reasons[video_id, name] = error.value.reason
            path.unlink()
    front = {v for v, name in reasons if name == "after_index"}
    assert {r for (v, _), r in reasons.items() if v in front} == {"truncated"}
    assert {r for (v, _), r in reasons.items() if v not in front} == {"unreadable"}
    assert front and len(front) < len(real)  # both kinds are among the real clips


def _local_copy(real: dict[str, dict], wlasl: Path, copy: Path) -> dict[str, str]:
    """A local WLASL copy: the real index and the real clips, plus videos made from real clips for four instances
    of the index whose video the clips lack. Returns those four ids by what they hold: "source" (real clips joined
    into a long video that holds its instance's range), "cut" (its range already cut out of such a video),
    "truncated" (a real clip whose index comes first, its back half removed) and "unreadable" (one whose index
    comes last, cut the same way)."""
    (copy / "videos").mkdir(parents=True)
    shutil.copyfile(wlasl / "WLASL_v0.3.json", copy / "WLASL_v0.3.json")
    for video_id in real:
        shutil.copyfile(_video(video_id), copy / "videos" / f"{video_id}.mp4")
    index = load_index(copy / "WLASL_v0.3.json").subset("asl2000")
    ranged = sorted((i for i in index.instances if i.video_id not in real and i.frame_end != -1 and i.frame_start > 4),
                    key=lambda i: (i.frame_end, i.video_id))  # ranges that start after the first frames, shortest
    source, cut, truncated, unreadable = ranged[:4]
    joined = np.concatenate([read_frames(_video(v)) for v in _small(real, 4)])
    assert len(joined) > max(source.frame_end, cut.frame_end)
    write_frames(copy / "videos" / f"{source.video_id}.mp4", joined, fps=25)
    write_frames(copy / "videos" / f"{cut.video_id}.mp4", joined[cut.frame_start - 1 : cut.frame_end], fps=25)
    front = next(v for v in sorted(real) if _index_end(_video(v).read_bytes()) is not None)
    back = next(v for v in sorted(real) if _index_end(_video(v).read_bytes()) is None)
    for instance, video_id in ((truncated, front), (unreadable, back)):
        data = _video(video_id).read_bytes()
        (copy / "videos" / f"{instance.video_id}.mp4").write_bytes(data[: len(data) // 2])
    return {"source": source.video_id, "cut": cut.video_id, "truncated": truncated.video_id,
            "unreadable": unreadable.video_id}


def test_a_local_copy_of_real_clips_at_asl2000(real: dict[str, dict], wlasl_dir: Path, tmp_path: Path) -> None:
    """The whole path a user takes with a partial local copy (download stage's `local` source, then preprocess at
    asl2000 with crop bbox): every instance gives a clip or is counted under a reason true of it, the counts add up
    to the index, and every clip is sampled from its sign alone. Prints the report's counts (the issue's log)."""
    made = _local_copy(real, wlasl_dir, tmp_path / "copy")
    from_local(tmp_path / "copy", tmp_path / "raw")
    index = load_index(tmp_path / "raw" / "WLASL_v0.3.json").subset("asl2000")
    present = {p.stem for p in (tmp_path / "raw" / "videos").glob("*.mp4")}
    needed = max(sum(i.video_id not in present for i in index.of_set(s)) / len(index.of_set(s)) for s in SETS)
    num_frames = 32  # more than the shortest real clips decode (22 frames): some are short
    quality = _prepare(tmp_path / "raw", tmp_path / "clips", num_frames, split="asl2000", crop="bbox",
                       max_missing=needed)
    manifest = read_json(tmp_path / "clips" / MANIFEST)["sets"]

    print(f"\nlocal copy: {len(real)} real clips + 4 made of them ({made}); asl2000, crop bbox, {num_frames}x{SIZE}x{SIZE}, "
          f"max_missing {needed:.4f}")
    for name in SETS:
        report, listed = quality[name], index.of_set(name)
        skipped = report["skipped"]
        ranges = ", ".join(f"range_{how} {report['range_' + how]}" for how in RANGES)
        print(f"{name}: listed {report['listed']}, present {report['present']}, readable {report['readable']}; "
              f"skipped {', '.join(f'{r} {len(skipped[r])}' for r in REASONS)}; {ranges}; "
              f"short {len(report['short'])} {report['short']}; bbox_fallback {len(report['bbox_fallback'])}")
        # The counts add up to the index.
        assert report["listed"] == len(listed) and report["present"] == sum(i.video_id in present for i in listed)
        assert report["readable"] + sum(map(len, skipped.values())) == report["listed"]
        # Each reason is true of its clips: no file; the two cut copies; nothing else failed.
        assert set(skipped["missing"]) == {i.video_id for i in listed} - present
        for reason in ("truncated", "unreadable"):
            assert skipped[reason] == [made[reason]] * (made[reason] in {i.video_id for i in listed})
        assert skipped["zero_frame"] == []
        # Each clip sampled from its sign: a real clip whole (its range is the whole video), the long video
        # within its range, the cut one whole; the frames counted are the sign's.
        spans = {i.video_id: sign_span(i.frame_start, i.frame_end, _count(real, made, i.video_id, tmp_path))
                 for i in listed if i.video_id in manifest[name]["video_ids"]}
        assert manifest[name]["frames"] == [s.stop - s.start for s in spans.values()]
        for how in RANGES:
            assert report[f"range_{how}"] == [v for v, s in spans.items() if s.how == how]
        assert report["short"] == [v for v, s in spans.items() if s.stop - s.start < num_frames]
    taken = {how: {v for s in SETS for v in quality[s][f"range_{how}"]} for how in RANGES}
    assert taken == {"applied": {made["source"]}, "ignored": {made["cut"]}, "clamped": set()}
    assert sum(quality[s]["listed"] for s in SETS) == len(index.instances)
    assert sum(quality[s]["readable"] for s in SETS) == len(real) + 2


def _count(real: dict[str, dict], made: dict[str, str], video_id: str, root: Path) -> int:
    """The frames a stored video decodes: clips.json's count for a real clip, decoded here for one made here."""
    if video_id in real:
        return real[video_id]["decoded"]["frames"]
    return len(decode(root / "raw" / "videos" / f"{video_id}.mp4")[0])
