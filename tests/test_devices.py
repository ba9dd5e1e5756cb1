"""One GPU per run, and a fair share of the cores on CPU, between real processes (slr.devices).

No GPU here: the holders below are given a simulated machine (`visible_gpus` over made-up UUIDs) and otherwise run
the real code, locks and waiting included. Each holder prints `held <CUDA_VISIBLE_DEVICES>` once it holds its
devices and keeps them until the test closes its stdin or kills it; the test reads that line before it goes on, so
no step relies on timing.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from slr.devices import THREAD_BUDGET, CoreShare, Gpu, claimed, cpu_runs, visible_gpus

PHYSICAL = ["GPU-0a0a-fake", "GPU-1b1b-fake", "GPU-2c2c-fake"]

HOLDER = """
import os, subprocess, sys
from slr.cli import run_main
from slr.devices import claimed, visible_gpus

def main():
    device, count = sys.argv[1], int(sys.argv[2])
    gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), {physical!r}[:int(sys.argv[3])])
    with claimed(device, count, setting="train.nproc_per_node", gpus=gpus, poll_s=0.02):
        child = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"  # what torchrun's workers would see
        seen = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip()
        print("child sees", seen, flush=True)
        print("held", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        sys.stdin.read()

run_main(main)
""".format(physical=PHYSICAL)


class Holder:
    """A process that takes `count` devices of a machine with `gpus` GPUs (0: the CPU) and holds them."""

    def __init__(self, locks: Path, count: int = 1, gpus: int = 2, visible: str | None = None) -> None:
        env = {**os.environ, "SLR_LOCK_DIR": str(locks)}
        for name in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK", THREAD_BUDGET):  # a run started from a shell
            env.pop(name, None)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        device = "auto" if gpus else "cpu"
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, device, str(count), str(gpus)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str) -> str:
        """The next line of its output that starts with `prefix` (failing if it ends first)."""
        seen = []
        while (line := self.lines.get(timeout=60)) is not None:
            if line.startswith(prefix):
                return line
            seen.append(line)
        pytest.fail(f"no line starting {prefix!r}; output:\n" + "\n".join(seen))

    def rest(self) -> list[str]:
        """Every line it prints until it exits."""
        return list(iter(lambda: self.lines.get(timeout=60), None))

    def held(self) -> list[str]:
        return self.expect("held ").split()[1].split(",")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to release anything; only the kernel can."""
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


def start(holders: list[Holder], locks: Path, **kwargs: object) -> Holder:
    holder = Holder(locks, **kwargs)
    holders.append(holder)
    return holder


def test_two_runs_never_hold_the_same_gpu(holders: list[Holder], tmp_path: Path) -> None:
    first = start(holders, tmp_path, gpus=2).held()
    second = start(holders, tmp_path, gpus=2).held()
    assert first == [PHYSICAL[0]] and second == [PHYSICAL[1]]  # named by UUID: CUDA's numbering cannot mislead


def test_runs_started_together_split_the_gpus_and_the_rest_wait(holders: list[Holder], tmp_path: Path) -> None:
    runs = [start(holders, tmp_path, gpus=2) for _ in range(4)]
    first = [run.expect("devices: ") for run in runs]  # each either holds a GPU or waits
    held = sorted(line.rsplit("=", 1)[1] for line in first if "holds" in line)
    assert held == PHYSICAL[:2] and sum("waiting" in line for line in first) == 2


def test_a_waiting_run_says_so_and_takes_the_gpu_of_a_killed_one(holders: list[Holder], tmp_path: Path) -> None:
    a = start(holders, tmp_path, gpus=2)
    a_gpu = a.held()
    b = start(holders, tmp_path, gpus=2)
    b.held()
    c = start(holders, tmp_path, gpus=2)
    assert c.expect("devices: waiting") == (f"devices: waiting for a free GPU: 2 of 2 are held by other runs "
                                            f"(pids {a.proc.pid}, {b.proc.pid})")
    a.kill()  # kill -9: the kernel releases its lock
    assert c.expect("devices: got").startswith("devices: got 1 GPU after waiting")
    assert c.held() == a_gpu


def test_ddp_takes_its_gpus_at_once_and_its_workers_see_them(holders: list[Holder], tmp_path: Path) -> None:
    single = start(holders, tmp_path, gpus=3)
    assert single.held() == [PHYSICAL[0]]
    ddp = start(holders, tmp_path, count=2, gpus=3)
    assert ddp.expect("child sees") == f"child sees {PHYSICAL[1]},{PHYSICAL[2]}"
    waiting = start(holders, tmp_path, count=2, gpus=3)
    assert waiting.expect("devices: waiting").startswith("devices: waiting for 2 free GPUs at once: 3 of 3 are held")
    single.kill()
    # one GPU free is not enough for it, and it must not sit on that one meanwhile: a one-GPU run gets it
    assert start(holders, tmp_path, gpus=3).held() == [PHYSICAL[0]]
    ddp.kill()
    assert waiting.held() == [PHYSICAL[1], PHYSICAL[2]]


def test_cuda_visible_devices_is_honoured_and_a_gpu_is_one_lock_however_named(
    holders: list[Holder], tmp_path: Path
) -> None:
    a = start(holders, tmp_path, gpus=3, visible="1")
    assert a.held() == ["1"]
    b = start(holders, tmp_path, gpus=3, visible="1,2")  # the first GPU it names is a's: it takes the other
    assert b.held() == ["2"]
    c = start(holders, tmp_path, count=2, gpus=3, visible="0,1")
    assert c.expect("devices: waiting") == (f"devices: waiting for 2 free GPUs at once: 1 of 2 are held by other "
                                            f"runs (pids {a.proc.pid})")
    a.kill()
    assert c.held() == ["0", "1"]


def test_more_gpus_than_visible_is_one_line(holders: list[Holder], tmp_path: Path) -> None:
    run = start(holders, tmp_path, count=3, gpus=3, visible="0,2")
    assert run.rest() == [
        "error: train.nproc_per_node is 3 but 2 GPUs are visible (CUDA_VISIBLE_DEVICES=0,2); "
        "lower it to 2 or make more GPUs visible"
    ]
    assert run.proc.wait(timeout=60) == 2


@pytest.mark.parametrize(
    ("cuda_visible", "expected"),
    [
        (None, [(uuid, uuid) for uuid in PHYSICAL]),  # all of the machine's GPUs, by UUID
        ("2,0", [("2", PHYSICAL[2]), ("0", PHYSICAL[0])]),  # CUDA's order: the entries'
        ("GPU-1b", [("GPU-1b", PHYSICAL[1])]),  # a unique prefix of a UUID, as CUDA takes it
        ("1,7,0", [("1", PHYSICAL[1])]),  # an entry that names no GPU ends the list
        ("0,0", []),  # a repeated entry hides every GPU
        ("", []),
        ("-1", []),
    ],
)
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(cuda_visible: str | None, expected: list) -> None:
    assert visible_gpus(cuda_visible, PHYSICAL) == [Gpu(entry, key) for entry, key in expected]


def test_no_driver_means_no_gpu_whatever_cuda_visible_devices_says() -> None:
    assert visible_gpus("0,1", []) == []


def test_cpu_runs_share_the_cores_and_a_run_alone_keeps_them_all(
    holders: list[Holder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLR_LOCK_DIR", str(tmp_path))
    default = torch.get_num_threads()
    with claimed("cpu", setting="evaluate.device"):  # alone: exactly torch's own choice, as before sharing existed
        assert torch.get_num_threads() == default and cpu_runs(tmp_path) == 1
    assert cpu_runs(tmp_path) == 0
    a = start(holders, tmp_path, gpus=0)
    a.held()
    b = start(holders, tmp_path, gpus=0)
    assert "(2 CPU slots held on this machine)" in b.expect("devices: CPU")
    b.held()
    share = CoreShare(tmp_path, budget=8)
    try:
        share.rebalance(announce=True)
        assert torch.get_num_threads() == 4
        a.kill()
        share.rebalance(announce=True)
        assert cpu_runs(tmp_path) == 1 and torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(default)


def test_ranks_of_a_relaunched_cpu_run_split_its_threads_and_a_hand_started_torchrun_locks_nothing(
    holders: list[Holder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLR_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    default = torch.get_num_threads()
    # a torchrun started by hand: its starter placed the processes, even where fewer GPUs seem visible
    with claimed("auto", 4, setting="train.nproc_per_node", gpus=[Gpu("0", PHYSICAL[0])]) as device:
        assert device.type == "cuda" and not list(tmp_path.iterdir())
    launcher = start(holders, tmp_path, count=2, gpus=0)  # the relaunching stage holds a slot per rank
    launcher.held()
    monkeypatch.setenv(THREAD_BUDGET, "8")
    try:
        with claimed("auto", 2, setting="train.nproc_per_node", gpus=[]):
            assert torch.get_num_threads() == 4 and cpu_runs(tmp_path) == 2
        assert torch.get_num_threads() == default
    finally:
        torch.set_num_threads(default)
