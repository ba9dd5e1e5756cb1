"""Loader against model: reading preprocessed clips into normalised float batches vs one R3D_18 step, on CPU.

Loader: the training path itself (ClipDataset with random crops, slr.batches.train_loader, Feed.inputs) over
clips preprocessed to 16x128x128 and cropped to 112. Model: R3D_18 forward + backward + optimiser step on the same
batches (16x112x112, fresh weights). The figure is model time / loader time per batch (target: at least 5).

    PYTHONPATH=src python benchmarks/loader_vs_model.py --clips 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import torch
import torch.nn.functional as F

from common import SCRATCH, machine, video_set
from slr.data.clip import ClipSpec
from slr.data.dataset import ClipDataset
from slr.data.preprocess import preprocess
from slr.models import build_model, normalization
from slr.distributed import Process
from slr.inference import Feed
from slr.batches import train_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-batches", type=int, default=3, help="timed model steps (after one warm-up)")
    args = parser.parse_args()
    index, video_dir = video_set(args.clips)
    clips_dir = SCRATCH / "clips-loader"
    shutil.rmtree(clips_dir, ignore_errors=True)
    preprocess(index, video_dir, clips_dir, ClipSpec(16, 128, "center", 0.0, trim=False), sets=("train",))
    feed, cpu = Feed(*normalization("R3D_18")), torch.device("cpu")
    dataset = ClipDataset(clips_dir, "train", 112, train=True, flip=True, seed=0)
    loader = train_loader(dataset, args.batch_size, seed=0, process=Process(0, 1, torch.device("cpu")))
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")

    batches, labels = [], []
    start = time.perf_counter()
    for clips, label in loader:
        batches.append(feed.inputs(clips, cpu))  # (B, C, T, H, W) float32, as training feeds the model
        labels.append(label)
    loader_s = (time.perf_counter() - start) / len(batches)

    model = build_model("R3D_18", len(index.glosses), dropout=0.0).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for x, y in zip(batches[: args.model_batches + 1], labels):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model_s = sum(times[1:]) / len(times[1:])  # the first step pays one-off allocations
    shutil.rmtree(clips_dir, ignore_errors=True)
    print(f"batch {tuple(batches[0].shape)} (B, C, T, H, W)")
    print(f"loader: {loader_s * 1000:8.1f} ms a batch ({len(batches)} batches)")
    print(f"model:  {model_s * 1000:8.1f} ms a batch (R3D_18 forward + backward + step, {len(times) - 1} timed)")
    print(f"model / loader: {model_s / loader_s:.1f} (target >= 5)")
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
