"""How long `slr-report` takes on a pair of 2,000-gloss runs (a script, not a test; figures go to BENCHMARKS.md).

It builds, once, a git repository in benchmarks/scratch/report-2000/ from this checkout's tracked files: the synthetic
set at 2,000 glosses (data.split asl2000, 2 training, 1 val and `--test-per-class` test clips per gloss, 8 frames of
28 px, 1 epoch), `dvc repro` of R3D_18 committed as the base, and the same checkpoint evaluated under another frame
permutation committed on top (see build). Then it times, side by side in one run, `dvc plots diff --json BASE TARGET`
(the reference: the step of DVC that the report builds on) and `slr-report BASE TARGET` (everything, plots rendered),
each `--repeat` times, and prints the medians, their ratio and the size of each run's reports/predictions.json.

Run from the repository root (the build takes 10-40 minutes on 2 cores; later runs reuse it):
  python benchmarks/report_2000.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from common import SCRATCH, machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("metrics/", "reports/", "plots/", "models/")


def params(committed: str, test_per_class: int, shuffle_seed: int) -> dict:
    """The `committed` params.yaml with the 2,000-gloss synthetic set, small clips and 1 epoch, on the CPU."""
    p = yaml.safe_load(committed)
    p["data"]["split"] = "asl2000"
    p["data"]["synthetic"].update(pairs=1000, train_per_class=2, val_per_class=1, test_per_class=test_per_class,
                                  video_size=32)
    p["preprocess"].update(num_frames=8, frame_size=28)
    p["train"].update(epochs=1, batch_size=16, crop_size=24)
    p["evaluate"].update(batch_size=32, sweep_count=4, device="cpu", shuffle_seed=shuffle_seed)
    return p


def sh(cwd: Path, *args: str, code: Path | None = None) -> str:
    """Run a command in `cwd` with the slr package of `code` (default: `cwd`'s own src/, as DVC's stages there)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str((code or cwd) / "src"), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def build(repo: Path, test_per_class: int) -> None:
    """The scratch repository with two committed 2,000-gloss runs, unless they are there: R3D_18 trained and
    evaluated, then the same checkpoint evaluated again under another frame permutation (evaluate.shuffle_seed; a
    second training would double the build, and the report's work is the same whatever the params that differ)."""
    if not (repo / ".git").is_dir():
        files = sh(ROOT, "git", "ls-files").split("\n")
        for name in filter(None, files):
            keep = not name.startswith(RESULTS) or name.endswith(".gitignore")  # models/.gitignore: no .pth in git
            if (ROOT / name).is_file() and keep and name != "dvc.lock":
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, repo / name)
        sh(repo, "git", "init", "-q")
        sh(repo, "git", "config", "user.name", "benchmark")
        sh(repo, "git", "config", "user.email", "benchmark@slr.invalid")
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "init")  # dvclive needs a commit to start from
    done = sh(repo, "git", "log", "--format=%s").splitlines()
    first = sh(repo, "git", "rev-list", "--max-parents=0", "HEAD").strip()
    committed = sh(repo, "git", "show", f"{first}:params.yaml")
    for shuffle_seed in (1, 2):
        message = f"2,000 glosses, evaluate.shuffle_seed {shuffle_seed}"
        if message in done:
            continue
        (repo / "params.yaml").write_text(yaml.safe_dump(params(committed, test_per_class, shuffle_seed), sort_keys=False))
        start = time.perf_counter()
        sh(repo, "dvc", "repro")
        print(f"built run {shuffle_seed} in {time.perf_counter() - start:.0f} s", flush=True)
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", message)


def timed(repo: Path, *args: str) -> float:
    """Wall seconds of a command run in `repo` with this checkout's code (the report being measured)."""
    start = time.perf_counter()
    sh(repo, *args, code=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-per-class", type=int, default=2, help="test clips per gloss (2: 4,000 clips, more "
                        "than asl2000's 2,878)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    repo = SCRATCH / "report-2000"
    build(repo, args.test_per_class)
    print(machine())
    for rev in ("HEAD~1", "HEAD"):
        size = len(sh(repo, "git", "show", f"{rev}:reports/predictions.json").encode())
        clips = sh(repo, "git", "show", f"{rev}:reports/predictions.json").count("\n") - 2
        print(f"{rev}: reports/predictions.json {size / 1000:.1f} kB for {clips} test clips "
              f"({size / clips:.1f} bytes per clip)")
    reference, report = [], []
    for _ in range(args.repeat):
        reference.append(timed(repo, "dvc", "plots", "diff", "--json", "-o", str(repo / "dvc_plots"), "HEAD~1",
                               "HEAD"))
        report.append(timed(repo, sys.executable, "-m", "slr.review", "HEAD~1", "HEAD", "--out", "report"))
    ref, rep = statistics.median(reference), statistics.median(report)
    print(f"dvc plots diff --json: {ref:.1f} s; slr-report: {rep:.1f} s (median of {args.repeat}: "
          f"{', '.join(f'{t:.1f}' for t in report)}); ratio {rep / ref:.2f}")
    print(f"after: {machine()}")


if __name__ == "__main__":
    main()
