"""Videos -> fixed-size uint8 clips in shards (see data/store.py), plus a manifest and the data-quality report.

Each clip is made by data/clip.py (decoded once, cut to its sign where the video is the long source rather than the
sign already cut out, sampled to `num_frames`, cropped and resized to `frame_size` x `frame_size`); this module runs
that over a whole index on every core, writes the shards, the manifest and the report, and is restartable: finished
shards go to a work folder beside the output, named by a hash of everything that determines the output, and a rerun
with the same inputs resumes from them. DVC deletes a stage's outputs before it reruns the stage, so resumable work
cannot live inside `out_dir`; the complete work folder is renamed onto it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import deque
from collections.abc import Iterator
from itertools import islice
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import cv2
import torch
from tqdm import tqdm

from slr import hub
from slr.data import clip, person, quality, store, video
from slr.data.clip import ClipResult, ClipSpec, process_clip
from slr.data.metadata import SETS, Index, Instance, load_index, read_copy, read_precut, read_resized
from slr.data.quality import check_usable, select, set_quality
from slr.data.store import MANIFEST, create_shard, shard_name, write_clip
from slr.errors import UserError
from slr.files import read_json, replace_dir, write_json

QUALITY = "quality.json"
SHARD_CLIPS = 128  # clips per shard: 300 MB at 16x224x224, a few seconds of work to redo after a kill


def prepare_clips(
    raw_dir: Path,
    out_dir: Path,
    split: str,
    *,
    num_frames: int,
    frame_size: int,
    crop: str,
    bbox_margin: float,
    drop_cross_split_duplicates: bool,
    max_missing: float,
) -> dict:
    """Preprocess the `split` subset of the download stage's `raw_dir` into `out_dir`; return the quality report.

    Reads WLASL_v0.3.json, source.json (resized videos do not take crop "bbox"; whether the copy says it is pre-cut
    goes into the report, but each clip's own length decides whether its range applies) and, where present,
    nslt_N.json (compared with the index in the report).
    """
    precut, resized = read_precut(raw_dir), read_resized(raw_dir)
    if crop == "bbox" and resized:
        raise UserError(
            f"preprocess.crop: bbox cannot crop {raw_dir / 'videos'}: source.json says its clips were resized (the "
            "release's 256x256 clips), and WLASL's boxes are in the source videos' pixels; set preprocess.crop to "
            "person (detect the signer) or center"
        )
    index = load_index(raw_dir / "WLASL_v0.3.json").subset(split)
    index, notes = select(index, drop_cross_split_duplicates, raw_dir / f"nslt_{split[3:]}.json")
    spec = ClipSpec(num_frames, frame_size, crop, bbox_margin)
    return preprocess(index, raw_dir / "videos", out_dir, spec, notes={"precut": precut, "resized": resized, **notes},
                      max_missing=max_missing, copy=read_copy(raw_dir))


def preprocess(
    index: Index,
    video_dir: Path,
    out_dir: Path,
    spec: ClipSpec,
    *,
    notes: dict | None = None,
    copy: dict | None = None,
    max_missing: float = 1.0,
    sets: tuple[str, ...] = SETS,
    shard_size: int = SHARD_CLIPS,
    workers: int | None = None,
) -> dict:
    """Preprocess `sets` of `index` into `out_dir` (shards, manifest.json, quality.json); return the quality report.

    `notes` (dataset-level facts) go into the report as given; `copy` (the fingerprint of the WLASL copy the videos
    came from) into the manifest, so that the checkpoint and every result can name it. Fails with a UserError, before
    any decoding, if more than `max_missing` of a set's videos are missing or the clips cannot fit on the disk, and
    after decoding if more than that gave no clip. `workers` (default: every core) changes the speed, never the
    output.
    """
    plan = {name: index.of_set(name) for name in sets}
    paths = {i.video_id: video_dir / f"{i.video_id}.mp4" for i in index.instances}
    check_usable({n: (sum(not paths[i.video_id].is_file() for i in p), len(p)) for n, p in plan.items()},
                 max_missing, "missing", video_dir)
    notes = notes or {}
    work = _work_dir(out_dir, index, plan, paths, spec, shard_size, {**notes, "copy": copy})
    if not (work / MANIFEST).is_file():
        shards = [(name, n, todo[n * shard_size : (n + 1) * shard_size])
                  for name, todo in plan.items() for n in range(-(-len(todo) // shard_size))]
        if spec.crop == "person":
            person.detector()  # here, not in each worker: weights downloaded once, offline fails before any work
        _process(shards, work, paths, spec, workers or os.cpu_count() or 1)
        records = {(name, n): read_json(_record(work, name, n)) for name, n, _ in shards}
        report = {"classes": len(index.glosses), **notes}
        for name in plan:
            report[name] = set_quality([r for (s, _), rs in records.items() if s == name for r in rs], spec.num_frames,
                                       spec.crop)
        write_json(work / QUALITY, report)
        manifest = {**_manifest(index, plan, records, spec), "copy": copy}
        write_json(work / MANIFEST, manifest)  # written last: marks the work complete
        for name, number in records:
            _record(work, name, number).unlink()
    report = read_json(work / QUALITY)
    check_usable({n: (report[n]["listed"] - report[n]["readable"], report[n]["listed"]) for n in plan},
                 max_missing, "missing or unreadable", video_dir)
    replace_dir(work, out_dir)
    return report


def _work_dir(out_dir: Path, index: Index, plan: dict[str, list[Instance]], paths: dict[str, Path],
              spec: ClipSpec, shard_size: int, notes: dict) -> Path:
    """The work folder for these inputs, created if new; work folders of other inputs are deleted (disk space).

    Its name hashes every input of the output: the clip spec, the instances per set, each video's size and
    modification time, the code and OpenCV version that make the clips and, for crop "person", the detector.
    """
    def stat(path: Path) -> list[int] | None:
        return [path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else None

    inputs = {
        "spec": asdict(spec), "shard_size": shard_size, "notes": notes, "glosses": index.glosses,
        "sets": {name: [[asdict(i), stat(paths[i.video_id])] for i in todo] for name, todo in plan.items()},
        "code": [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in (
            __file__, clip.__file__, video.__file__, quality.__file__, store.__file__, person.__file__, hub.__file__)],
        "opencv": cv2.__version__,
        "detector": person.fingerprint() if spec.crop == "person" else None,
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    work = out_dir.with_name(f".{out_dir.name}-work-{key}")
    for stale in out_dir.parent.glob(f".{out_dir.name}-work-*"):
        if stale != work:
            print(f"preprocess: deleting {stale} (work of other params, videos or code)")
            shutil.rmtree(stale)
    work.mkdir(parents=True, exist_ok=True)
    for partial in work.glob(".*.tmp"):  # a killed run's half-written file (files.atomic_path): never renamed
        partial.unlink()
    return work


def _record(work: Path, set_name: str, number: int) -> Path:
    """The shard's per-clip record (ids, frames, problems, rows), kept in the work folder until the manifest.

    It is written after the shard's clips are in place, so its presence marks the shard done.
    """
    return work / shard_name(set_name, number).replace(".npy", ".json")


def _unfinished(work: Path, set_name: str, number: int) -> Path:
    """The shard while workers fill it; the `.tmp` suffix makes a killed run's copy go at the next start."""
    return work / f".{shard_name(set_name, number)}.tmp"


Job = tuple[Path, Instance, ClipSpec, Path, int | None]  # video, instance, spec, shard file, row (None: missing)


def _process(shards: list[tuple[str, int, list[Instance]]], work: Path, paths: dict[str, Path], spec: ClipSpec,
             workers: int) -> None:
    """Make every shard not yet done, in order, with `workers` processes."""
    todo = [s for s in shards if not _record(work, s[0], s[1]).is_file()]
    total, left = sum(len(s[2]) for s in shards), sum(len(s[2]) for s in todo)
    if left < total:
        print(f"preprocess: resuming {work}: {total - left} of {total} clips already done")
    _check_space(work, sum(paths[i.video_id].is_file() for _, _, instances in todo for i in instances), spec)

    def jobs() -> Iterator[Job]:  # lazy: a shard's file is made when its first clip is submitted
        for name, number, instances in todo:
            present = [i for i in instances if paths[i.video_id].is_file()]
            shard = _unfinished(work, name, number)
            if present:
                create_shard(shard, len(present), (spec.num_frames, spec.frame_size, spec.frame_size, 3))
            rows = {i.video_id: row for row, i in enumerate(present)}
            yield from ((paths[i.video_id], i, spec, shard, rows.get(i.video_id)) for i in instances)

    records = _run(jobs(), workers)
    with tqdm(total=left, desc="preprocess", unit="clip") as bar:
        for name, number, instances in todo:
            batch = [next(records) for _ in instances]
            bar.update(len(batch))
            _seal(work, name, number, batch)


def _check_space(work: Path, clips: int, spec: ClipSpec) -> None:
    """Fail before decoding if the clips still to make cannot fit on the disk. Shards are sparse files that fill as
    clips are written, so without this check a full disk would stop the stage hours in; the margin leaves room for
    the records and the manifest. (DVC then copies the clips into its cache, unless cache.type links them.)"""
    need = clips * spec.num_frames * spec.frame_size**2 * 3 + 2**24
    free = shutil.disk_usage(work).free
    if need > free:
        raise UserError(
            f"not enough space left on the device for the clips: {clips} clips need about {_gb(need)} in {work}, "
            f"{_gb(free)} are free; free {_gb(need - free)} (or lower preprocess.frame_size or num_frames) and rerun"
        )


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.0f} MB"


def _seal(work: Path, set_name: str, number: int, records: list[dict]) -> None:
    """Finish a shard: rename its file into place (or drop it if no clip came), then write its record."""
    shard = _unfinished(work, set_name, number)
    if any(not r["problem"] for r in records):
        os.replace(shard, work / shard_name(set_name, number))
    else:
        shard.unlink(missing_ok=True)
    write_json(_record(work, set_name, number), records)


def _make_clip(path: Path, instance: Instance, spec: ClipSpec, shard: Path, row: int | None) -> dict:
    """In a worker: make one clip and write it into its row of the shard; return its record (small, to pickle)."""
    result = process_clip(path, instance, spec) if row is not None else ClipResult(
        instance.video_id, [], 0, "missing", False)
    if result.images:
        write_clip(shard, row, result.images)
    return {"video_id": result.video_id, "frames": result.frames, "problem": result.problem,
            "fallback": result.fallback, "range": result.range, "row": None if result.problem else row}


def _make_clips(jobs: list[Job]) -> list[dict]:
    return [_make_clip(*job) for job in jobs]


def _run(jobs: Iterator[Job], workers: int, chunk: int = 4) -> Iterator[dict]:
    """_make_clip over `jobs` in a process pool, `chunk` jobs a task; records in job order.

    At most 2 tasks per worker are in flight, unlike Executor.map (which submits everything at once): shard files
    are made only just ahead of the work, and a slow video holds back few records. Tasks of a few clips, not one,
    halve the pool's per-task cost (pickling, queues, wake-ups), which on 2 cores was 5-10% of the run.
    """
    with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
        tasks = iter(lambda: list(islice(jobs, chunk)), [])
        pending = deque(pool.submit(_make_clips, task) for task in islice(tasks, 2 * workers))
        try:
            while pending:
                records = pending.popleft().result()
                for task in islice(tasks, 1):  # keep the number in flight constant
                    pending.append(pool.submit(_make_clips, task))
                yield from records
        finally:
            for future in pending:
                future.cancel()


def _one_thread() -> None:
    """A worker's OpenCV and torch (the person detector) run on one thread: the processes already fill the cores,
    and the thread pools a forked worker would inherit from its parent do not survive the fork."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _manifest(index: Index, plan: dict[str, list[Instance]], records: dict[tuple[str, int], list[dict]],
              spec: ClipSpec) -> dict:
    """What the loader reads: glosses, the clip spec, and per set the stored clips' ids, labels, frames and shards.

    `skipped` maps each video that gave no clip to the reason, so a set's listed videos can be rebuilt (slr-test).
    """
    labels = {i.video_id: i.label for i in index.instances}
    sets = {}
    for name in plan:
        shards = {n: rs for (s, n), rs in records.items() if s == name}
        stored = [r for rs in shards.values() for r in rs if not r["problem"]]
        sets[name] = {
            "video_ids": [r["video_id"] for r in stored],
            "labels": [labels[r["video_id"]] for r in stored],
            "frames": [r["frames"] for r in stored],
            "skipped": {r["video_id"]: r["problem"] for rs in shards.values() for r in rs if r["problem"]},
            "shards": [{"file": shard_name(name, n), "rows": rows} for n, rs in shards.items()
                       if (rows := [r["row"] for r in rs if not r["problem"]])],
        }
    return {"glosses": list(index.glosses), **asdict(spec), "sets": sets}
