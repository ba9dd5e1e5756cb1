"""Preprocessing throughput against the decode-only limit, side by side in one run; and what crop "person" costs.

Decode-only: OpenCV reads every frame of every clip, with the same number of processes, and does nothing else.
Preprocess: slr.data.preprocess.preprocess on the same clips (decode, sample, crop, resize, write shards, manifest).
Write-only, for reference: the processes write as many bytes as preprocessing stores (T x H x W x 3 per clip) into
a fresh file, and do nothing else: on a slow disk, storing the clips alone can cost more than 1.25x decoding them.
Runs alternate, each `--repeats` times; the figure is the ratio of the medians (target: at most 1.25).

Input (benchmarks/common.py): `--codec mp4v` 256x256 clips (OpenCV's own encoder), or `--codec h264` clips of any
`--shape`, as real WLASL copies are (needs `pip install -r benchmarks/requirements.txt`); or `--real DIR`, real WLASL
clips as a copy holds them (DIR/clips.json and DIR/videos: ../shared/wlasl-real), at their mixed resolutions, timed
all together and per resolution class. With `--real`, `--decoders` also times what could lower the decoding: FFmpeg's
decoding threads (1, the pipeline's video.DECODER_THREADS, or one a core, OpenCV's default: decoding alone and in the
pipeline), decoding only up to the last sampled frame, and PyAV decoding with and without H.264's in-loop deblocking
filter (skip_loop_filter, which OpenCV cannot set).

`--person-clips N`: crop "person" against crop "center" on N of the clips, alternating; the difference is the
detector's cost, given per clip in time of one core (wall time x processes / clips). Real COCO weights are used
where the torch hub cache has them; otherwise (offline) untrained weights with the same architecture are written to
benchmarks/scratch/torch: the same work a frame, but nobody is found, so every clip falls back to the centre.
`--detectors`: one core's time a frame of the two small torchvision COCO detectors, untrained, at `--shape`.

    PYTHONPATH=src python benchmarks/preprocess_throughput.py --clips 500 --frame-size 224
    PYTHONPATH=src python benchmarks/preprocess_throughput.py --codec h264 --shape 320x240 --frame-size 112 224 256 \
        --person-clips 100 --detectors
    PYTHONPATH=src python benchmarks/preprocess_throughput.py --real ../shared/wlasl-real --frame-size 112 --decoders
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.models import get_model

from common import CODECS, SCRATCH, machine, video_set
from slr import hub
from slr.data import person, video
from slr.data.clip import ClipSpec, sample_indices
from slr.data.metadata import Index, Instance
from slr.data.preprocess import preprocess

# The COCO detectors small enough for a CPU, and their own score-threshold argument (set to person.MIN_SCORE: the
# untrained weights' scores must not flood the box post-processing, which trained weights would not do).
DETECTORS = {"ssdlite320_mobilenet_v3_large": "score_thresh",
             "fasterrcnn_mobilenet_v3_large_320_fpn": "box_score_thresh"}


def count_frames(path: Path) -> int:
    """Decode every frame of `path` and throw it away: the least any preprocessing must do (with the pipeline's
    FFmpeg decoding threads)."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, video.DECODER_THREADS])
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def decode_only(paths: list[Path], workers: int) -> int:
    with ProcessPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return sum(pool.map(count_frames, paths, chunksize=4))


def write_rows(args: tuple[Path, range, int]) -> None:
    path, rows, size = args
    clip = np.full(size, 7, np.uint8)
    with path.open("r+b") as file:
        for row in rows:
            os.pwrite(file.fileno(), clip.data, row * size)


def write_only(path: Path, clips: int, clip_bytes: int, workers: int) -> None:
    """Write `clips` x `clip_bytes` into a new file from `workers` processes, as preprocessing's workers do."""
    with path.open("wb") as file:
        file.truncate(clips * clip_bytes)
    jobs = [(path, range(k, clips, workers), clip_bytes) for k in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_rows, jobs))
    path.unlink()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def summary(name: str, ts: list[float], clips: int) -> str:
    median = statistics.median(ts)
    return (f"{name:12s} median {median:6.2f} s ({clips / median:6.1f} clips/s); "
            f"runs {', '.join(f'{t:.2f}' for t in ts)}")


def against_decoding(index: Index, video_dir: Path, args: argparse.Namespace, workers: int, frame_size: int) -> None:
    """Decode-only, preprocess (centre crop) and write-only, alternating, at one stored frame size."""
    paths = [video_dir / f"{i.video_id}.mp4" for i in index.instances]
    spec = ClipSpec(args.num_frames, frame_size, crop="center", bbox_margin=0.0)
    out = SCRATCH / "clips"
    clip_bytes = args.num_frames * frame_size * frame_size * 3
    times: dict[str, list[float]] = {"decode-only": [], "preprocess": [], "write-only": []}
    frames = 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        frames = decode_only(paths, workers)
        times["decode-only"].append(time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
        times["preprocess"].append(timed(lambda: preprocess(index, video_dir, out, spec, sets=("train",))))
        shutil.rmtree(out, ignore_errors=True)
        times["write-only"].append(timed(lambda: write_only(SCRATCH / "write-only.bin", len(paths), clip_bytes,
                                                            workers)))
    decode = statistics.median(times["decode-only"])
    print(f"{len(paths)} clips, {frames} frames of {args.shape} {args.codec} "
          f"({decode * workers / frames * 1000:.2f} ms a frame per process), {workers} processes, preprocess to {args.num_frames}x{frame_size}x{frame_size} "
          f"({clip_bytes:,} bytes a clip)")
    for name, ts in times.items():
        print(summary(name, ts, len(paths)))
    print(f"preprocess / decode-only: {statistics.median(times['preprocess']) / decode:.3f} (target <= 1.25)")


# Real clips' resolution classes, by frame height (WLASL's sources: 288x192 to 1920x1080).
CLASSES = {"<=240p": (0, 240), "360-480p": (241, 480), "720p": (481, 720), "1080p": (721, 1080)}


def real_clips(folder: Path) -> tuple[Index, Path, dict[str, Index], dict[str, int]]:
    """The real clips of `folder` as an index of whole, pre-cut train clips (as their instances are), the videos'
    folder, the index of each resolution class, and each clip's decoded frames (clips.json)."""
    if not (folder / "clips.json").is_file():
        raise SystemExit(f"--real {folder}: no clips.json there (the real WLASL clips: ../shared/wlasl-real)")
    clips = json.loads((folder / "clips.json").read_text())
    glosses = sorted({c["gloss"] for c in clips})
    instances = tuple(Instance(c["video_id"], glosses.index(c["gloss"]), "train", 1, -1,
                               (0, 0, c["decoded"]["width"], c["decoded"]["height"]), 0) for c in clips)
    height = {c["video_id"]: c["decoded"]["height"] for c in clips}
    index = Index(tuple(glosses), instances)
    classes = {name: Index(index.glosses, tuple(i for i in instances if low <= height[i.video_id] <= high))
               for name, (low, high) in CLASSES.items()}
    return index, folder / "videos", classes, {c["video_id"]: c["decoded"]["frames"] for c in clips}


def grab_frames(path: Path, threads: int, upto: int | None = None) -> int:
    """Decode the frames of `path` without converting any (OpenCV grab): the decoding alone, with `threads` FFmpeg
    threads (0: one a core); `upto`: stop after the last of that many frames sampled uniformly."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
    stop = None if upto is None else int(sample_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), upto)[-1]) + 1
    count = 0
    while (stop is None or count < stop) and capture.grab():
        count += 1
    capture.release()
    return count


def pyav_frames(path: Path, skip_loop_filter: bool) -> int:
    """Decode every frame of `path` with PyAV on one thread, optionally without the in-loop deblocking filter."""
    import av  # benchmark-only dependency

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        if skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        return sum(1 for _ in container.decode(stream))


def pooled(work: Callable[[Path], int], paths: list[Path], workers: int) -> int:
    with ProcessPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return sum(pool.map(work, paths, chunksize=1))


def real_against_decoding(index: Index, video_dir: Path, classes: dict[str, Index], frames: dict[str, int],
                          args: argparse.Namespace, workers: int, frame_size: int) -> None:
    """Decode-only and preprocess on the real clips, all together and per resolution class, alternating; with
    --decoders, the decoding variants too. One table row per group: medians, clips/s, the ratio."""
    spec = ClipSpec(args.num_frames, frame_size, crop="center", bbox_margin=0.0)
    out = SCRATCH / "clips"
    runs: dict[str, Callable[[Index, list[Path]], object]] = {
        "decode-only": lambda _, paths: decode_only(paths, workers),
        "preprocess": lambda group, _: preprocess(group, video_dir, out, spec, sets=("train",)),
    }
    if args.decoders:
        runs |= {
            "grab, threads 1": lambda _, paths: pooled(partial(grab_frames, threads=1), paths, workers),
            "grab, threads/core": lambda _, paths: pooled(partial(grab_frames, threads=0), paths, workers),
            "grab to last sampled": lambda _, paths: pooled(partial(grab_frames, threads=0, upto=args.num_frames),
                                                            paths, workers),
            "pyav, threads 1": lambda _, paths: pooled(partial(pyav_frames, skip_loop_filter=False), paths, workers),
            "pyav, no deblocking": lambda _, paths: pooled(partial(pyav_frames, skip_loop_filter=True), paths,
                                                           workers),
            "preprocess, threads/core": lambda group, _: threads_of(0, lambda: preprocess(group, video_dir, out, spec,
                                                                                         sets=("train",))),
        }
    groups = {"all": index, **classes}
    times = {(g, r): [] for g in groups for r in runs}
    loads = []  # the 1-minute load average as each run starts: how quiet the machine stayed
    for _ in range(args.repeats):
        for name, group in groups.items():
            paths = [video_dir / f"{i.video_id}.mp4" for i in group.instances]
            for run, work in runs.items():
                shutil.rmtree(out, ignore_errors=True)
                loads.append(os.getloadavg()[0])
                times[name, run].append(timed(lambda: work(group, paths)))
    shutil.rmtree(out, ignore_errors=True)
    print(f"real clips, {workers} processes, preprocess to {args.num_frames}x{frame_size}x{frame_size} "
          f"(crop center), medians of {args.repeats} alternating runs; load average as runs started "
          f"{min(loads):.2f}-{max(loads):.2f} (median {statistics.median(loads):.2f})")
    medians = {key: statistics.median(ts) for key, ts in times.items()}
    variants = sorted((r for r in runs if r != "decode-only"), key=lambda r: r.startswith("preprocess"))
    for columns in (["decode-only", "preprocess"], variants if args.decoders else []):
        if not columns:
            continue
        print("\n| clips | n | frames | " + " | ".join(columns) + (" | **preprocess / decode-only** |"
                                                               if "decode-only" in columns else " |"))
        print("|---" * (3 + len(columns) + ("decode-only" in columns)) + "|")
        for name, group in groups.items():
            clips = len(group.instances)
            cells = " | ".join(f"{medians[name, run]:.2f} s ({clips / medians[name, run]:.1f}/s)" for run in columns)
            ratio = (f" | **{medians[name, 'preprocess'] / medians[name, 'decode-only']:.2f}**"
                     if "decode-only" in columns else "")
            print(f"| {name} | {clips} | {sum(frames[i.video_id] for i in group.instances)} | {cells}{ratio} |")


def threads_of(threads: int, run: Callable[[], object]) -> object:
    """`run` with the pipeline's FFmpeg decoding threads set to `threads` (its workers fork after this is set)."""
    default, video.DECODER_THREADS = video.DECODER_THREADS, threads
    try:
        return run()
    finally:
        video.DECODER_THREADS = default


def person_weights() -> str:
    """Make crop "person" runnable offline: untrained weights in a scratch TORCH_HOME where the cache has none."""
    if hub.cache_path(person.WEIGHTS.url).is_file():
        return f"COCO weights from {hub.cache_path(person.WEIGHTS.url)}"
    os.environ["TORCH_HOME"] = str(SCRATCH / "torch")
    path = hub.cache_path(person.WEIGHTS.url)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(person.architecture().state_dict(), path)
    return f"UNTRAINED weights at {path} (no COCO weights offline): same cost, every clip falls back to the centre"


def person_cost(index: Index, video_dir: Path, args: argparse.Namespace, workers: int) -> None:
    """Crop "person" against crop "center" on the same clips, alternating."""
    print(f"person crop: {person_weights()}")
    index = Index(index.glosses, index.instances[: args.person_clips])
    out = SCRATCH / "clips"
    times: dict[str, list[float]] = {"center": [], "person": []}
    for _ in range(args.repeats):
        for crop in times:
            spec = ClipSpec(args.num_frames, args.frame_size[0], crop=crop, bbox_margin=0.2)
            shutil.rmtree(out, ignore_errors=True)
            times[crop].append(timed(lambda: preprocess(index, video_dir, out, spec, sets=("train",))))
    shutil.rmtree(out, ignore_errors=True)
    clips = len(index.instances)
    print(f"{clips} clips of {args.shape} {args.codec}, {workers} processes, {args.num_frames}x{args.frame_size[0]}"
          f"x{args.frame_size[0]}, detector on {person.FRAMES} frames a clip")
    per_clip = {crop: statistics.median(ts) * workers / clips * 1000 for crop, ts in times.items()}
    for crop, ts in times.items():
        print(f"{summary(crop, ts, clips)}; {per_clip[crop]:.0f} ms of one core a clip")
    print(f"person - center: {per_clip['person'] - per_clip['center']:.0f} ms of one core a clip")


def detector_cost(args: argparse.Namespace, repeats: int = 5) -> None:
    """One core's time a frame of each candidate detector (untrained: the cost does not depend on the weights)."""
    width, height = args.width, args.height
    torch.set_num_threads(1)
    frames = [torch.rand(3, height, width, generator=torch.Generator().manual_seed(k)) for k in range(person.FRAMES)]
    for name, threshold in DETECTORS.items():
        model = get_model(name, weights=None, weights_backbone=None, num_classes=91,
                          **{threshold: person.MIN_SCORE}).eval()
        with torch.inference_mode():
            model(frames)  # warm-up
            runs = [timed(lambda: model(frames)) / len(frames) * 1000 for _ in range(repeats)]
        print(f"{name}: median {statistics.median(runs):.1f} ms a {args.shape} frame on one core; "
              f"runs {', '.join(f'{t:.1f}' for t in runs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--codec", choices=CODECS, default="mp4v")
    parser.add_argument("--shape", default="256x256", help="WIDTHxHEIGHT of the generated clips (mp4v: 256x256)")
    parser.add_argument("--frame-size", type=int, nargs="+", default=[224], help="stored sizes, one run each")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--person-clips", type=int, default=0, help="also time crop person on this many clips")
    parser.add_argument("--detectors", action="store_true", help="also time the candidate detectors a frame")
    parser.add_argument("--real", type=Path, help="real WLASL clips instead (clips.json, videos/), e.g. "
                                                   "../shared/wlasl-real")
    parser.add_argument("--decoders", action="store_true", help="with --real, also time the decoding variants")
    args = parser.parse_args()
    args.width, args.height = (int(v) for v in args.shape.split("x"))
    workers = os.cpu_count() or 1
    print(f"machine: {machine()}")
    if args.real:
        index, video_dir, classes, frames = real_clips(args.real)
        for frame_size in args.frame_size:
            real_against_decoding(index, video_dir, classes, frames, args, workers, frame_size)
        print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        return
    index, video_dir = video_set(args.clips, args.codec, (args.width, args.height))
    for frame_size in args.frame_size:
        against_decoding(index, video_dir, args, workers, frame_size)
    if args.person_clips:
        person_cost(index, video_dir, args, workers)
    if args.detectors:
        detector_cost(args)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
