"""Training-loop benchmarks (scripts, not tests; figures go to BENCHMARKS.md).

  overhead    slr.train.train_epoch against a bare forward + backward + step over the same in-memory batches,
              alternating the two so that drift hits both; reports loop time / bare time - 1 (target <= 5%).
  throughput  training clips/s of each model at its recipe's input, fp32 against AMP (bf16) + channels-last,
              and peak GPU memory (CUDA only).

Run from the repository root, e.g.
  python benchmarks/bench_train.py overhead --model R3D_18 --frames 16 --size 112 --batch 4 --batches 8
  python benchmarks/bench_train.py throughput --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from slr.distributed import Process
from slr.models import MODELS, build_model, check_input, normalization
from slr.inference import Feed
from slr.train import accumulation_sizes, seed_everything, train_epoch

# Each model's clip (frames, crop size) in the `original` recipe of conf/ (conf/model/S3D.yaml: 32 frames).
RECIPE_INPUT = {name: (32 if name == "S3D" else 16, 224) for name in MODELS}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(num: int, batch: int, frames: int, size: int, classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8),
             torch.randint(0, classes, (batch,))) for _ in range(num)]


def _setup(name: str, classes: int, feed: Feed, device: torch.device
           ) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    model = build_model(name, classes, dropout=0.5).to(device)
    if feed.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-5, weight_decay=1e-3)
    return model, optimizer, torch.amp.GradScaler(device.type, enabled=False)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def overhead(args: argparse.Namespace) -> None:
    process = Process(0, 1, torch.device(args.device))
    device = process.device
    feed = Feed(*normalization(args.model), torch.bfloat16 if args.amp else None, args.amp)
    check_input(args.model, args.frames, args.size)
    seed_everything(0)
    batches = _batches(args.batches, args.batch, args.frames, args.size, 10)
    model, optimizer, scaler = _setup(args.model, 10, feed, device)
    sizes = accumulation_sizes(args.batches * args.batch, args.batch, 1)

    def bare() -> None:
        model.train()
        for clips, labels in batches:
            x = feed.inputs(clips, device)
            with feed.context(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def loop() -> None:
        train_epoch(model, batches, sizes, 1, optimizer, scaler, feed, process)

    bare(), loop()  # warm-up: kernels chosen, allocator primed
    times: dict[str, list[float]] = {"bare": [], "loop": []}
    for _ in range(args.rounds):
        times["bare"].append(_timed(bare, device))
        times["loop"].append(_timed(loop, device))
    b, lp = statistics.median(times["bare"]), statistics.median(times["loop"])
    print(f"{args.model} {args.frames}x{args.size}x{args.size}, batch {args.batch}, {args.batches} batches, "
          f"{device}{' bf16+channels-last' if args.amp else ' fp32'}, median of {args.rounds} rounds: "
          f"bare {b:.3f} s, train_epoch {lp:.3f} s, overhead {100 * (lp / b - 1):+.1f}%")


def throughput(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("throughput needs a CUDA GPU")
    process = Process(0, 1, torch.device("cuda"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}, "
          f"{args.batches} timed batches after {args.warmup} warm-up")
    print("| model | clip | fp32 clips/s | AMP bf16 + channels-last clips/s | speed-up | peak GiB fp32 / AMP |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        frames, size = RECIPE_INPUT[name]
        batches = _batches(args.batches, args.batch, frames, size, 100)
        sizes = accumulation_sizes(args.batches * args.batch, args.batch, 1)
        rates, peaks = [], []
        for feed in (Feed(*normalization(name)), Feed(*normalization(name), torch.bfloat16, True)):
            seed_everything(0)
            model, optimizer, scaler = _setup(name, 100, feed, process.device)
            warm = batches[: args.warmup]
            train_epoch(model, warm, sizes[: len(warm)], 1, optimizer, scaler, feed, process)
            torch.cuda.reset_peak_memory_stats()
            seconds = _timed(lambda: train_epoch(model, batches, sizes, 1, optimizer, scaler, feed, process),
                             process.device)
            rates.append(args.batches * args.batch / seconds)
            peaks.append(torch.cuda.max_memory_allocated() / 2**30)
            del model, optimizer
            torch.cuda.empty_cache()
        print(f"| {name} | {frames}x{size}x{size} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[1] / rates[0]:.2f}x | "
              f"{peaks[0]:.1f} / {peaks[1]:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    o = sub.add_parser("overhead", help="train_epoch vs bare forward+backward+step")
    o.add_argument("--model", default="R3D_18")
    o.add_argument("--frames", type=int, default=16)
    o.add_argument("--size", type=int, default=112)
    o.add_argument("--batch", type=int, default=4)
    o.add_argument("--batches", type=int, default=8)
    o.add_argument("--rounds", type=int, default=5)
    o.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    o.add_argument("--amp", action="store_true", help="bf16 autocast + channels-last (CUDA)")
    t = sub.add_parser("throughput", help="per-model training clips/s, fp32 vs AMP (CUDA)")
    t.add_argument("--models", nargs="+", default=list(RECIPE_INPUT))
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--batches", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    overhead(args) if args.mode == "overhead" else throughput(args)


if __name__ == "__main__":
    main()
