"""One decision of the device (slr.devices): from the driver's view of the GPUs and what this torch build can drive,
before CUDA starts; then one GPU per run, or the run's threads' worth of CPU cores, between real processes.

No GPU here: the decision is given made-up machines (and, end to end, a stand-in NVML library, tests/stubs); the
holders below are given a simulated machine (`visible_gpus` over made-up UUIDs) and otherwise run the real code,
locks and waiting included. Each holder prints `held <CUDA_VISIBLE_DEVICES>` once it holds its
devices and keeps them until the test closes its stdin or kills it; the test reads that line before it goes on, so
no step relies on timing.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pynvml
import pytest
import torch
import yaml

import slr.devices
from slr.devices import (
    Build,
    Decision,
    Gpu,
    GpuInfo,
    Machine,
    check_torch_sees,
    claimed,
    decide,
    read_machine,
    visible_gpus,
)
from slr.errors import UserError

from conftest import REPO, tiny_params_file

STUBS = REPO / "tests" / "stubs"

PHYSICAL = ["GPU-0a0a-fake", "GPU-1b1b-fake", "GPU-2c2c-fake"]

HOLDER = """
import os, subprocess, sys
import torch
import slr.devices
from slr.cli import run_main
from slr.devices import claimed, visible_gpus

def main():
    device, count, gpus, threads, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    slr.devices.machine_cores = lambda: cores  # a machine of `cores` cores
    gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), {physical!r}[:gpus])
    with claimed(device, count, threads=threads, setting="train.device", gpus=gpus, poll_s=0.02):
        child = "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"  # what torchrun's workers would see
        seen = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip()
        print("child sees", seen, flush=True)
        print("threads", torch.get_num_threads(), flush=True)
        print("held", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        sys.stdin.read()

run_main(main)
""".format(physical=PHYSICAL)


class Holder:
    """A process that takes `count` devices of a machine with `gpus` GPUs (0: the CPU) and `cores` cores, and holds
    them; on CPU each of its `count` processes would compute with `threads` threads."""

    def __init__(self, locks: Path, count: int = 1, gpus: int = 2, visible: str | None = None, threads: int = 1,
                 cores: int = 2) -> None:
        env = {**os.environ, "SLR_LOCK_DIR": str(locks)}
        for name in ("CUDA_VISIBLE_DEVICES", "LOCAL_RANK"):  # a run started from a shell
            env.pop(name, None)
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        device = "auto" if gpus else "cpu"
        args = [device, str(count), str(gpus), str(threads), str(cores)]
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, *args], env=env,
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
    assert run.expect("devices: waiting").startswith("devices: waiting for 3 free GPUs at once")


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


def test_a_cpu_run_computes_with_its_threads_and_waits_for_free_cores_rather_than_take_fewer(
    holders: list[Holder], tmp_path: Path
) -> None:
    first = start(holders, tmp_path, gpus=0, threads=2, cores=2)
    assert first.expect("devices: CPU") == "devices: CPU, 2 threads per process, holding 2 of this machine's 2 cores"
    assert first.expect("threads") == "threads 2"
    first.held()
    second = start(holders, tmp_path, gpus=0, threads=2, cores=2)
    assert second.expect("devices: waiting") == (f"devices: waiting for 2 free CPU cores at once: 2 of 2 are held by "
                                                 f"other runs (pids {first.proc.pid})")
    first.kill()
    assert second.expect("devices: got 2 CPU cores after waiting")
    assert second.expect("threads") == "threads 2"  # the same threads as alone: the same numbers


def test_one_thread_runs_share_a_machine_and_more_threads_than_cores_take_them_all(
    holders: list[Holder], tmp_path: Path
) -> None:
    a, b = (start(holders, tmp_path, gpus=0, threads=1, cores=2) for _ in range(2))
    a.held(), b.held()  # one core each: both run at once
    ddp = start(holders, tmp_path, gpus=0, count=2, threads=2, cores=2)  # 2 processes x 2 threads: the whole machine
    assert ddp.expect("devices: waiting").startswith("devices: waiting for 2 free CPU cores at once: 2 of 2 are held")
    a.kill()
    b.kill()
    assert ddp.expect("devices: CPU") == "devices: CPU, 2 threads per process, holding 2 of this machine's 2 cores"
    assert ddp.expect("threads") == "threads 2"


def test_a_hand_started_torchrun_locks_nothing_and_computes_with_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLR_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    default = torch.get_num_threads()
    # its starter placed the processes, even where fewer GPUs seem visible
    with claimed("auto", 4, threads=3, setting="train.device", gpus=[Gpu("0", PHYSICAL[0])]) as device:
        assert device.type == "cuda" and not list(tmp_path.iterdir()) and torch.get_num_threads() == 3
    with claimed("cpu", 2, threads=3, setting="train.device") as device:
        assert device.type == "cpu" and not list(tmp_path.iterdir()) and torch.get_num_threads() == 3
    assert torch.get_num_threads() == default


# --- one decision of the device, from the driver's view and this torch build ---------------------------------------

CU130 = Build("2.14.1+cu130", (13, 0), sass=((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)))


def _machine(*gpus: tuple[str, tuple[int, int]], driver: str = "580.65.06", cuda: tuple[int, int] = (13, 0)) -> Machine:
    return Machine(tuple(GpuInfo(f"GPU-{i}", name, cc) for i, (name, cc) in enumerate(gpus)), driver, cuda)


def test_a_driver_older_than_the_build_stops_with_the_driver_what_torch_needs_and_the_fix() -> None:
    machine = _machine(("Tesla T4", (7, 5)), ("Tesla T4", (7, 5)), driver="535.104.05", cuda=(12, 2))
    with pytest.raises(UserError) as error:
        decide("auto", setting="train.device", machine=machine, build=CU130, cuda_visible=None)
    assert str(error.value) == (
        "NVML sees 2 GPUs (Tesla T4, compute capability 7.5) with driver 535.104.05 (CUDA 12.2), but this torch "
        "(2.14.1+cu130) needs CUDA 13.0 (a driver of the 580 series or newer) and a GPU of compute capability 7.5 or "
        "newer: install a torch build for CUDA 12.2 (or a newer driver), or run on the CPU on purpose: "
        "-S train.device=cpu -S evaluate.device=cpu")


@pytest.mark.parametrize(("name", "capability", "usable"), [
    ("Tesla V100-SXM2-16GB", (7, 0), False),  # older than the build's oldest kernels: "no kernel image"
    ("Tesla T4", (7, 5), True),
    ("NVIDIA L4", (8, 9), True),  # sm_86 code runs on 8.9: same major, newer minor
    ("NVIDIA H100 80GB HBM3", (9, 0), True),
    ("NVIDIA GeForce RTX 5090", (12, 0), True),
    ("a GPU of a major the build has no code for", (11, 0), False),
])
def test_a_gpu_runs_this_build_when_it_has_kernels_of_its_major_version(
    name: str, capability: tuple[int, int], usable: bool
) -> None:
    machine = _machine((name, capability))
    if usable:
        decision = decide("auto", setting="train.device", amp="fp16", machine=machine, build=CU130, cuda_visible=None)
        assert decision.device == "cuda" and [g.key for g in decision.gpus] == ["GPU-0"]
    else:
        with pytest.raises(UserError, match=rf"^NVML sees 1 GPU \({name}, compute capability .* needs CUDA 13.0 .*"
                                            r"install a torch build with kernels for this GPU"):
            decide("auto", setting="train.device", machine=machine, build=CU130, cuda_visible=None)


def test_ptx_covers_newer_gpus() -> None:
    build = Build("x", (13, 0), sass=((9, 0),), ptx=((9, 0),))
    assert build.runs_on((11, 0)) and build.runs_on((9, 0)) and not build.runs_on((8, 9))


def test_bf16_is_refused_where_the_gpu_only_emulates_it() -> None:
    t4 = _machine(("Tesla T4", (7, 5)))
    with pytest.raises(UserError) as error:
        decide("auto", setting="train.device", amp="bf16", machine=t4, build=CU130, cuda_visible=None)
    assert str(error.value) == ("train.amp is bf16, but Tesla T4 (compute capability 7.5) only emulates bf16, slowly "
                                "(cuDNN runs bf16 convolutions from 8.0 on); set train.amp=fp16")
    assert decide("auto", setting="train.device", amp="fp16", machine=t4, build=CU130, cuda_visible=None).device == "cuda"
    a100 = _machine(("NVIDIA A100-SXM4-40GB", (8, 0)))
    assert decide("auto", setting="train.device", amp="bf16", machine=a100, build=CU130, cuda_visible=None).device == "cuda"


def test_cpu_is_asked_for_or_what_remains_and_cuda_needs_a_gpu() -> None:
    old = _machine(("Tesla V100", (7, 0)))
    assert decide("cpu", setting="train.device", machine=old, build=CU130).device == "cpu"  # on purpose: no check
    assert decide("auto", setting="train.device", machine=Machine(), build=CU130).device == "cpu"
    hidden = decide("auto", setting="train.device", machine=old, build=CU130, cuda_visible="")
    assert hidden.device == "cpu"  # CUDA_VISIBLE_DEVICES hides the GPU: the run may not use it
    with pytest.raises(UserError, match="^evaluate.device is cuda but no CUDA GPU is visible; set it to auto or cpu$"):
        decide("cuda", setting="evaluate.device", machine=Machine(), build=CU130)
    with pytest.raises(UserError, match=r"^NVML sees 1 GPU .*this torch \(2.14.1\+cpu\) is a CPU-only build"):
        decide("auto", setting="train.device", machine=old, build=Build("2.14.1+cpu", None), cuda_visible=None)
    with pytest.raises(UserError, match="^train.nproc_per_node is 2 but 1 GPU is visible; lower it to 1"):
        decide("auto", setting="train.device", count=2, machine=_machine(("Tesla T4", (7, 5))), build=CU130,
               cuda_visible=None)


def test_torch_disagreeing_with_the_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found version 12020).\nmore")
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    decision = Decision("cuda", [Gpu("GPU-0", "GPU-0")], _machine(("NVIDIA H100 80GB HBM3", (9, 0))))
    with pytest.raises(UserError) as error:
        check_torch_sees(decision, 1)
    assert str(error.value) == (
        "NVML sees 1 GPU (NVIDIA H100 80GB HBM3, compute capability 9.0) with driver 580.65.06 (CUDA 13.0), but torch "
        f"({torch.__version__}) sees 0 (CUDA initialization: The NVIDIA driver on your system is too old (found version "
        "12020)): install a torch build for this driver, or run on the CPU on purpose: -S train.device=cpu -S "
        "evaluate.device=cpu")


def test_without_nvml_torch_is_asked_in_a_process_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # a container without the NVML library but with a CUDA driver: the GPUs still get their locks
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: (_ for _ in ()).throw(pynvml.NVMLError_LibraryNotFound()))
    monkeypatch.setattr(slr.devices.ctypes, "CDLL", lambda name: None)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    probed: list[dict] = []

    def run(args: list[str], env: dict, **kwargs: object) -> subprocess.CompletedProcess:
        probed.append(env)
        gpus = [{"uuid": "GPU-abcd", "name": "NVIDIA A10", "capability": [8, 6]}]
        return subprocess.CompletedProcess(args, 0, stdout=json.dumps(gpus))

    monkeypatch.setattr(slr.devices.subprocess, "run", run)
    machine = read_machine()
    assert machine == Machine((GpuInfo("GPU-abcd", "NVIDIA A10", (8, 6)),), source="torch")
    assert probed[0]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # NVML's order, in which CUDA_VISIBLE_DEVICES is read
    assert decide("auto", setting="train.device", machine=machine, build=CU130, cuda_visible=None).device == "cuda"


def test_a_machine_whose_gpu_torch_cannot_use_stops_the_check_stage(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STUBS), os.environ.get("PYTHONPATH", "")]),
           "FAKE_NVML": json.dumps({"driver": "535.104.05", "cuda": 12020,
                                    "gpus": [{"name": "Tesla T4", "uuid": "GPU-5e1f", "capability": [7, 5]}]})}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    check = [sys.executable, str(REPO / "stages/check.py"), str(tmp_path / "params.ok")]
    auto = subprocess.run([*check, "--params", str(tiny_params_file(tmp_path, device="auto"))], env=env,
                          capture_output=True, text=True, timeout=120)
    assert auto.returncode == 2 and auto.stdout == ""
    assert auto.stderr.startswith("error: NVML sees 1 GPU (Tesla T4, compute capability 7.5) with driver 535.104.05")
    assert auto.stderr.count("\n") == 1 and not (tmp_path / "params.ok").exists()
    on_cpu = tiny_params_file(tmp_path, device="cpu")
    params = yaml.safe_load(on_cpu.read_text())
    params["evaluate"]["device"] = "cpu"
    on_cpu.write_text(yaml.safe_dump(params))
    cpu = subprocess.run([*check, "--params", str(on_cpu)], env=env, capture_output=True, text=True, timeout=120)
    assert cpu.returncode == 0, cpu.stderr
    assert cpu.stdout.endswith("(train on cpu, evaluate on cpu)\n")
