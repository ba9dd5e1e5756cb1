"""Results independent of the machine's load (a script, not a test; figures go to README's Results): fresh clones of
this repository's HEAD each run `dvc repro --force` (every stage computed again: a plain `dvc repro` would skip the
evaluate stage, whose committed outputs match once training has made the same checkpoint), the first alone, then the
others all started together on the same cores (one lock folder, as every run on one machine shares). Prints each
run's wall time, the waits its log shows (`devices: got N CPU cores after waiting S s`), and whether every clone
wrote the same `metrics/eval.json`, `reports/predictions.json` and `dvc.lock` as HEAD committed (md5 of each, `git
status` of each clone).

Commit before running: the clones hold committed files only. Run from the repository root, with the project's
environment on PATH (`./dev.sh setup`, then `PATH=.venv/bin:$PATH`):
  python benchmarks/clones.py --together 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from common import SCRATCH, machine

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("metrics/eval.json", "reports/predictions.json", "dvc.lock")
WAITED = re.compile(r"devices: got \d+ CPU cores? after waiting (\d+) s")


def clone(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(folder)], check=True)


def start(folder: Path, locks: Path) -> tuple[subprocess.Popen, float]:
    """`dvc repro --force` in `folder` with the clone's own `slr` first on the path; output to folder/repro.log."""
    env = {**os.environ, "PYTHONPATH": str(folder / "src"), "DVC_NO_ANALYTICS": "1", "SLR_LOCK_DIR": str(locks)}
    with (folder / "repro.log").open("w") as log:  # the child keeps its own copy of the file open
        process = subprocess.Popen(["dvc", "repro", "--force"], cwd=folder, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    return process, time.monotonic()


def finish(folder: Path, run: tuple[subprocess.Popen, float]) -> str:
    process, started = run
    code = process.wait()
    seconds = time.monotonic() - started
    log = (folder / "repro.log").read_text()
    if code != 0:
        raise SystemExit(f"dvc repro --force failed in {folder} (exit {code}):\n{log[-3000:]}")
    waits = [int(s) for s in WAITED.findall(log)]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True,
                            check=True).stdout.split("\n")
    changed = [line for line in status if line.strip() and not line.endswith("repro.log")]
    sums = {path: hashlib.md5((folder / path).read_bytes()).hexdigest()[:12] for path in OUTPUTS}
    return (f"{folder.name}: {seconds:.0f} s, waited {len(waits)} times ({', '.join(f'{w} s' for w in waits) or '-'}); "
            f"git status {'clean' if not changed else changed}; " + ", ".join(f"{p} {s}" for p, s in sums.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--together", type=int, default=2, help="clones started together after the one alone")
    args = parser.parse_args()
    if shutil.which("dvc") is None:
        raise SystemExit("dvc is not on PATH: run ./dev.sh setup, then PATH=.venv/bin:$PATH")
    root = SCRATCH / "clones"
    locks = root / "locks"
    shutil.rmtree(locks, ignore_errors=True)
    locks.mkdir(parents=True)
    folders = [root / f"clone-{i}" for i in range(1 + args.together)]
    for folder in folders:
        clone(folder)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    committed = {path: hashlib.md5(subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True,
                                                  check=True).stdout).hexdigest()[:12] for path in OUTPUTS}
    print(f"HEAD {head} committed: " + ", ".join(f"{p} {s}" for p, s in committed.items()))
    print(f"before: {machine()}", flush=True)
    print("alone:    " + finish(folders[0], start(folders[0], locks)), flush=True)
    runs = [(folder, start(folder, locks)) for folder in folders[1:]]
    for folder, run in runs:
        print("together: " + finish(folder, run), flush=True)
    print(f"after:  {machine()}")


if __name__ == "__main__":
    main()
