"""Shared fixtures: the repository root and the real WLASL metadata (skipped cleanly where it is absent)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from slr.params import TrainParams, from_dict

REPO = Path(__file__).resolve().parents[1]
# The real WLASL metadata lives beside the checkout (never in git); WLASL_METADATA overrides the location.
WLASL_DIR = Path(os.environ.get("WLASL_METADATA", REPO.parent / "shared" / "wlasl"))


@pytest.fixture(scope="session", autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """This session's runs take GPUs and CPU cores (slr.devices) among themselves only: runs elsewhere on the machine
    (another clone's pipeline, another test session) neither wait for them nor make them wait."""
    os.environ["SLR_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))


@pytest.fixture(scope="session")
def wlasl_dir() -> Path:
    if not (WLASL_DIR / "WLASL_v0.3.json").is_file():
        pytest.skip(f"real WLASL metadata not found in {WLASL_DIR} (set WLASL_METADATA to its folder)")
    return WLASL_DIR


@pytest.fixture(params=["refuses", "never answers"])
def offline_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """http://127.0.0.1:PORT of a server that is offline both ways a download meets: the connection is refused, or
    accepted into the backlog and then never answered (where only a timeout ends the wait)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if request.param == "refuses":
        listener.close()
    else:
        listener.listen()
    yield f"http://127.0.0.1:{port}"
    listener.close()


# The tiny synthetic config of the end-to-end tests: the whole pipeline in well under a minute. They run on the CPU
# wherever they run (their expectations are the CPU's: exact repeats, "2 x cpu"); the CUDA tests ask for the GPU.
TINY = {
    "data": {"synthetic": {"pairs": 2, "signers": 3, "train_per_class": 6, "val_per_class": 2, "test_per_class": 3,
                           "video_size": 32}},
    "preprocess": {"num_frames": 8, "frame_size": 20},
    "train": {"epochs": 2, "batch_size": 4, "crop_size": 16, "device": "cpu"},
    "evaluate": {"batch_size": 5, "sweep_count": 4, "device": "cpu"},
}


@pytest.fixture(scope="session")
def small_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/ (a synthetic WLASL copy of 4 glosses) and clips/ (its 8-frame clips of 20 x 20) in one folder, made
    without DVC: for tests that train or score a model directly."""
    from slr.data.clip import ClipSpec
    from slr.data.metadata import load_index
    from slr.data.preprocess import preprocess
    from slr.data.synthetic import generate
    from slr.params import SyntheticParams

    root = tmp_path_factory.mktemp("small")
    generate(SyntheticParams(seed=0, pairs=2, signers=3, train_per_class=4, val_per_class=2, test_per_class=3,
                             video_size=32, fps=25), root / "raw")
    index = load_index(root / "raw" / "WLASL_v0.3.json").subset("asl100")
    preprocess(index, root / "raw" / "videos", root / "clips",
               ClipSpec(num_frames=8, frame_size=20, crop="center", bbox_margin=0.0), workers=1)
    return root


def train_params(**overrides: object) -> TrainParams:
    """params.yaml's train section with `overrides` (nested sections as dicts), e.g. train_params(epochs=1)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    merge(raw, overrides)
    return from_dict(TrainParams, raw, prefix="train.")


def _use_tiny_config(root: Path) -> None:
    """Make TINY the repo's default composition, the way a user adds a recipe: conf/recipe/tiny.yaml (the cpu
    recipe with TINY's sizes) chosen in conf/config.yaml, which also takes TINY's data and evaluate values; then
    params.yaml is composed as `dvc exp run` would, so `dvc repro` and `dvc exp run -S ...` both run TINY."""
    recipe = yaml.safe_load((root / "conf/recipe/cpu.yaml").read_text())
    merge(recipe, {key: TINY[key] for key in ("preprocess", "train")})
    (root / "conf/recipe/tiny.yaml").write_text("# @package _global_\n" + yaml.safe_dump(recipe, sort_keys=False))
    config = yaml.safe_load((root / "conf/config.yaml").read_text())
    config["defaults"] = [{"recipe": "tiny"} if entry == {"recipe": "cpu"} else entry for entry in config["defaults"]]
    merge(config, {key: TINY[key] for key in ("data", "evaluate")})
    (root / "conf/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    compose_params(root / "conf", root / "params.yaml")


def compose_params(conf: Path, out: Path, *overrides: str) -> Path:
    """Write to `out` what `dvc exp run -S <overrides>` makes params.yaml from the Hydra config folder `conf`."""
    compose_and_dump(out, str(conf), None, "config", "", list(overrides))
    return out


def merge(base: dict, update: dict) -> None:
    """Update nested dict `base` in place with `update`, section by section."""
    for key, value in update.items():
        if isinstance(value, dict):
            merge(base[key], value)
        else:
            base[key] = value


def tiny_params_file(folder: Path, **train: object) -> Path:
    """`folder/params.yaml`: the committed params with the tiny config, and `train` overrides; returns its path."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(params, {**TINY, "train": {**TINY["train"], **train}})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def tool_env() -> dict[str, str]:
    """The environment for `dvc` and stage commands: the test's Python first on PATH (DVC stages call `python`)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1"}


def sh(cwd: Path, *args: str, stdout_only: bool = False) -> str:
    """Run a command in `tool_env()`; assert it succeeded and return its output."""
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def queue_status(root: Path) -> str:
    """`dvc queue status` of `root`, asked again when it fails on a half-written file: a queue worker rewrites each
    running task's info file in place (not by rename), and a status read that lands mid-write stops with "unexpected
    error - Expecting value" (treeverse/dvc#8014 shows the same race as "Extra data"). Any other failure fails."""
    for _ in range(10):
        result = subprocess.run(["dvc", "queue", "status"], cwd=root, env=tool_env(), capture_output=True, text=True,
                                timeout=600)
        if result.returncode == 0:
            return result.stdout
        assert "unexpected error - Expecting value" in result.stderr or "unexpected error - Extra data" in \
            result.stderr, f"dvc queue status failed:\n{result.stdout}\n{result.stderr}"
        time.sleep(1)
    raise AssertionError(f"dvc queue status failed 10 times on a half-written info file:\n{result.stderr}")


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's git-visible files as a new git repo, with tiny params, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file() and not name.startswith(("metrics/", "reports/", "plots/", "models/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    _use_tiny_config(root)
    sh(root, "git", "init", "-q")
    # `dvc exp run` commits too: give the repo its own identity, whatever the machine's git config holds.
    sh(root, "git", "config", "user.name", "slr tests")
    sh(root, "git", "config", "user.email", "tests@slr.invalid")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    sh(root, "dvc", "repro")
    return root


@pytest.fixture(scope="session")
def mc3_experiment(repo: Path) -> str:
    """The tiny repo's baseline committed, plus an experiment `mc3` (-S model=MC3_18); returns its name."""
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "baseline")
    sh(repo, "dvc", "exp", "run", "-n", "mc3", "-S", "model=MC3_18")
    return "mc3"


def copy_repo(repo: Path, dest: Path, commit: bool = True) -> Path:
    """A copy of a test repo, with its workspace committed (unless `commit` is false: a commit would leave the
    experiments of the previous one out of `dvc exp show`), that a test may change without touching `repo`.

    The DVC cache is hard-linked rather than copied (hundreds of MB of checkpoints): DVC never writes a cache file in
    place, and removing one (gc) only drops the copy's link.
    """
    dvc_dir = str(repo / ".dvc")
    shutil.copytree(repo, dest, symlinks=True, ignore=lambda folder, _: ["cache", "tmp"] if folder == dvc_dir else [])
    shutil.copytree(repo / ".dvc" / "cache", dest / ".dvc" / "cache", copy_function=os.link)
    if commit:
        sh(dest, "git", "add", "-A")
        sh(dest, "git", "commit", "-qm", "workspace of the test repo", "--allow-empty")
    return dest


GRID_SEEDS = (1, 2, 3)


@pytest.fixture(scope="session")
def queued_grid(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the session repo with three one-epoch MC3_18 experiments, seed1..seed3 (one group for slr-cleanup),
    queued in that order and run by `dvc queue start -j 2`: two at once, sharing the cores (slr.devices)."""
    root = copy_repo(repo, tmp_path_factory.mktemp("grid") / "repo")
    sh(root, "dvc", "exp", "remove", "--all-commits")  # other tests' experiments, if they ran first
    for seed in GRID_SEEDS:
        sh(root, "dvc", "exp", "run", "--queue", "-n", f"seed{seed}", "-S", "model=MC3_18", "-S", "train.epochs=1",
           "-S", f"seed={seed}")
    # The output goes to a file, not a pipe: the workers inherit the command's stdout and keep a pipe open for as long
    # as they live (one may outlive the queue, see end_queue_workers), so reading the pipe to its end could hang.
    log = root.parent / "queue-start.log"
    with log.open("w") as out:
        started = subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=root, env=tool_env(), stdout=out,
                                 stderr=subprocess.STDOUT, timeout=120)
    assert started.returncode == 0, log.read_text()
    try:
        deadline = time.monotonic() + 900
        while True:
            status = queue_status(root)
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, f"the queued grid has not finished in 15 minutes:\n{status}"
            time.sleep(3)
        yield root
    finally:
        end_queue_workers(root)


def end_queue_workers(root: Path) -> None:
    """End the DVC queue workers of `root` that outlive their queue (seen with -j 2: a worker takes the queue for
    empty while it still runs the last task, then misses its own stop request): none may outlast the test run."""
    for pidfile in (root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            if b"queue-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)


def repro_until_epoch_one(repo: Path, dest: Path, stderr: int = subprocess.PIPE) -> tuple[Path, subprocess.Popen]:
    """A copy of `repo` set to train 3 epochs, and its `dvc repro` (in a session of its own, so that a test can kill
    it with the stage it runs) read until training has finished epoch 1, whose checkpoint is then on disk."""
    root = copy_repo(repo, dest)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    process = subprocess.Popen(["dvc", "repro"], cwd=root, env=tool_env(), stdout=subprocess.PIPE, stderr=stderr,
                               text=True, start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch 1/3:"):
            break
    return root, process
