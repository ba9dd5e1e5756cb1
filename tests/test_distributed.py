"""Several processes of one run: the stage's own torchrun launch (one `error:` line per failure, whichever rank meets
it first), and two torchrun nodes without a shared filesystem, killed and started again."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import REPO, tiny_params_file

WORKER = """
import os, sys, time
from slr.cli import run_main
from slr.errors import UserError

def main():
    if os.environ["RANK"] == "{rank}":
        {action}
    time.sleep(60)  # the other rank is still busy when torchrun stops it

run_main(main)
"""
LAUNCH = "import sys; from slr.cli import run_main; from slr.distributed import relaunch; " \
         "run_main(lambda: sys.exit(relaunch(2, [sys.argv[1]], 1)))"


def _launch(tmp_path: Path, rank: int, action: str) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(rank=rank, action=action))
    return subprocess.run([sys.executable, "-c", LAUNCH, str(script)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rank", [0, 1])
def test_bad_input_met_by_any_rank_is_one_line(tmp_path: Path, rank: int) -> None:
    # rank 1 failing while rank 0 is still working is the race that printed a second line (or none from rank 0)
    result = _launch(tmp_path, rank, f"raise UserError('rank {rank} met bad input')")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: rank {rank} met bad input"]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


def test_a_crashed_rank_is_named_once_beside_its_own_traceback(tmp_path: Path) -> None:
    result = _launch(tmp_path, 1, "raise RuntimeError('boom')")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: training process 1 of 2 failed with exit code 1; its output above says why"]
    assert "RuntimeError: boom" in result.stderr  # the worker's own traceback says why


# --- two nodes of one run, each with its own folders (no shared filesystem) -----------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(folder: Path, rank: int, port: int) -> subprocess.Popen:
    """One node's `torchrun` of the train stage (static rendezvous on loopback, gloo on CPU), in `folder`: its own copy
    of the clips, its own params.yaml, models/ and live/."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}", str(REPO / "stages/train.py"),
               "clips", "models", "live", "--params", "params.yaml"]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _nodes(repo: Path, root: Path) -> list[Path]:
    folders = []
    for rank in (0, 1):
        folder = root / f"node{rank}"
        folder.mkdir(parents=True)
        shutil.copytree(repo / "data/clips", folder / "clips")
        tiny_params_file(folder, epochs=3, threads=1)
        folders.append(folder)
    return folders


def _finish(nodes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Each node's output once it has exited (a node still running after `timeout` s has hung: the test fails)."""
    logs = []
    for node in nodes:
        try:
            out, _ = node.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in nodes:
                _kill_tree(other.pid)
            pytest.fail("a node of the two-node run hung")
        logs.append(out)
    assert [node.returncode for node in nodes] == [0, 0], "\n\n".join(logs)
    return logs


def _kill_tree(pid: int) -> None:
    """SIGKILL a torchrun and its workers (each in a session of its own, so not in its process group)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@pytest.mark.slow
def test_two_nodes_killed_in_epoch_two_resume_together_and_end_as_an_uninterrupted_run(
    repo: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    whole = _nodes(repo, tmp_path / "whole")
    port = _free_port()
    _finish([_node(folder, rank, port) for rank, folder in enumerate(whole)])
    took = time.monotonic() - started

    killed = _nodes(repo, tmp_path / "killed")
    port = _free_port()
    nodes = [_node(folder, rank, port) for rank, folder in enumerate(killed)]
    assert nodes[0].stdout is not None
    for line in nodes[0].stdout:  # printed once epoch 1's checkpoint is on node 0's disk: epoch 2 is under way
        if line.startswith("epoch 1/3"):
            for node in nodes:
                _kill_tree(node.pid)
            break
    for node in nodes:
        node.wait(timeout=60)
    assert torch.load(killed[0] / "models/last.pth", weights_only=True)["epoch"] == 1
    assert not (killed[1] / "models").exists()  # only rank 0 writes: node 1 has nothing to resume from

    port = _free_port()
    started = time.monotonic()
    logs = _finish([_node(folder, rank, port) for rank, folder in enumerate(killed)])
    resumed_in = time.monotonic() - started
    assert "resuming this run from models/last.pth (process 0's, sent to every process) after epoch 1" \
        in logs[0]
    assert "process 1 has no last.pth of this run: resuming from process 0's after epoch 1" in logs[1]
    assert "epoch 1/3" not in logs[0] and "epoch 2/3" in logs[0] and "epoch 3/3" in logs[0]
    for name in ("best.pth", "last.pth"):
        a = torch.load(whole[0] / "models" / name, weights_only=True)
        b = torch.load(killed[0] / "models" / name, weights_only=True)
        assert a["epoch"] == b["epoch"] and a.keys() == b.keys()
        assert all(torch.equal(b["state_dict"][k], v) for k, v in a["state_dict"].items()), name
    print(f"two nodes: uninterrupted run {took:.0f} s; killed in epoch 2, both nodes resumed at epoch 2 from node 0's "
          f"last.pth in {resumed_in:.0f} s; best.pth and last.pth equal the uninterrupted run's")
