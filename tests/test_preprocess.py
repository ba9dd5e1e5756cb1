"""Preprocessing: sampling, finding the sign and cropping rules; bad videos skipped and reported; restart after a kill."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import WLASL_DIR
from slr.data import preprocess as preprocess_module
from slr.data import video
from slr.data.clip import ClipSpec, crop_window, process_clip, sample_indices, sign_span
from slr.data.dataset import ClipDataset, load_set
from slr.data.metadata import load_index
from slr.data.preprocess import prepare_clips, preprocess
from slr.data.quality import counts
from slr.data.video import Span, decode, write_frames
from slr.errors import UserError

WIDTH, HEIGHT, LENGTH = 48, 32, 12  # generated videos: 12 frames of 48x32
BOX = (24, 0, 48, 32)  # the signer's box: the right half; columns 0-15 are black
SPEC = ClipSpec(num_frames=4, frame_size=16, crop="bbox", bbox_margin=0.2)


def test_sampling_spans_the_whole_clip() -> None:
    idx = sample_indices(64, 16)
    assert len(idx) == 16 and np.all(np.diff(idx) > 0)
    assert idx[0] <= 2 and idx[-1] >= 61  # first and last segments are represented
    assert np.array_equal(sample_indices(16, 16), np.arange(16))


def test_short_clips_repeat_frames_evenly() -> None:
    idx = sample_indices(5, 16)
    assert np.all(np.diff(idx) >= 0) and set(idx) == set(range(5))
    assert np.bincount(idx).max() - np.bincount(idx).min() <= 1


def _frames(length: int, width: int = WIDTH) -> np.ndarray:
    """Frame k is grey level 20k + 10, with a black band on the left (outside BOX)."""
    frames = np.zeros((length, HEIGHT, width, 3), np.uint8)
    frames[:, :, 16:] = (20 * np.arange(length) + 10)[:, None, None, None]
    return frames


def _levels(frames: list[np.ndarray] | np.ndarray) -> list[int]:
    """The grey level of each frame, read in the band's middle (rounded to the generator's steps of 10)."""
    return [int(round(float(f[8:24, -8:].mean()) / 10) * 10) for f in frames]


def test_each_video_decides_whether_its_range_applies(tmp_path: Path) -> None:
    """A video that reaches its range's end is the source (the range applies); one about as long as the range is
    the sign already cut out (taken whole); any other is clamped to what it holds."""
    path = tmp_path / "v.mp4"
    write_frames(path, _frames(LENGTH), fps=25)

    def levels(start: int, end: int) -> tuple[list[int], Span]:
        frames, span = decode(path, partial(sign_span, start, end))
        return _levels(frames), span

    assert levels(3, 5) == ([50, 70, 90], Span(2, 5, "applied"))
    assert levels(1, -1) == ([10 + 20 * k for k in range(LENGTH)], Span(0, LENGTH, "whole"))
    assert levels(3, -1)[1] == Span(2, LENGTH, "applied")  # to the end of the source
    assert levels(31, 42)[1] == Span(0, LENGTH, "ignored")  # 12 frames: the range's length, so already cut out
    assert levels(61, 70)[1] == Span(0, LENGTH, "ignored")  # 3 frames off the range's 10: still the cut sign
    assert levels(8, 30) == ([150, 170, 190, 210, 230], Span(7, LENGTH, "clamped"))  # ends inside a longer range
    assert levels(20, 27)[1] == Span(0, LENGTH, "clamped")  # ends before the range starts: whole
    assert decode(path, partial(sign_span, 1, 2))[1] == Span(0, 2, "applied")  # decoding stops at the range's end


def test_a_container_that_is_not_mp4_is_judged_by_its_frame_count(tmp_path: Path) -> None:
    """An AVI named .mp4 (OpenCV opens it by its content): whole, it decodes; cut in half, its stream ends far from
    the 30 frames its header declares, and it is truncated. Its RIFF chunks are not read as MP4 boxes."""
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (WIDTH, HEIGHT))
    for frame in _frames(30):
        writer.write(frame)
    writer.release()
    data = (tmp_path / "v.avi").read_bytes()
    path.write_bytes(data)
    assert not video.cut_off(path) and len(decode(path)[0]) == 30
    path.write_bytes(data[: len(data) // 2])
    assert not video.cut_off(path)
    with pytest.raises(video.VideoError, match="truncated"):
        decode(path)


def _box(kind: bytes, *content: bytes) -> bytes:
    body = b"".join(content)
    return struct.pack(">I4s", 8 + len(body), kind) + body


@pytest.mark.parametrize("stbl", [b"", _box(b"stbl", _box(b"stco", bytes(4), struct.pack(">II", 1, 8)))],
                         ids=["no sample table", "no sample sizes"])
def test_an_mp4_index_missing_its_tables_is_judged_by_its_frames(tmp_path: Path, stbl: bytes) -> None:
    """A video track whose index lacks a box the walk needs (no stbl, no stsz) is not a crash: the container cannot
    tell, so the frame count decides."""
    hdlr = _box(b"hdlr", bytes(8), b"vide", bytes(12))
    moov = _box(b"moov", _box(b"trak", _box(b"mdia", hdlr, _box(b"minf", stbl))))
    path = tmp_path / "v.mp4"
    path.write_bytes(_box(b"ftyp", b"isom", bytes(4)) + moov + _box(b"mdat", bytes(16)))
    assert not video.cut_off(path)


def test_writing_without_the_encoder_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "FOURCC", "XXXX")  # no OpenCV build has it: the writer does not open
    with pytest.raises(UserError, match=r"OpenCV .* cannot write .*v\.mp4 with the XXXX encoder; install the"):
        write_frames(tmp_path / "v.mp4", _frames(LENGTH), fps=25)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_crop_windows() -> None:
    assert crop_window(32, 48, BOX, "center", 0.2) == ((0, 8, 32, 32), False)
    assert crop_window(32, 48, BOX, "bbox", 0.2) == ((0, 16, 32, 32), False)  # box + margin, shifted into the frame
    assert crop_window(100, 100, (40, 40, 60, 50), "bbox", 0.5) == ((25, 30, 40, 40), False)  # square, centred
    assert crop_window(32, 48, (385, 37, 885, 720), "bbox", 0.2) == ((0, 8, 32, 32), True)  # source pixels: centre
    assert crop_window(32, 48, BOX, "none", 0.2) == ((0, 0, 32, 48), False)


def test_crop_none_pads_the_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_frames(path, _frames(LENGTH), fps=25)
    instance = load_index(_write_index(tmp_path, [("1", "train", 0, "u")])).instances[0]
    clip = np.stack(process_clip(path, instance, ClipSpec(4, 24, "none", 0.0)).images)
    assert clip.shape == (4, 24, 24, 3)
    assert clip[:, :3].max() < 8 and clip[:, -3:].max() < 8  # 48x32 -> 24x16, black bars above and below
    assert clip[-1, 12, -4].min() > 150  # the frame itself, whole: the bright band on the right


def _faststart(data: bytes) -> bytes:
    """Move an mp4's index (moov) before its data (mdat), as streaming files have it; shift the chunk offsets."""
    def atoms(buf: bytes | bytearray, start: int, end: int):
        while start < end:
            size, kind = struct.unpack(">I4s", buf[start : start + 8])
            yield kind, start, size
            start += size

    top = {kind: (start, size) for kind, start, size in atoms(data, 0, len(data))}
    moov_start, moov_size = top[b"moov"]
    moov = bytearray(data[moov_start : moov_start + moov_size])

    def patch(start: int, end: int) -> None:
        for kind, at, size in atoms(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                patch(at + 8, at + size)
            elif kind == b"stco":
                for k in range(struct.unpack(">I", moov[at + 12 : at + 16])[0]):
                    offset = at + 16 + 4 * k
                    moov[offset : offset + 4] = struct.pack(">I", struct.unpack(">I", moov[offset : offset + 4])[0]
                                                           + moov_size)

    patch(8, moov_size)
    ftyp_start, ftyp_size = top[b"ftyp"]
    rest = [data[s : s + n] for kind, s, n in atoms(data, 0, len(data)) if kind not in (b"ftyp", b"moov")]
    return data[ftyp_start : ftyp_start + ftyp_size] + bytes(moov) + b"".join(rest)


def _write_index(root: Path, instances: list[tuple[str, str, int, str]], glosses: int = 3) -> Path:
    """A WLASL_v0.3.json of `glosses` glosses; instances are (video_id, set, label, url), range 3-10, box BOX."""
    entries = [{"gloss": f"g{label}", "instances": []} for label in range(glosses)]
    for video_id, split, label, url in instances:
        entries[label]["instances"].append({
            "video_id": video_id, "split": split, "frame_start": 3, "frame_end": 10, "bbox": list(BOX),
            "signer_id": 0, "url": url, "fps": 25,
        })
    path = root / "WLASL_v0.3.json"
    path.write_text(json.dumps(entries))
    return path


def _real_ids() -> list[tuple[str, str, int]]:
    """(video_id, set, label): 3 train, 1 val, 1 test for each of the first 3 glosses, real asl100 ids if we can."""
    plan = [(split, label) for label in range(3) for split in ("train",) * 3 + ("val", "test")]
    if not (WLASL_DIR / "WLASL_v0.3.json").is_file():
        return [(f"9{k:04d}", split, label) for k, (split, label) in enumerate(plan)]
    index = load_index(WLASL_DIR / "WLASL_v0.3.json").subset("asl100")
    pools = {(s, lab): [i.video_id for i in index.of_set(s) if i.label == lab] for s, lab in set(plan)}
    return [(pools[key].pop(0), *key) for key in plan]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A raw folder (index + videos) with real WLASL ids, and the ids by role.

    Roles: missing, corrupt (cut off before its index: unreadable), truncated (a streaming file cut off), zero-frame
    (whole, its frames' bytes zeroed), short (3 frames), outside (its box lies outside the frame), dup (the same url and
    range as `dup_of`, another gloss and set); the rest are plain.
    """
    root = tmp_path_factory.mktemp("raw")
    ids = _real_ids()
    roles = dict(zip(["missing", "corrupt", "truncated", "zero_frame", "short", "outside"], [v for v, s, _ in ids
                                                                                           if s == "train"]))
    roles["dup_of"] = next(v for v, s, lab in ids if s == "val" and lab == 1)
    roles["dup"] = next(v for v, s, lab in ids if s == "test" and lab == 2)
    urls = {v: f"https://example.org/{v}.mp4" for v, _, _ in ids}
    urls[roles["dup"]] = urls[roles["dup_of"]]
    index = json.loads(_write_index(root, [(v, s, lab, urls[v]) for v, s, lab in ids]).read_text())
    for entry in index:  # WLASL's frame_end -1: to the end
        for inst in entry["instances"]:
            if inst["video_id"] in (roles["truncated"], roles["short"]):
                inst["frame_start"], inst["frame_end"] = 1, -1
            if inst["video_id"] == roles["outside"]:
                inst["bbox"] = [385, 37, 885, 720]
    (root / "WLASL_v0.3.json").write_text(json.dumps(index))
    videos = root / "videos"
    for video_id, _, _ in ids:
        if video_id != roles["missing"]:
            write_frames(videos / f"{video_id}.mp4", _frames(3 if video_id == roles["short"] else LENGTH), fps=25)
    corrupt = videos / f"{roles['corrupt']}.mp4"
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    streaming = _faststart((videos / f"{roles['truncated']}.mp4").read_bytes())
    mdat = streaming.index(b"mdat") + 4  # the index is whole in both: they open, and declare 12 frames
    (videos / f"{roles['truncated']}.mp4").write_bytes(streaming[: (mdat + len(streaming)) // 2])
    (videos / f"{roles['zero_frame']}.mp4").write_bytes(streaming[:mdat] + bytes(len(streaming) - mdat))
    return root, roles


def _run(raw_dir: Path, out: Path, **overrides) -> dict:
    args = {"num_frames": 4, "frame_size": 16, "crop": "bbox", "bbox_margin": 0.2,
            "drop_cross_split_duplicates": False, "max_missing": 0.5} | overrides
    return prepare_clips(raw_dir, out, "asl100", **args)


def test_preprocess_reports_bad_videos(raw: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    raw_dir, roles = raw
    quality = _run(raw_dir, tmp_path / "clips")
    ids = load_index(raw_dir / "WLASL_v0.3.json").instances
    train_ids = [i.video_id for i in ids if i.split == "train"]
    assert quality["train"] == {
        "listed": 9, "present": 8, "readable": 5, "short": [roles["short"]], "bbox_fallback": [roles["outside"]],
        "person_fallback": [], "range_applied": train_ids[5:], "range_ignored": [], "range_clamped": [],
        "skipped": {"missing": [roles["missing"]], "unreadable": [roles["corrupt"]],
                    "zero_frame": [roles["zero_frame"]], "truncated": [roles["truncated"]]},
    }
    assert quality["test"]["readable"] == 3 and quality["precut"] is False and quality["resized"] is False
    dup = [roles["dup_of"], roles["dup"]]
    assert quality["duplicates"] == {"groups": [dup], "cross_gloss": [dup], "cross_split": [dup], "dropped": []}
    assert counts(quality)["train"]["skipped"] == {"missing": 1, "unreadable": 1, "zero_frame": 1, "truncated": 1}
    manifest = json.loads((tmp_path / "clips" / "manifest.json").read_text())
    train = manifest["sets"]["train"]
    assert train["video_ids"] == train_ids[4:] and train["labels"] == [1, 1, 2, 2, 2]
    assert train["frames"] == [3, 8, 8, 8, 8]  # the short clip's 3 frames; the others' range 3-10
    assert train["skipped"] == {roles["missing"]: "missing", roles["corrupt"]: "unreadable",
                                roles["truncated"]: "truncated", roles["zero_frame"]: "zero_frame"}
    assert manifest["crop"] == "bbox" and manifest["num_frames"] == 4
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "manifest.json", "quality.json", "test-00000.npy", "train-00000.npy", "val-00000.npy"]
    clips, labels, skipped = load_set(tmp_path / "clips", "train")
    assert clips.shape == (5, 4, 16, 16, 3) and labels.tolist() == [1, 1, 2, 2, 2] and skipped == 4
    assert _levels(clips[0]) == [10, 30, 30, 50]  # 3 frames repeated evenly
    assert _levels(clips[2]) == [70, 110, 150, 190]  # frames 3-10 (1-based) sampled uniformly
    assert clips[2][:, :, 0].max() > 50 and clips[1][:, :, 0].max() < 20  # box crop: no black band; fallback: band
    assert not (tmp_path / ".clips-work-").exists() and [p.name for p in tmp_path.iterdir()] == ["clips"]


def test_a_precut_copy_still_cuts_a_source_video(raw: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A copy that says it is pre-cut, whose videos reach their ranges' end (12 frames, range 3-10): each is a source
    video, so its range applies; a video cut to its range in the same copy is taken whole."""
    precut = tmp_path / "raw"
    (precut / "videos").mkdir(parents=True)
    (precut / "WLASL_v0.3.json").symlink_to(raw[0] / "WLASL_v0.3.json")
    for clip in (raw[0] / "videos").iterdir():
        (precut / "videos" / clip.name).symlink_to(clip)
    cut = raw[1]["dup_of"]  # a val clip, cut to its range 3-10 as WLASL's start_kit cuts
    (precut / "videos" / f"{cut}.mp4").unlink()
    write_frames(precut / "videos" / f"{cut}.mp4", _frames(LENGTH)[2:10], fps=25)
    (precut / "source.json").write_text('{"source": "release", "precut": true}')
    quality = _run(precut, tmp_path / "clips", crop="center", drop_cross_split_duplicates=True)
    assert quality["precut"] is True and quality["duplicates"]["dropped"] == [raw[1]["dup"]]
    assert quality["test"]["listed"] == 2 and quality["train"]["bbox_fallback"] == []
    short = raw[1]["short"]  # its range is the whole video (1, -1): nothing to decide
    stored = json.loads((tmp_path / "clips" / "manifest.json").read_text())["sets"]
    assert quality["train"]["range_applied"] == [v for v in stored["train"]["video_ids"] if v != short]
    val_ids = stored["val"]["video_ids"]
    assert quality["val"]["range_ignored"] == [cut] and quality["val"]["range_applied"] == [v for v in val_ids
                                                                                          if v != cut]
    clips, _, _ = load_set(tmp_path / "clips", "train")
    assert _levels(clips[2]) == [70, 110, 150, 190]  # frames 3-10 of the 12
    val, _, _ = load_set(tmp_path / "clips", "val")
    assert _levels(val[val_ids.index(cut)]) == [70, 110, 150, 190]  # its 8 frames, whole: the same frames


def test_too_many_missing_fails_before_decoding(raw: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"train set: 4 of 9 videos missing or unreadable \(44%, over preprocess.max_m"):
        _run(raw[0], tmp_path / "clips", max_missing=0.3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "WLASL_v0.3.json").symlink_to(raw[0] / "WLASL_v0.3.json")
    with pytest.raises(UserError, match="train set: 9 of 9 videos missing"):
        _run(tmp_path / "empty", tmp_path / "clips2")
    assert not list(tmp_path.glob(".clips2-work-*"))  # failed before any work


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(raw: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of an uninterrupted run with shards of 2 clips."""
    out = tmp_path_factory.mktemp("reference") / "clips"
    index = load_index(raw[0] / "WLASL_v0.3.json")
    preprocess(index, raw[0] / "videos", out, SPEC, shard_size=2, workers=2)
    return _files(out)


def test_restart_after_an_error_redoes_only_the_rest(raw: tuple[Path, dict[str, str]], reference: dict[str, bytes],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    index = load_index(raw[0] / "WLASL_v0.3.json")
    sealed = []

    def seal_then_fail(work: Path, set_name: str, number: int, records: list[dict]) -> None:
        if len(sealed) == 3:
            raise KeyboardInterrupt
        sealed.append(f"{set_name}-{number}")
        seal(work, set_name, number, records)

    seal = preprocess_module._seal
    monkeypatch.setattr(preprocess_module, "_seal", seal_then_fail)
    with pytest.raises(KeyboardInterrupt):
        preprocess(index, raw[0] / "videos", tmp_path / "clips", SPEC, shard_size=2, workers=2)
    assert sealed == ["train-0", "train-1", "train-2"]
    monkeypatch.setattr(preprocess_module, "_seal", lambda *args: sealed.append(f"{args[1]}-{args[2]}") or seal(*args))
    preprocess(index, raw[0] / "videos", tmp_path / "clips", SPEC, shard_size=2, workers=2)
    assert "6 of 15 clips already done" in capsys.readouterr().out
    assert sealed[3:] == ["train-3", "train-4", "val-0", "val-1", "test-0", "test-1"]
    assert _files(tmp_path / "clips") == reference


KILLED_RUN = """
import sys, time
from pathlib import Path
from slr.data import clip, preprocess as module
from slr.data.metadata import load_index
process_clip = module.process_clip

def slow(*args):
    time.sleep(0.15)
    return process_clip(*args)

module.process_clip = slow
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
spec = clip.ClipSpec(num_frames=4, frame_size=16, crop="bbox", bbox_margin=0.2)
module.preprocess(load_index(raw / "WLASL_v0.3.json"), raw / "videos", out, spec, shard_size=2, workers=1)
"""


def test_restart_after_kill_equals_an_uninterrupted_run(raw: tuple[Path, dict[str, str]], reference: dict[str, bytes],
                                                        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clips"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(raw[0]), str(out)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(".clips-work-*/train-00003.json"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(child.pid, signal.SIGKILL)  # the run and its pool worker, mid-shard
    child.wait()
    assert not out.exists() and not list(tmp_path.glob(".clips-work-*/manifest.json"))  # killed before the end
    preprocess(load_index(raw[0] / "WLASL_v0.3.json"), raw[0] / "videos", out, SPEC, shard_size=2, workers=2)
    done = int(capsys.readouterr().out.split("resuming ")[1].split(": ")[1].split(" of")[0])
    assert 6 <= done < 15
    assert _files(out) == reference


def test_loader_reads_across_shards(raw: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    index = load_index(raw[0] / "WLASL_v0.3.json")
    preprocess(index, raw[0] / "videos", tmp_path / "clips", SPEC, shard_size=2, workers=1)
    clips, labels, _ = load_set(tmp_path / "clips", "train")
    whole = np.asarray(clips)
    assert whole.shape == (5, 4, 16, 16, 3) and np.array_equal(clips[1:4], whole[1:4])
    assert np.array_equal(clips[-1], whole[4]) and np.array_equal(clips[::2], whole[::2])
    with pytest.raises(IndexError):
        clips[5]
    dataset = ClipDataset(tmp_path / "clips", "train", 12, train=True, flip=False, seed=0)
    clip, label = dataset[3]
    assert tuple(clip.shape) == (4, 12, 12, 3) and label == labels[3]
