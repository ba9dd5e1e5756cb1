"""Training-loop benchmarks (scripts, not tests; figures go to BENCHMARKS.md).

  overhead    slr.train.train_epoch against a bare forward + backward + step over the same in-memory batches,
              alternating the two so that drift hits both; reports loop time / bare time - 1 (target <= 5%).

Per-model GPU throughput (clips/s per precision and memory format, peak memory) is benchmarks/gpu_check.py's.

Run from the repository root, e.g.
  python benchmarks/bench_train.py overhead --model R3D_18 --frames 16 --size 112 --batch 4 --batches 8
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

import clock
from slr.distributed import Process
from slr.models import build_model, check_input, normalization
from slr.inference import Feed
from slr.train import accumulation_sizes, seed_everything, train_epoch


def _setup(name: str, classes: int, feed: Feed, device: torch.device
           ) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    model = build_model(name, classes, dropout=0.5).to(device)
    if feed.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-5, weight_decay=1e-3)
    return model, optimizer, torch.amp.GradScaler(device.type, enabled=False)


def overhead(args: argparse.Namespace) -> None:
    process = Process(0, 1, torch.device(args.device))
    device = process.device
    feed = Feed(*normalization(args.model), torch.bfloat16 if args.amp else None, args.amp)
    check_input(args.model, args.frames, args.size)
    seed_everything(0)
    batches = clock.random_batches(args.batches, args.batch, args.frames, args.size, 10)
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
        times["bare"].append(clock.timed(bare, device))
        times["loop"].append(clock.timed(loop, device))
    b, lp = statistics.median(times["bare"]), statistics.median(times["loop"])
    print(f"{args.model} {args.frames}x{args.size}x{args.size}, batch {args.batch}, {args.batches} batches, "
          f"{device}{' bf16+channels-last' if args.amp else ' fp32'}, median of {args.rounds} rounds: "
          f"bare {b:.3f} s, train_epoch {lp:.3f} s, overhead {100 * (lp / b - 1):+.1f}%")


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
    args = parser.parse_args()
    overhead(args)


if __name__ == "__main__":
    main()
