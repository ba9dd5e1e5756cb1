"""The raw contract from each data.source: a local folder, local archives, the synthetic set, and the clear errors
for a copy that is not usable."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from slr.data.fingerprint import folder_md5
from slr.data.sources import from_local, materialise
from slr.errors import UserError
from slr.params import LocalParams, ReleaseParams, SyntheticParams
from wlasl_files import GLOSSES, index_entries, release_archives, video_bytes, video_ids

EMPTY = "d751713988987e9331980363e24189ce.dir"


def _data_dvc(root: Path, md5: str, path: str = "wlasl") -> Path:
    """A .dvc file like the repository's, versioning `path` (relative to it) with `md5` recorded."""
    (root / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  hash: md5\n  path: {path}\n  cache: false\n")
    return root / "data.dvc"


def _local_copy(root: Path, ids: list[str] | None = None) -> Path:
    """A copy as public WLASL folders hold it: the index, an nslt split file, and videos/ (some missing)."""
    (root / "videos").mkdir(parents=True)
    (root / "WLASL_v0.3.json").write_text(json.dumps(index_entries()))
    (root / "nslt_100.json").write_text(json.dumps({"00000": {"subset": "train", "action": [0, 1, 40]}}))
    for video_id in video_ids()[:-2] if ids is None else ids:
        (root / "videos" / f"{video_id}.mp4").write_bytes(video_bytes(video_id))
    (root / "videos" / "notes.mp4").write_bytes(b"not a WLASL video id")
    return root


def _read(raw: Path, name: str) -> object:
    return json.loads((raw / name).read_text())


def test_local_folder_is_linked_into_the_raw_contract(tmp_path: Path) -> None:
    copy = _local_copy(tmp_path / "wlasl")
    fingerprint = folder_md5(copy)
    report = from_local(copy, tmp_path / "raw", _data_dvc(tmp_path, fingerprint.md5))
    raw = tmp_path / "raw"
    assert _read(raw, "WLASL_v0.3.json") == index_entries()
    assert _read(raw, "source.json") == {"source": "local", "precut": True, "resized": False,  # start_kit's clips
                                         "copy": fingerprint.as_dict()}
    assert sorted(p.stem for p in (raw / "videos").iterdir()) == video_ids()[:-2]
    video = video_ids()[0] + ".mp4"
    assert (raw / "videos" / video).stat().st_ino == (copy / "videos" / video).stat().st_ino  # hardlinked
    assert not (raw / "splits").exists()  # nslt files are not in WLASL_v0.3 format...
    assert _read(raw, "nslt_100.json") == _read(copy, "nslt_100.json")  # ...but preprocess compares them
    assert report == {
        "source": "local", "copy": fingerprint.as_dict(), "glosses": len(GLOSSES), "instances": 2 * len(GLOSSES),
        "videos": len(video_ids()) - 2, "instances_without_video": 2, "path": str(copy),
        "data_dvc": {"file": str(tmp_path / "data.dvc"), "md5": fingerprint.md5, "matches": True},
        "index": "WLASL_v0.3.json", "split_files": [], "nslt_files": ["nslt_100.json"],
    }
    assert from_local(copy, raw, _data_dvc(tmp_path, fingerprint.md5, "elsewhere"))["data_dvc"] is None


def test_a_copy_other_than_data_dvc_records_is_named_in_one_line(tmp_path: Path, capsys) -> None:
    copy = _local_copy(tmp_path / "wlasl")
    before = folder_md5(copy)
    (copy / "videos" / f"{video_ids()[0]}.mp4").unlink()  # a video removed since data.dvc recorded the copy
    report = from_local(copy, tmp_path / "raw", _data_dvc(tmp_path, before.md5))
    assert report["copy"]["md5"] != before.md5 and report["data_dvc"]["matches"] is False
    lines = [line for line in capsys.readouterr().out.splitlines() if "data.dvc" in line]
    assert lines == [f"download: {copy} holds another copy than {tmp_path / 'data.dvc'} records (md5 "
                     f"{report['copy']['md5']}, {before.md5} recorded): run `dvc add {copy}` and commit "
                     f"{tmp_path / 'data.dvc'} to version the copy these results come from"]


def test_placeholders_are_not_part_of_the_copy(tmp_path: Path) -> None:
    copy = tmp_path / "wlasl"
    copy.mkdir()
    assert folder_md5(copy).md5 == EMPTY
    (copy / "README.md").write_text("put your copy here")
    (copy / ".gitignore").write_text("*")
    assert folder_md5(copy).md5 == EMPTY  # what DVC computes with the repository's .dvcignore


def test_local_archives_are_unpacked(tmp_path: Path) -> None:
    splits, videos = release_archives(tmp_path / "wlasl")
    report = from_local(tmp_path / "wlasl", tmp_path / "raw")
    raw = tmp_path / "raw"
    assert _read(raw, "WLASL_v0.3.json") == index_entries()
    assert _read(raw / "splits", "asl2.json") == index_entries(GLOSSES[:2])
    assert (raw / "videos" / f"{video_ids()[0]}.mp4").read_bytes() == video_bytes(video_ids()[0])
    assert sorted(report["archives"]) == ["WLASL2000.zip", "splits.zip"]
    assert report["archives"]["splits.zip"]["bytes"] == splits.stat().st_size
    assert (report["index"], report["split_files"], report["videos"]) == ("asl3.json", ["asl2.json", "asl3.json"], 5)
    assert sorted(p.name for p in raw.iterdir()) == ["WLASL_v0.3.json", "source.json", "splits", "videos"]
    assert _read(raw, "source.json") == {"source": "local", "precut": True, "resized": True,  # the 256x256 release
                                         "copy": folder_md5(tmp_path / "wlasl").as_dict()}


def test_synthetic_is_not_precut(tmp_path: Path) -> None:
    synthetic = SyntheticParams(seed=0, pairs=1, signers=1, train_per_class=1, val_per_class=1, test_per_class=1,
                                video_size=32, fps=25)
    release = ReleaseParams(("https://example.invalid/s.zip",), "", ("https://example.invalid/v.zip",), "")
    report = materialise("synthetic", synthetic, release, LocalParams("nowhere"), tmp_path / "raw", tmp_path / "dl")
    source = _read(tmp_path / "raw", "source.json")
    assert (source["source"], source["precut"], source["resized"], source["copy"]["files"]) == (
        "synthetic", False, False, 7)  # index + videos
    assert report == {"source": "synthetic", "copy": source["copy"], "glosses": 2, "instances": 6, "videos": 6,
                      "instances_without_video": 0}
    assert not (tmp_path / "dl").exists()


def _no_index(root: Path) -> None:
    (root / "WLASL_v0.3.json").unlink()


def _no_videos(root: Path) -> None:
    shutil.rmtree(root / "videos")


def _unnamed_videos(root: Path) -> None:
    for video in (root / "videos").glob("0*.mp4"):
        video.rename(video.with_name(f"clip_{video.name}"))


def _two_copies(root: Path) -> None:
    shutil.copytree(root / "videos", root / "raw_videos")


def _not_a_prefix(root: Path) -> None:
    (root / "asl2.json").write_text(json.dumps(index_entries(["book", "cousin"])))


@pytest.mark.parametrize(("damage", "message"), [
    (_no_index, "no WLASL_v0.3.json (nor split files in its format, e.g. asl2000.json) found; looked for *.json"),
    (_no_videos, "no videos found; looked for <video_id>.mp4 files anywhere below it"),
    (_unnamed_videos, "is named by a video_id of WLASL_v0.3.json"),
    (_two_copies, "found twice:"),
    (_not_a_prefix, "asl2.json is not the first 2 glosses of WLASL_v0.3.json (gloss #1 is 'cousin' there, 'drink'"),
])
def test_unusable_copies_fail_clearly(tmp_path: Path, damage, message: str) -> None:
    copy = _local_copy(tmp_path / "wlasl")
    damage(copy)
    with pytest.raises(UserError, match=re.escape(message)) as exc:
        from_local(copy, tmp_path / "raw")
    assert str(tmp_path / "wlasl") in str(exc.value) or "asl2.json" in str(exc.value)
    assert not (tmp_path / "raw").exists()


def _instance(root: Path, **fields: object) -> None:
    entries = index_entries()
    entries[1]["instances"][0].update(fields)
    (root / "WLASL_v0.3.json").write_text(json.dumps(entries))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: _instance(root, video_id="../../secret"), "gloss #1 ('drink'), instance #0: video_id '../../secret' "
                                                            "is not a plain file name"),
    (lambda root: _instance(root, video_id="/etc/passwd"), "video_id '/etc/passwd' is not a plain file name"),
    (lambda root: _instance(root, video_id="a\\b"), "is not a plain file name"),
    (lambda root: _instance(root, video_id=".."), "is not a plain file name"),
    (lambda root: _instance(root, bbox=[0, 0, 10]), "instance #0: bbox must be four numbers [x1, y1, x2, y2], got [0, 0, 10]"),
    (lambda root: _instance(root, frame_start="1"), "instance #0: frame_start must be an integer, got '1'"),
    (lambda root: _instance(root, signer_id=True), "signer_id must be an integer, got True"),
    (lambda root: (root / "WLASL_v0.3.json").write_text('[{"gloss": "book", "instances": [}]'),
     "WLASL_v0.3.json: not valid JSON (a WLASL copy's file): Expecting value at line 1 column 34"),
    (lambda root: (root / "nslt_100.json").write_text("{\n  oops"),
     "nslt_100.json: not valid JSON (a WLASL copy's file): Expecting property name enclosed in double quotes at "
     "line 2 column 3"),
])
def test_hostile_or_broken_copies_are_refused_in_one_line(tmp_path: Path, damage, message: str) -> None:
    copy = _local_copy(tmp_path / "wlasl")
    damage(copy)
    with pytest.raises(UserError, match=re.escape(message)) as exc:
        from_local(copy, tmp_path / "raw")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "raw").exists()


def test_links_that_leave_the_copy_are_refused_before_reading_through_them(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret.mp4"
    secret.parent.mkdir()
    secret.write_bytes(b"not yours")
    copy = _local_copy(tmp_path / "wlasl", ids=video_ids()[1:])
    (copy / "videos" / f"{video_ids()[0]}.mp4").symlink_to(secret)
    with pytest.raises(UserError, match=re.escape(f"{video_ids()[0]}.mp4 is a link to {secret}, outside the copy")):
        from_local(copy, tmp_path / "raw")
    (copy / "videos" / f"{video_ids()[0]}.mp4").unlink()
    (copy / "more").symlink_to(secret.parent, target_is_directory=True)  # a folder link out of the copy
    with pytest.raises(UserError, match="more is a link to .*outside, outside the copy"):
        from_local(copy, tmp_path / "raw")
    (copy / "more").unlink()
    (copy / "videos" / f"{video_ids()[0]}.mp4").symlink_to(copy / "videos" / f"{video_ids()[1]}.mp4")
    assert from_local(copy, tmp_path / "raw")["videos"] == len(video_ids())  # a link inside the copy is fine


def test_missing_folder_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape("is not a folder; put a WLASL copy there (videos + WLASL_v0.3.json, "
                                                  "or splits.zip + WLASL2000.zip) or fix data.local.path")):
        from_local(tmp_path / "wlasl", tmp_path / "raw")


def test_real_index_with_a_partial_video_set(wlasl_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "wlasl"
    (copy / "videos").mkdir(parents=True)
    shutil.copyfile(wlasl_dir / "WLASL_v0.3.json", copy / "WLASL_v0.3.json")
    shutil.copyfile(wlasl_dir / "nslt_100.json", copy / "nslt_100.json")
    ids = list(json.loads((wlasl_dir / "nslt_100.json").read_text()))[:3]
    for video_id in ids:
        (copy / "videos" / f"{video_id}.mp4").write_bytes(video_bytes(video_id))
    report = from_local(copy, tmp_path / "raw")
    assert (report["glosses"], report["instances"], report["videos"]) == (2000, 21083, 3)
    assert report["instances_without_video"] == 21083 - 3
