"""The download stage's one job: materialise the raw dataset for `data.source` (synthetic, release or local).

Whatever the source, `data/raw` ends up in one shape, which preprocess reads: `WLASL_v0.3.json` (the index),
`videos/<video_id>.mp4`, and `source.json` (`{"source", "precut", "resized", "copy"}`); release and local copies
also keep the split files they came with under `splits/`. `copy` is the fingerprint of the files the raw data was
made from (the md5 DVC computes for a folder: `slr.data.fingerprint`); it travels through the clips' manifest and
the checkpoint into every result. Each source returns the download report: what was used and what it holds, with no
timestamps, so a rerun writes it unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from slr.data.download import ManualDownload, extract_zip, fetch, sha256_file
from slr.data.fingerprint import Fingerprint, copy_files, files_md5, folder_md5
from slr.data.metadata import load_index, parse_json
from slr.data.synthetic import generate
from slr.errors import UserError
from slr.files import atomic_dir, write_json
from slr.params import LocalParams, ReleaseParams, SyntheticParams

INDEX = "WLASL_v0.3.json"
ARCHIVES = {"splits": "splits.zip", "videos": "WLASL2000.zip"}  # the names the original README downloads to
# WLASL's start_kit writes <video_id>.mp4 cut to the instance's frame range where it can, and the release holds such
# clips; the synthetic videos are full length, with idle frames around the sign. Preprocess reports this, and decides
# clip by clip (clip.sign_span): a local copy can hold a long source video beside cut clips.
PRECUT = {"synthetic": False, "release": True, "local": True}
# The release archives' clips were also resized to 256x256, so WLASL's boxes (source pixels) do not fit them; the
# start_kit writes clips at the source's resolution, and the synthetic boxes are drawn at the videos' own size.
# `resized` in source.json: True for a copy unpacked from the archives (source release, or local archives).
NSLT_FILES = {f"nslt_{n}.json" for n in (100, 300, 1000, 2000)}
# JSON files a WLASL copy is known by: when one of these does not parse, the copy is broken (not just odd)
KNOWN_JSON = re.compile(r"^(WLASL_v[\d.]+|asl\d+|nslt_\d+)\.json$")


def materialise(
    source: str,
    synthetic: SyntheticParams,
    release: ReleaseParams,
    local: LocalParams,
    out_dir: Path,
    downloads: Path,
    data_dvc: Path | None = None,
) -> dict:
    """Write the raw dataset of `source` to `out_dir` (atomically) and return the download report.

    Args:
        downloads: where release archives (and their resumable .part files) persist between runs.
        data_dvc: the .dvc file that may version the local copy; its record is compared with the copy read.
    """
    if source == "synthetic":
        return from_synthetic(synthetic, out_dir)
    if source == "release":
        return from_release(release, out_dir, downloads, hand_dir=Path(local.path))
    return from_local(Path(local.path), out_dir, data_dvc)


def from_synthetic(params: SyntheticParams, out_dir: Path) -> dict:
    with atomic_dir(out_dir) as tmp:
        generate(params, tmp)
        return _finish(tmp, "synthetic", folder_md5(tmp), resized=False)


def from_release(release: ReleaseParams, out_dir: Path, downloads: Path, hand_dir: Path) -> dict:
    """Download (or reuse) the two release archives, each from the first of its URLs that serves it, verify them,
    and unpack them into the raw layout. The report names the URL that served each archive."""
    archives = {}
    for name, filename in ARCHIVES.items():
        urls, sha256 = getattr(release, f"{name}_urls"), getattr(release, f"{name}_sha256")
        param = f"data.release.{name}_sha256"
        try:
            got = fetch(urls, downloads / filename, sha256, param)
        except ManualDownload as exc:
            raise UserError(f"could not download {filename}: {exc}; {_by_hand(release, hand_dir)}") from None
        if not got.pinned:
            print(f"download: {filename} sha256 {got.sha256} (to enforce it, set {param}: {got.sha256})")
        archives[name] = {"url": got.url, "file": filename, "bytes": got.bytes, "sha256": got.sha256,
                          "pinned": got.pinned}
    copy = files_md5({filename: downloads / filename for filename in ARCHIVES.values()}, "the release archives")
    with atomic_dir(out_dir) as tmp:
        report = _from_archives([downloads / filename for filename in ARCHIVES.values()], tmp)
        return {**_finish(tmp, "release", copy, resized=True), "archives": archives, **report}


def _by_hand(release: ReleaseParams, hand_dir: Path) -> str:
    steps = " and ".join(
        f"{filename} ({' or '.join(getattr(release, f'{name}_urls'))}) to {hand_dir / filename}"
        for name, filename in ARCHIVES.items()
    )
    return f"download by hand {steps}, then set data.source: local"


def from_local(path: Path, out_dir: Path, data_dvc: Path | None = None) -> dict:
    """Link (or unpack) a WLASL copy at `path` into the raw layout: videos + index, or the release archives.

    The copy is fingerprinted as a whole (DVC's md5 of the folder): where `data_dvc` versions this folder and records
    another md5, one line says how to record this copy.
    """
    if not path.is_dir():
        raise UserError(
            f"data.local.path {path} is not a folder; put a WLASL copy there (videos + {INDEX}, or "
            f"{' + '.join(ARCHIVES.values())}) or fix data.local.path"
        )
    copy = folder_md5(path)  # first: it refuses links that leave the copy before anything is read through them
    zips = sorted(p for p in path.glob("*.zip") if not p.name.startswith("."))
    with atomic_dir(out_dir) as tmp:
        if zips:
            archives = {z.name: {"bytes": z.stat().st_size, "sha256": sha256_file(z)} for z in zips}
            report = {"archives": archives, **_from_archives(zips, tmp)}
        else:
            report = _assemble(path, str(path), tmp)
        versioned = _versioned(data_dvc, path, copy)
        return {**_finish(tmp, "local", copy, resized=bool(zips)), "path": str(path), "data_dvc": versioned, **report}


def _versioned(data_dvc: Path | None, path: Path, copy: Fingerprint) -> dict | None:
    """What `data_dvc` records for the copy at `path` (None if it does not version that folder), and whether it is
    the copy just read; if not, say in one line how to record it."""
    if data_dvc is None or not data_dvc.is_file():
        return None
    try:
        outs = (yaml.safe_load(data_dvc.read_text()) or {}).get("outs") or []
    except (yaml.YAMLError, AttributeError):
        raise UserError(f"{data_dvc}: not a valid .dvc file; restore it with `git checkout {data_dvc}`") from None
    base = data_dvc.resolve().parent
    recorded = next((out.get("md5") for out in outs if (base / str(out.get("path"))).resolve() == path.resolve()), False)
    if recorded is False:
        return None
    if recorded != copy.md5:
        print(f"download: {path} holds another copy than {data_dvc} records (md5 {copy.md5}, {recorded} recorded): "
              f"run `dvc add {path}` and commit {data_dvc} to version the copy these results come from")
    return {"file": str(data_dvc), "md5": recorded, "matches": recorded == copy.md5}


def _from_archives(zips: list[Path], out: Path) -> dict:
    scratch = out / ".unpacked"  # inside the atomic dir: same filesystem, so the files are linked, not copied
    for archive in zips:
        extract_zip(archive, scratch / archive.stem)
    report = _assemble(scratch, " + ".join(str(z) for z in zips), out)
    shutil.rmtree(scratch)
    return report


def _assemble(root: Path, where: str, out: Path) -> dict:
    """Find the index, split files and videos anywhere below `root` and link them into `out`'s raw layout."""
    files = [p for p in copy_files(root) if not p.name.startswith(".")]  # ._x: macOS resource forks in zips
    indexes = _index_files(p for p in files if p.suffix == ".json")
    if not indexes:
        raise UserError(
            f"{where}: no {INDEX} (nor split files in its format, e.g. asl2000.json) found; looked for *.json "
            "files holding a list of {gloss, instances}"
        )
    splits = _unique((p for p in indexes if p.name != INDEX), lambda p: p.name, "split file")
    named = _unique((p for p in indexes if p.name == INDEX), lambda p: p.name, "index")
    index = named.get(INDEX) or max(splits.values(), key=lambda p: len(indexes[p]))  # the split with most glosses
    for split in splits.values():
        _check_prefix(split, index, indexes)
    glosses = load_index(index)  # the format preprocess relies on, checked before anything is linked
    videos = _videos([p for p in files if p.suffix == ".mp4"], where, {i.video_id for i in glosses.instances}, index)
    _link(index, out / INDEX)
    for name, split in splits.items():
        _link(split, out / "splits" / name)
    for video_id, video in videos.items():
        _link(video, out / "videos" / f"{video_id}.mp4")
    # The original project's nslt_N.json split files, where the copy has them: preprocess compares them with the
    # index and reports the ids they list that the index lacks.
    nslt = _unique((p for p in files if p.name in NSLT_FILES), lambda p: p.name, "nslt file")
    for name, path in nslt.items():
        _link(path, out / name)
    return {"index": index.name, "split_files": sorted(splits), "nslt_files": sorted(nslt)}


def _index_files(paths: Iterable[Path]) -> dict[Path, list[str]]:
    """The JSON files in WLASL_v0.3 format (a list of {gloss, instances}), with their gloss lists. A file named as
    WLASL's files are (WLASL_v0.3.json, asl100.json, nslt_100.json) must parse; other JSON files are not the
    copy's business."""
    found = {}
    for path in sorted(paths):
        if KNOWN_JSON.match(path.name):
            entries = parse_json(path, "a WLASL copy's file")
        else:
            try:
                entries = json.loads(path.read_bytes())
            except ValueError:
                continue
        if isinstance(entries, list) and entries and all(
            isinstance(e, dict) and "gloss" in e and "instances" in e for e in entries
        ):
            found[path] = [str(e["gloss"]) for e in entries]
    return found


def _check_prefix(split: Path, index: Path, indexes: dict[Path, list[str]]) -> None:
    """aslN is the first N glosses of the index: a split file that is not its prefix would label videos wrongly."""
    small, big = indexes[split], indexes[index]
    if small == big[: len(small)]:
        return
    at = next((k for k, (a, b) in enumerate(zip(small, big)) if a != b), len(big))
    theirs = repr(big[at]) if at < len(big) else "nothing"
    raise UserError(
        f"{split.name} is not the first {len(small)} glosses of {index.name} (gloss #{at} is {small[at]!r} there, "
        f"{theirs} in {index.name}); use split files and an index from the same WLASL release"
    )


def _videos(found: list[Path], where: str, ids: set[str], index: Path) -> dict[str, Path]:
    if not found:
        raise UserError(f"{where}: no videos found; looked for <video_id>.mp4 files anywhere below it")
    listed = [p for p in found if p.stem in ids]
    if not listed:
        raise UserError(
            f"{where}: none of its {len(found)} .mp4 files is named by a video_id of {index.name} "
            f"(e.g. {found[0].name}); videos must be <video_id>.mp4 as WLASL's start_kit writes them"
        )
    return _unique(listed, lambda p: p.stem, "video")


def _unique(paths: Iterable[Path], key: Callable[[Path], str], what: str) -> dict[str, Path]:
    """Key `paths` by `key`; two files for one key are ambiguous (which copy is the data?), so that is an error."""
    keyed: dict[str, Path] = {}
    for path in paths:
        other = keyed.setdefault(key(path), path)
        if other != path:
            raise UserError(f"{what} {key(path)} found twice: {other} and {path}; keep one of them")
    return keyed


def _link(src: Path, dst: Path) -> None:
    """Hardlink (no copy, and unlike a symlink it survives as a file in DVC's cache); copy across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _finish(out: Path, source: str, copy: Fingerprint, resized: bool) -> dict:
    """Write source.json and return what every report carries: the copy's fingerprint and the counts."""
    write_json(out / "source.json", {"source": source, "precut": PRECUT[source], "resized": resized,
                                     "copy": copy.as_dict()})
    index = load_index(out / INDEX)
    present = {p.stem for p in (out / "videos").glob("*.mp4")}
    with_video = sum(i.video_id in present for i in index.instances)
    return {
        "source": source,
        "copy": copy.as_dict(),
        "glosses": len(index.glosses),
        "instances": len(index.instances),
        "videos": len(present),
        "instances_without_video": len(index.instances) - with_video,
    }
