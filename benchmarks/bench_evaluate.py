"""Evaluation benchmark (a script, not a test; figures go to BENCHMARKS.md).

The evaluate stage's scoring (`slr.evaluate.evaluate`: val, then test under every frame ordering of the order study,
each clip read once through the DataLoader) against the bare forward passes it needs: the same models on the same
clips, already in memory, cropped, normalised and reordered beforehand, one forward per batch and ordering, nothing
else. Both run in this process, alternating, so drift hits both; the overhead is their ratio minus one (target:
at most 10% on CPU). Also the study's throughput: test clips scored per second (all orderings).

Run from the repository root, e.g.
  python benchmarks/bench_evaluate.py --clips 32 --size 56 --repeats 3
  python benchmarks/bench_evaluate.py --device cuda --size 112 --clips 256 --batch 32     # on a GPU box
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from slr.data.dataset import ClipDataset, load_manifest
from slr.data.metadata import Index
from slr.data.clip import ClipSpec
from slr.data.preprocess import preprocess
from slr.evaluate import evaluate, feed_for, study_orderings
from slr.models import build_model, normalization
from slr.params import EvaluateParams

from common import SCRATCH, machine, video_set


def clips_dir(count: int, frames: int, size: int) -> Path:
    """`count` generated videos preprocessed once: a quarter as val, the rest as test."""
    index, video_dir = video_set(count)
    val = count // 4
    instances = tuple(dataclasses.replace(i, split="val" if k < val else "test") for k, i in enumerate(index.instances))
    out = SCRATCH / f"eval-clips-{count}x{frames}x{size}"
    if not (out / "manifest.json").is_file():
        preprocess(Index(index.glosses, instances), video_dir, out,
                   ClipSpec(num_frames=frames, frame_size=size, crop="center", bbox_margin=0.0))
    return out


def bare(model: torch.nn.Module, batches: list[list[torch.Tensor]], device: torch.device, feed) -> None:
    """One forward per (batch, ordering) of inputs prepared beforehand: the floor any evaluation must pay."""
    with torch.no_grad():
        for inputs in batches:
            for x in inputs:
                with feed.context(device):
                    model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="R3D_18")
    parser.add_argument("--clips", type=int, default=32, help="videos: a quarter val, the rest test")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=56, help="stored and crop size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--sweep", type=int, default=24, help="sweep permutations (the study adds 2 and ordered)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="bf16", help="autocast on CUDA: bf16, fp16 or off")
    args = parser.parse_args()
    device = torch.device(args.device)
    folder = clips_dir(args.clips, args.frames, args.size)
    torch.manual_seed(0)
    classes = len(load_manifest(folder)["glosses"])
    model = build_model(args.model, classes, dropout=0.5).to(device).eval()
    mean, std = normalization(args.model)
    meta = {"model": args.model, "num_frames": args.frames, "crop_size": args.size, "mean": mean, "std": std,
            "amp": args.amp, "channels_last": device.type == "cuda"}
    feed = feed_for(meta, device)
    if feed.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    p = EvaluateParams(device=args.device, batch_size=args.batch, shuffle_seed=1, sweep_count=args.sweep,
                       sweep_seed=0, bootstrap_samples=100, bootstrap_seed=0)
    orderings = [None, *study_orderings(args.frames, p).values()]
    # the bare floor's inputs: val ordered, test under every ordering, as the model's input tensors on the device
    prepared = []
    for set_name, orders in (("val", [None]), ("test", orderings)):
        dataset = ClipDataset(folder, set_name, args.size, False, False, 0)
        for first in range(0, len(dataset), args.batch):
            clips = torch.stack([dataset[i][0] for i in range(first, min(first + args.batch, len(dataset)))])
            prepared.append([feed.inputs(clips if o is None else clips[:, list(o)], device) for o in orders])
    test_clips = len(ClipDataset(folder, "test", None, False, False, 0))
    print(f"{machine()}; {args.model} on {device} ({feed.precision}), clips {args.frames}x{args.size}x{args.size}, "
          f"batch {args.batch}; val {len(ClipDataset(folder, 'val', None, False, False, 0))} clips, test {test_clips} "
          f"clips x {len(orderings)} orderings")
    stage, floor = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        evaluate(model, meta, folder, device, p)
        stage.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare(model, prepared, device, feed)
        floor.append(time.perf_counter() - start)
    s, f = statistics.median(stage), statistics.median(floor)
    print(f"evaluate {s:.2f} s (runs {', '.join(f'{t:.2f}' for t in stage)}), bare forwards {f:.2f} s "
          f"(runs {', '.join(f'{t:.2f}' for t in floor)}): overhead {s / f - 1:+.1%}; the study scores "
          f"{test_clips * len(orderings) / s:.1f} clip-orderings/s, {test_clips / s:.2f} test clips/s "
          f"(all {len(orderings)} orderings each)")
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
