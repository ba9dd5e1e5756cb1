"""The model grid on one machine: queued experiments with two workers (a script, not a test; figures go to
BENCHMARKS.md).

  races   queue COUNT small experiments, run them with `dvc queue start -j 2`, and report what each ended as
          (`dvc queue status`), its metrics, the `devices:` lines of its log, and the log of any that failed.
  timing  two experiments run at once (`dvc exp run --run-all -j 2`, the same workers as `dvc queue start -j 2`,
          but it returns when both are done) against two of the same size one after the other (`-j 1`),
          alternating which goes first; seeds differ everywhere, so no stage is restored from DVC's run cache.

Both work in benchmarks/scratch/grid-repo: a `git clone` of this repository's HEAD with its data prepared once
(`dvc repro preprocess`, the default synthetic set). Each experiment trains R3D_18 for EPOCHS epochs (`-S seed=N -S
train.epochs=EPOCHS`) and evaluates it. Commit before running: the clone holds committed code only. Run from the
repository root:
  python benchmarks/queue_grid.py races --count 4
  python benchmarks/queue_grid.py timing --repeats 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from common import SCRATCH, machine

REPO = Path(__file__).resolve().parents[1]
CLONE = SCRATCH / "grid-repo"
_seeds = itertools.count(int(time.time()) % 100_000 * 10)  # new seeds on every call: nothing from the run cache


def dvc(*args: str, check: bool = True) -> str:
    """Run `dvc ARGS` in the clone, with the clone's own `slr` first on the path (the stages import it)."""
    result = subprocess.run(["dvc", *args], cwd=CLONE, env=_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def dvc_to_file(log: Path, *args: str) -> str:
    """`dvc(ARGS)` for commands that start queue workers: its output goes to `log`, not to a pipe, which the workers
    would inherit and keep open after the command ends. Returns the output."""
    with log.open("w") as out:
        subprocess.run(["dvc", *args], cwd=CLONE, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    return log.read_text()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(CLONE / "src"), "DVC_NO_ANALYTICS": "1"}


def prepare() -> None:
    """The clone at this repository's HEAD, with the default data downloaded and preprocessed into its cache."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    if (CLONE / ".git").is_dir() and subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=CLONE, capture_output=True,
                                                    text=True).stdout.strip() == head:
        return
    shutil.rmtree(CLONE, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(CLONE)], check=True)
    subprocess.run(["git", "checkout", "-q", "-B", "grid", head], cwd=CLONE, check=True)
    for key, value in (("user.name", "slr benchmark"), ("user.email", "bench@slr.invalid")):
        subprocess.run(["git", "config", key, value], cwd=CLONE, check=True)
    print("preparing the data in the clone (dvc repro preprocess) ...", flush=True)
    dvc("repro", "preprocess")
    # queued runs copy only what git tracks: commit what the repro wrote, or each run would redo it
    subprocess.run(["git", "add", "-A"], cwd=CLONE, check=True)
    subprocess.run(["git", "commit", "-qm", "Data prepared", "--allow-empty"], cwd=CLONE, check=True)


def queue(count: int, epochs: int) -> list[int]:
    seeds = [next(_seeds) for _ in range(count)]
    dvc("exp", "run", "--queue", "-S", f"seed={','.join(map(str, seeds))}", "-S", f"train.epochs={epochs}")
    return seeds


def stop_workers() -> None:
    """Let the previous run's queue workers exit, so that the next run has exactly the workers it asks for.

    A worker exits 10 s after it finds the queue empty. On a busy machine its check can time out while it runs a task:
    it then takes the queue for empty, asks itself to stop, misses the request, and serves the queue for ever (seen
    here: `dvc queue status` said `0 active` and `dvc queue stop` did not end it). Such a worker is ended by its pid.
    """
    deadline = time.monotonic() + 30
    for pidfile in sorted((CLONE / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid")):
        pid = int(pidfile.read_text())
        while _is_worker(pid) and time.monotonic() < deadline:
            time.sleep(1)
        if _is_worker(pid):
            print(f"  a queue worker outlived its queue: {pidfile.stem} (pid {pid}); ending it", flush=True)
            os.kill(pid, signal.SIGTERM)
            while _is_worker(pid):
                time.sleep(1)


def _is_worker(pid: int) -> bool:
    try:
        return b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def experiments() -> dict[str, dict]:
    """name -> {seed, ordered top-1, ordered loss, best val loss} for every experiment of the baseline."""
    rows = {}
    for baseline in json.loads(dvc("exp", "show", "--json", "--no-pager")):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                metrics = {name: (m.get("data") or {}) for name, m in (data.get("metrics") or {}).items()}
                ordered = metrics.get("metrics/eval.json", {}).get("ordered", {})
                rows[rev.get("name") or rev["rev"][:7]] = {
                    "seed": (data.get("params") or {}).get("params.yaml", {}).get("data", {}).get("seed"),
                    "top1": ordered.get("top1"), "loss": ordered.get("loss"),
                    "best_val_loss": metrics.get("metrics/train/metrics.json", {}).get("val", {}).get("loss"),
                }
    return rows


def races(args: argparse.Namespace) -> None:
    prepare()
    stop_workers()
    print(f"machine: {machine()}")
    seeds = queue(args.count, args.epochs)
    print(f"queued {args.count} experiments (seeds {seeds}, train.epochs={args.epochs}); dvc queue start -j 2")
    start = time.monotonic()
    print(dvc_to_file(SCRATCH / "grid-queue-start.log", "queue", "start", "-j", "2").strip())
    while True:
        time.sleep(10)
        status = dvc("queue", "status", check=False)
        if "unexpected error - Expecting value" in status:
            continue  # read mid-write: a worker rewrites its task's info file in place (tests/conftest.py queue_status)
        if not any(word in status for word in ("Queued", "Running")):
            break
    print(f"all done after {time.monotonic() - start:.0f} s; machine: {machine()}\n{status}")
    for name, row in experiments().items():
        print(f"{name}: {row}")
    for line in status.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[-1] in ("Success", "Failed"):
            log = dvc("queue", "logs", fields[0], check=False)
            shares = [l for l in log.splitlines() if l.startswith("devices:")]
            print(f"--- {fields[0]} ({fields[-1]}): {shares}")
            if fields[-1] == "Failed":
                print(log[-3000:] or "(no log)")


def timing(args: argparse.Namespace) -> None:
    prepare()
    pairs = []
    for repeat in range(args.repeats):
        times = {}
        for jobs in (2, 1) if repeat % 2 == 0 else (1, 2):
            stop_workers()
            seeds = queue(2, args.epochs)
            load_before = machine()
            start = time.monotonic()
            out = dvc_to_file(SCRATCH / f"grid-run-j{jobs}.log", "exp", "run", "--run-all", "-j", str(jobs))
            times[jobs] = time.monotonic() - start
            if "Failed to reproduce" in out:
                print(out[-3000:])
            print(f"-j {jobs}, seeds {seeds}: {times[jobs]:.1f} s\n  before: {load_before}\n  after:  {machine()}",
                  flush=True)
        pairs.append(times)
    for name, row in experiments().items():
        print(f"{name}: {row}")
    for times in pairs:
        print(f"two experiments at once (-j 2) {times[2]:.1f} s, one after the other (-j 1) {times[1]:.1f} s: "
              f"-j 1 / -j 2 = {times[1] / times[2]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("races", "timing"))
    parser.add_argument("--count", type=int, default=4, help="races: experiments to queue (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="timing: pairs of measurements (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs of each experiment (default: %(default)s)")
    args = parser.parse_args()
    races(args) if args.what == "races" else timing(args)


if __name__ == "__main__":
    main()
