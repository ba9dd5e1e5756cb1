"""How the pipeline's cost grows with the number of glosses (a script, not a test; figures go to BENCHMARKS.md).

For each class count it runs the four stage scripts, as DVC would, on a synthetic WLASL of that many glosses (a few
clips each, small frames, 1 epoch of training) in benchmarks/scratch/scale-<glosses>/, and records each stage's
wall time and peak memory (the largest resident set of the stage's processes, from wait4), and the size of the
plot images the evaluation wrote.

Run from the repository root, e.g.
  python benchmarks/scale.py --glosses 100 300 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from common import SCRATCH, machine

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {100: "asl100", 300: "asl300", 1000: "asl1000", 2000: "asl2000"}


def params(glosses: int, sweep: int) -> dict:
    """The committed params.yaml, with a synthetic set of `glosses` glosses (2 train, 1 val, 1 test clips each) of
    32 px videos, 8-frame clips of 28 px, and 1 epoch."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["split"] = SPLITS[glosses]
    p["data"]["synthetic"].update(pairs=glosses // 2, train_per_class=2, val_per_class=1, test_per_class=1,
                                  video_size=32)
    p["preprocess"].update(num_frames=8, frame_size=28)
    p["train"].update(epochs=1, batch_size=16, crop_size=24)
    p["evaluate"].update(batch_size=32, sweep_count=sweep, device="cpu")
    return p


def run(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak resident set (MB) of one stage's processes."""
    log = cwd / f"{Path(command[1]).stem}.log"  # a file, not a pipe that nobody reads while the stage fills it
    start = time.perf_counter()
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{log.read_text()[-4000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glosses", type=int, nargs="+", default=[100, 300, 2000], choices=sorted(SPLITS))
    parser.add_argument("--sweep", type=int, default=4, help="sweep permutations (the study adds 3 orderings)")
    args = parser.parse_args()
    print(machine())
    python = sys.executable
    rows = []
    for glosses in args.glosses:
        work = SCRATCH / f"scale-{glosses}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "params.yaml").write_text(yaml.safe_dump(params(glosses, args.sweep)))
        stages = {
            "download": ["download.py", "raw", "download.json"],
            "preprocess": ["preprocess.py", "raw", "clips", "data.json", "data-report.json"],
            "train": ["train.py", "clips", "models", "live"],
            "evaluate": ["evaluate.py", "models/best.pth", "clips", "eval.json", "eval-report.json", "plots",
                         "predictions.json"],
        }
        costs = {}
        for name, (script, *paths) in stages.items():
            costs[name] = run([python, str(ROOT / "stages" / script), *paths], work)
            print(f"{glosses} glosses, {name}: {costs[name][0]:.1f} s, {costs[name][1]:.0f} MB", flush=True)
        images = {p.name: _png_size(p) for p in sorted((work / "plots" / "images").glob("*.png"))}
        rows.append((glosses, costs, images))
    print(f"after: {machine()}")
    print("\n| glosses | " + " | ".join(f"{s} (s, MB)" for s in stages) + " | largest image (px) |")
    print("|---|" + "---|" * (len(stages) + 1))
    for glosses, costs, images in rows:
        largest = max(images.values(), key=lambda wh: wh[0] * wh[1])
        print(f"| {glosses} | " + " | ".join(f"{t:.1f} s, {m:.0f} MB" for t, m in costs.values())
              + f" | {largest[0]} x {largest[1]} |")


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[16:24]  # the IHDR chunk's width and height
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


if __name__ == "__main__":
    main()
