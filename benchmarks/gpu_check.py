"""The GPU check, for the day a GPU is at hand: what only a GPU can show, in one run of at most `--budget-s` seconds
(default 8 minutes) on one GPU, into one JSON file and a Markdown table for BENCHMARKS.md.

  1. the device decision (slr.devices.decide) and the environment: driver, GPU, torch, CUDA, cuDNN;
  2. the CUDA tests of the suite (tests/test_cuda.py, marker `cuda`);
  3. per model, at the `original` recipe's clip (conf/: 32 x 224 x 224 for S3D, 16 x 224 x 224 for the others),
     training clips/s in fp32, bf16 and fp16 (GradScaler), each with channels-last off and on, and the peak GPU
     memory of each; evaluation clips/s (slr.inference.predict, in bf16 + channels-last where it trains);
  4. one DDP run of the train stage under torchrun with nproc 1 on a tiny synthetic set.
Models are measured in order until the budget runs out; the rest are recorded as not measured.

`--dry-run` runs the same code on the CPU, tiny: every step is listed, each model is measured once (fp32) on a small
clip and each precision and memory format once (on R3D_18), the CUDA tests are collected but not run, and the DDP
run uses gloo. It is how the suite knows this script works (tests/test_gpu_check.py).

Run from the repository root, in the project's environment:
  python benchmarks/gpu_check.py                     # on a GPU machine: about 8 minutes
  python benchmarks/gpu_check.py --dry-run           # anywhere: under 2 minutes
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import clock  # noqa: E402
from slr.devices import decide, environment, read_machine  # noqa: E402
from slr.distributed import Process  # noqa: E402
from slr.files import write_json  # noqa: E402
from slr.inference import Feed, predict  # noqa: E402
from slr.models import MODELS, build_model, kinetics_weights, normalization  # noqa: E402
from slr.train import accumulation_sizes, seed_everything, train_epoch  # noqa: E402

# Each model's clip (frames, crop size) in the `original` recipe of conf/ (conf/model/S3D.yaml: 32 frames).
RECIPE_INPUT = {name: (32 if name == "S3D" else 16, 224) for name in MODELS}
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CONFIGS = [(precision, channels_last) for precision in PRECISIONS for channels_last in (False, True)]


def smallest_input(name: str) -> tuple[int, int]:
    """The smallest clip (frames, size) `name` takes, at least 8 x 32 x 32: the dry run's."""
    meta = kinetics_weights(name).meta
    return max(8, meta.get("min_temporal_size") or 1), max(32, *meta["min_size"])


def measure(name: str, precision: str, channels_last: bool, device: torch.device, frames: int, size: int,
            batch: int, warmup: int, timed: int, evaluation: bool) -> dict[str, Any]:
    """Training clips/s of `name` through the train stage's own loop (slr.train.train_epoch) and its peak memory;
    with `evaluation`, evaluation clips/s through the evaluate stage's scoring (slr.inference.predict) too."""
    process = Process(0, 1, device)
    feed = Feed(*normalization(name), PRECISIONS[precision], channels_last)
    seed_everything(0)
    model = build_model(name, 100, dropout=0.5).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-5, weight_decay=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    batches = clock.random_batches(warmup + timed, batch, frames, size, 100)
    sizes = accumulation_sizes((warmup + timed) * batch, batch, 1)
    if warmup:  # cuDNN's autotuning, the allocator's first requests
        train_epoch(model, batches[:warmup], sizes[:warmup], 1, optimizer, scaler, feed, process)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = clock.timed(partial(train_epoch, model, batches[warmup:], sizes[warmup:], 1, optimizer, scaler, feed,
                                  process), device)
    result = {"model": name, "precision": precision, "channels_last": channels_last, "clip": f"{frames}x{size}x{size}",
              "batch": batch, "train_clips_s": timed * batch / seconds,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    if evaluation:
        if warmup:
            predict(model, batches[:warmup], feed, device, progress=False)
        seconds = clock.timed(partial(predict, model, batches[warmup:], feed, device, progress=False), device)
        result["eval_clips_s"] = timed * batch / seconds
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def cuda_tests(dry_run: bool, timeout: float) -> dict[str, Any]:
    """The suite's CUDA tests (marker `cuda`): run on a GPU, collected only in a dry run."""
    command = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-q", "-p", "no:cacheprovider",
               *(["--collect-only"] if dry_run else [])]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(command[2:]), "passed": False, "summary": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    return {"command": " ".join(command[2:]), "passed": done.returncode == 0, "summary": lines[-1] if lines else "",
            "seconds": time.monotonic() - start}


def ddp_run(device_type: str, timeout: float) -> dict[str, Any]:
    """The train stage under torchrun with one process (DDP on NCCL, or gloo in a dry run) on a tiny synthetic set."""
    from slr.data.clip import ClipSpec
    from slr.data.metadata import load_index
    from slr.data.preprocess import preprocess
    from slr.data.synthetic import generate
    from slr.params import SyntheticParams

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        generate(SyntheticParams(seed=0, pairs=2, signers=3, train_per_class=4, val_per_class=2, test_per_class=2,
                                 video_size=32, fps=25), root / "raw")
        index = load_index(root / "raw" / "WLASL_v0.3.json").subset("asl100")
        preprocess(index, root / "raw" / "videos", root / "clips", ClipSpec(8, 20, "center", 0.0),
                   workers=1)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["train"] |= {"epochs": 1, "batch_size": 4, "crop_size": 16, "device": device_type, "threads": 1,
                            "amp": "bf16" if device_type == "cuda" else "off"}
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                   str(REPO / "stages/train.py"), "clips", "models", "live", "--params", "params.yaml"]
        start = time.monotonic()
        try:
            done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(REPO / "src"),
                                       "SLR_LOCK_DIR": str(root / "locks")})
        except subprocess.TimeoutExpired:  # the measurements so far are still written
            return {"passed": False, "seconds": timeout, "log": [f"timed out after {timeout:.0f} s"]}
        said = [line for line in done.stdout.splitlines() if line.startswith(("train:", "epoch"))]
        return {"passed": done.returncode == 0 and (root / "models" / "best.pth").is_file(),
                "seconds": time.monotonic() - start, "log": said or done.stderr.strip().splitlines()[-3:]}


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per model, training clips/s (and peak GiB) per precision and memory format."""
    head = "| model | clip | " + " | ".join(f"{p}{' CL' if cl else ''}" for p, cl in CONFIGS) + " | eval clips/s |"
    rows = [head, "|---|---|" + "---|" * (len(CONFIGS) + 1)]
    for name in MODELS:
        mine = {(r["precision"], r["channels_last"]): r for r in results if r["model"] == name}
        if not mine:
            rows.append(f"| {name} | not measured |" + " |" * len(CONFIGS) + " |")
            continue
        cells = []
        for config in CONFIGS:
            r = mine.get(config)
            peak = f" ({r['peak_gib']:.1f} GiB)" if r and r["peak_gib"] is not None else ""
            cells.append(f"{r['train_clips_s']:.1f}{peak}" if r else "-")
        evals = [f"{r['eval_clips_s']:.1f}" for r in mine.values() if "eval_clips_s" in r]
        clip = next(iter(mine.values()))["clip"]
        rows.append(f"| {name} | {clip} | " + " | ".join(cells) + f" | {(evals or ['-'])[0]} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny: check that every step works")
    parser.add_argument("--budget-s", type=float, default=480, help="the whole run's time (default: %(default)s)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "scratch" / "gpu_check.json")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s
    decision = decide("cpu" if args.dry_run else "cuda", setting="gpu_check")
    device = torch.device(decision.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the stages run (slr.devices.configure)
    report: dict[str, Any] = {"dry_run": args.dry_run, "environment": environment(device, torch.get_num_threads()),
                              "machine": asdict(read_machine())}
    steps = ["CUDA tests", *(f"{name} {p}{' channels-last' if cl else ''}" for name in args.models
                             for p, cl in CONFIGS), "DDP run, nproc 1"]
    dry = " (dry run on the CPU: one step of each, figures are not measurements)" if args.dry_run else ""
    print(f"gpu_check{dry}: {len(steps)} steps in at most {args.budget_s:.0f} s: " + "; ".join(steps), flush=True)

    report["cuda_tests"] = cuda_tests(args.dry_run, timeout=max(30.0, min(120.0, deadline - time.monotonic() - 60)))
    print(f"CUDA tests: {report['cuda_tests']['summary']}", flush=True)
    results: list[dict[str, Any]] = []
    for name in args.models:
        frames, size = smallest_input(name) if args.dry_run else RECIPE_INPUT[name]
        configs = CONFIGS if not args.dry_run or name == "R3D_18" else [("fp32", False)]
        for precision, channels_last in configs:
            if time.monotonic() > deadline - 60:  # keep a minute for the DDP run
                break
            if args.dry_run:  # one step of each, on the smallest batch: a check that the code runs, not a measurement
                frames, size = (8, 16) if name == "R3D_18" else (frames, size)
                result = measure(name, precision, channels_last, device, frames, size, batch=2 if size <= 32 else 1,
                                 warmup=0, timed=1, evaluation=name == "R3D_18")
            else:
                result = measure(name, precision, channels_last, device, frames, size, args.batch, warmup=3, timed=5,
                                 evaluation=precision == "bf16" and channels_last)
            results.append(result)
            print(f"{name} {precision}{' channels-last' if channels_last else ''}: {result['train_clips_s']:.1f} "
                  "train clips/s" + (f", {result['peak_gib']:.2f} GiB peak" if result["peak_gib"] else ""), flush=True)
    report["throughput"] = results
    report["ddp"] = ddp_run(device.type, timeout=max(60.0, deadline - time.monotonic()))
    print(f"DDP run, nproc 1: {'passed' if report['ddp']['passed'] else 'FAILED'} in {report['ddp']['seconds']:.0f} s",
          flush=True)
    report["table"] = table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(report["table"])
    print(f"written to {args.out}")
    if not (report["ddp"]["passed"] and report["cuda_tests"]["passed"]):
        raise SystemExit(1)


if __name__ == "__main__":
    from slr.cli import run_main

    run_main(main)
