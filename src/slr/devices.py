"""Which device a run computes on: one decision, made before CUDA starts, that every stage uses; and, when several
runs share a machine, GPUs and CPU cores that no other run holds.

The decision reads the driver (NVML), not torch: `torch.cuda.is_available()` starts CUDA, after which
CUDA_VISIBLE_DEVICES no longer narrows what the process sees, and it cannot say why a GPU is unusable. A GPU that
the driver shows but this torch build cannot drive (a driver older than the build's CUDA, a GPU older than its
oldest kernels) stops the run in one line instead of training silently on the CPU.

`dvc queue start -j N` runs N experiments at once, each in a temporary copy of the repository, and gives none of
them a device of its own. The runs meet in one machine-wide folder instead, $SLR_LOCK_DIR (default /tmp/slr-locks):
one lock file per GPU and per CPU core, held with flock(2), which the kernel releases when the holder ends however
it ends (kill -9 included), so a crashed run never keeps a device. A CPU run takes as many cores as it has threads
and waits while they are busy, as a GPU run waits for a GPU: its thread count, and so its numbers, never depend on
what else runs on the machine.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slr.distributed import under_torchrun
from slr.errors import UserError

LOCK_DIR = "SLR_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/slr-locks")
# The oldest driver series of each CUDA major version (NVIDIA's CUDA compatibility tables).
DRIVER_SERIES = {11: "450", 12: "525", 13: "580"}
BF16_CAPABILITY = (8, 0)  # cuDNN runs bf16 convolutions from Ampere on; older GPUs only emulate bf16, slowly
CPU_FIX = "-S train.device=cpu -S evaluate.device=cpu"  # the one-line errors' fix for an experiment
EVALUATE_CPU_FIX = "-S evaluate.device=cpu"  # ... and for the evaluate stage alone


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    name: str
    capability: tuple[int, int]


@dataclass(frozen=True)
class Machine:
    """This machine's GPUs as the driver reports them (NVML), in NVML's (PCI bus) order."""

    gpus: tuple[GpuInfo, ...] = ()
    driver: str | None = None  # the driver's version, e.g. "535.104.05"
    driver_cuda: tuple[int, int] | None = None  # the newest CUDA version the driver supports, e.g. (12, 2)
    source: str = "NVML"  # who said so: NVML, or torch (asked in another process) where NVML is missing

    def describe(self, uuids: Sequence[str]) -> str:
        """E.g. "NVML sees 1 GPU (Tesla T4, compute capability 7.5) with driver 535.104.05 (CUDA 12.2)"."""
        chosen = [gpu for gpu in self.gpus if gpu.uuid in uuids] or list(self.gpus)
        kinds = sorted({f"{gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}" for gpu in chosen})
        driver = f" with driver {self.driver}" if self.driver else ""
        cuda = f" (CUDA {self.driver_cuda[0]}.{self.driver_cuda[1]})" if self.driver_cuda else ""
        return f"{self.source} sees {_count(len(uuids), 'GPU')} ({'; '.join(kinds)}){driver}{cuda}"


@dataclass(frozen=True)
class Build:
    """What this torch build can drive: the CUDA version it was built for and the GPU architectures it has code for
    (SASS runs on its own major version from its minor on; PTX is compiled by the driver for any newer GPU)."""

    version: str
    cuda: tuple[int, int] | None  # None: a CPU-only build
    sass: tuple[tuple[int, int], ...] = ()
    ptx: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of_torch(cls) -> Build:
        if not torch.backends.cuda.is_built() or torch.version.cuda is None:
            return cls(torch.__version__, None)
        flags = torch._C._cuda_getArchFlags().split()  # e.g. "sm_75 sm_80 ... sm_120"; compiled in, starts nothing
        return cls(torch.__version__, _version(torch.version.cuda),
                   tuple(_arch(f) for f in flags if f.startswith("sm_")),
                   tuple(_arch(f) for f in flags if f.startswith("compute_")))

    def runs_on(self, capability: tuple[int, int]) -> bool:
        major, minor = capability
        return (any(a == major and b <= minor for a, b in self.sass)
                or any(arch <= capability for arch in self.ptx))

    def needs(self) -> str:
        assert self.cuda is not None
        series = DRIVER_SERIES.get(self.cuda[0])
        oldest = min((*self.sass, *self.ptx), default=None)
        return (f"CUDA {self.cuda[0]}.{self.cuda[1]} (a driver of the {series} series or newer)" if series else
                f"CUDA {self.cuda[0]}.{self.cuda[1]}") + \
            (f" and a GPU of compute capability {oldest[0]}.{oldest[1]} or newer" if oldest else "")


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int(minor)


def _arch(flag: str) -> tuple[int, int]:
    digits = flag.split("_", 1)[1].rstrip("af")  # sm_90a, sm_100f: arch-specific variants of 9.0 and 10.0
    return int(digits[:-1]), int(digits[-1])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_machine() -> Machine:
    """This machine's GPUs, read without starting CUDA in this process: from NVML, or, where NVML is missing but a
    CUDA driver is installed (a container without the NVML library), from torch in a process of its own."""
    if not torch.backends.cuda.is_built():
        return Machine()
    import pynvml  # nvidia-ml-py

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return _ask_torch()
    try:
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12020 for 12.2
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(GpuInfo(_text(pynvml.nvmlDeviceGetUUID(handle)), _text(pynvml.nvmlDeviceGetName(handle)),
                                tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))))
        return Machine(tuple(gpus), _text(pynvml.nvmlSystemGetDriverVersion()), (cuda // 1000, cuda % 1000 // 10))
    finally:
        pynvml.nvmlShutdown()


_PROBE = """
import json, torch
gpus = []
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"uuid": "GPU-" + str(p.uuid), "name": p.name, "capability": [p.major, p.minor]})
print(json.dumps(gpus))
"""


def _ask_torch() -> Machine:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Machine()  # no CUDA driver at all: nothing to ask
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # NVML's order, in which CUDA_VISIBLE_DEVICES indices are read
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120,
                             check=True).stdout
        gpus = tuple(GpuInfo(g["uuid"], g["name"], tuple(g["capability"])) for g in json.loads(out))
    except (subprocess.SubprocessError, ValueError, KeyError):
        return Machine(source="torch")
    return Machine(gpus, source="torch")


@dataclass(frozen=True)
class Gpu:
    entry: str  # how CUDA_VISIBLE_DEVICES names it: an index, a UUID (or a prefix of one) or a MIG id
    key: str  # the physical GPU (its UUID): runs that name it differently share its lock


def visible_gpus(cuda_visible: str | None, physical: Sequence[str]) -> list[Gpu]:
    """The GPUs a process may use: every one of `physical` (named by UUID, so the choice never depends on CUDA's
    numbering), or the entries of CUDA_VISIBLE_DEVICES (`cuda_visible`) read as CUDA reads them: an entry that names
    no GPU ends the list, a repeated one hides them all. Indices map to `physical` in NVML's (PCI bus) order, which is
    CUDA's for identical GPUs or with CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    if not physical:
        return []
    if cuda_visible is None:
        return [Gpu(uuid, uuid) for uuid in physical]
    gpus: list[Gpu] = []
    for entry in (part.strip() for part in cuda_visible.split(",")):
        matches = [uuid for uuid in physical if entry.startswith("GPU-") and uuid.startswith(entry)]
        if entry.isdigit() and int(entry) < len(physical):
            key = physical[int(entry)]
        elif len(matches) == 1:
            key = matches[0]
        elif entry.startswith("MIG-"):
            key = entry
        else:
            break
        if key in (gpu.key for gpu in gpus):
            return []
        gpus.append(Gpu(entry, key))
    return gpus


@dataclass(frozen=True)
class Decision:
    """Where a run computes: "cuda" on (a choice of) `gpus`, or "cpu"."""

    device: str
    gpus: list[Gpu] = field(default_factory=list)
    machine: Machine = field(default_factory=Machine)


def decide(requested: str, *, setting: str, count: int = 1, amp: str | None = None, cpu_fix: str = CPU_FIX,
           machine: Machine | None = None, build: Build | None = None,
           cuda_visible: str | None = None) -> Decision:
    """The device for a run asked for as `requested` ("auto", "cuda" or "cpu") by `setting`, with `count` processes
    and autocast `amp`, from the driver's view of the GPUs and what this torch build supports; never starts CUDA.

    auto means the GPUs when the driver shows any, so a GPU that this torch cannot use is an error (with the fix),
    never a silent CPU run. `machine`, `build` and `cuda_visible` default to this machine, this torch and
    $CUDA_VISIBLE_DEVICES.
    """
    if requested == "cpu":
        return Decision("cpu")
    machine = read_machine() if machine is None else machine
    build = Build.of_torch() if build is None else build
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES") if cuda_visible is None else cuda_visible
    gpus = visible_gpus(visible_env, [gpu.uuid for gpu in machine.gpus])
    if not gpus:
        if requested == "cuda":
            shown = "" if visible_env is None else f" (CUDA_VISIBLE_DEVICES={visible_env})"
            raise UserError(f"{setting} is cuda but no CUDA GPU is visible{shown}; set it to auto or cpu")
        return Decision("cpu", machine=machine)
    chosen = [gpu for gpu in machine.gpus if gpu.uuid in {g.key for g in gpus}]
    seen = machine.describe([g.key for g in gpus])
    if build.cuda is None:
        raise UserError(f"{seen}, but this torch ({build.version}) is a CPU-only build: install a CUDA build of torch, "
                        f"or run on the CPU on purpose: {cpu_fix}")
    old_driver = machine.driver_cuda is not None and machine.driver_cuda[0] < build.cuda[0]
    old_gpus = [gpu for gpu in chosen if not build.runs_on(gpu.capability)]
    if old_driver or old_gpus:
        fix = (f"a torch build for CUDA {machine.driver_cuda[0]}.{machine.driver_cuda[1]} (or a newer driver)"
               if old_driver and machine.driver_cuda else "a torch build with kernels for this GPU")
        raise UserError(f"{seen}, but this torch ({build.version}) needs {build.needs()}: install {fix}, "
                        f"or run on the CPU on purpose: {cpu_fix}")
    slow = [gpu for gpu in chosen if gpu.capability < BF16_CAPABILITY]
    if amp == "bf16" and slow:
        gpu = slow[0]
        raise UserError(f"train.amp is bf16, but {gpu.name} (compute capability {gpu.capability[0]}."
                        f"{gpu.capability[1]}) only emulates bf16, slowly (cuDNN runs bf16 convolutions from 8.0 on); "
                        "set train.amp=fp16")
    if count > len(gpus):
        shown = "" if visible_env is None else f" (CUDA_VISIBLE_DEVICES={visible_env})"
        raise UserError(f"train.nproc_per_node is {count} but {_count(len(gpus), 'GPU')} "
                        f"{'is' if len(gpus) == 1 else 'are'} visible{shown}; lower it to {len(gpus)} or make more "
                        "GPUs visible")
    return Decision("cuda", gpus, machine)


def check_torch_sees(decision: Decision, count: int, cpu_fix: str = CPU_FIX) -> None:
    """Fail in one line unless torch can use `count` of the GPUs the driver showed. This starts CUDA: call it once
    CUDA_VISIBLE_DEVICES names the run's GPUs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if seen >= count:
        return
    why = next((str(w.message).splitlines()[0] for w in caught), "torch.cuda.is_available() is False")
    raise UserError(f"{decision.machine.describe([g.key for g in decision.gpus])}, but torch ({torch.__version__}) "
                    f"sees {seen} ({why.rstrip('.')}): install a torch build for this driver, or run on the CPU on "
                    f"purpose: {cpu_fix}")


def lock_dir() -> Path:
    """The machine-wide lock folder, created on first use open to every user's runs (sticky, like /tmp)."""
    folder = Path(os.environ.get(LOCK_DIR) or DEFAULT_LOCK_DIR)
    try:
        folder.mkdir(parents=True)
        folder.chmod(0o1777)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError(f"cannot create the lock folder {folder} ({exc.strerror}); set {LOCK_DIR} to a folder that "
                        "every run on this machine can write") from None
    return folder


def _try_lock(path: Path) -> int | None:
    """Take `path`'s lock without waiting: the descriptor that now holds it, or None when someone else holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)  # another user's lock file: flock needs no write access
        except OSError as exc:
            raise UserError(f"cannot open the lock file {path} ({exc.strerror}); set {LOCK_DIR} to a folder that "
                            "every run on this machine can write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _mark(fd: int) -> None:
    """Write this process's id into a lock it holds, for the message of a run that waits for it."""
    with suppress(OSError):
        os.fchmod(fd, 0o666)  # only the file's owner may; then other users' runs can write their id too
    with suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _gpu_lock(folder: Path, gpu: Gpu) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu.key)}.lock"


def take_locks(paths: Sequence[Path], count: int, noun: str, poll_s: float,
               say: Callable[[str], None]) -> list[tuple[int, int]]:
    """Lock `count` of `paths` (each one device: a GPU or a CPU core) all at once, waiting while fewer are free;
    return each taken one's position in `paths` with its lock's descriptor.

    A pass that finds too few free releases what it took before it sleeps, so a waiting run never keeps a device
    from a run that needs fewer.
    """
    waited_since = None
    while True:
        taken: list[tuple[int, int]] = []
        for i, path in enumerate(paths):
            fd = _try_lock(path)
            if fd is not None:
                taken.append((i, fd))
                if len(taken) == count:
                    for _, held in taken:
                        _mark(held)
                    if waited_since is not None:
                        say(f"devices: got {_count(count, noun)} after waiting {time.monotonic() - waited_since:.0f} s")
                    return taken
        for _, fd in taken:
            os.close(fd)
        if waited_since is None:
            free = {i for i, _ in taken}
            busy = [path for i, path in enumerate(paths) if i not in free]
            pids = ", ".join(dict.fromkeys(_holder(path) for path in busy))
            want = f"a free {noun}" if count == 1 else f"{count} free {noun}s at once"
            say(f"devices: waiting for {want}: {len(busy)} of {len(paths)} are held by other runs (pids {pids})")
            waited_since = time.monotonic()
        time.sleep(poll_s)


def _holder(path: Path) -> str:
    with suppress(OSError):
        return path.read_text().strip() or "?"
    return "?"


def _say(message: str) -> None:
    """A device line goes to stderr, where progress bars go: stdout stays the command's result (`slr-test` prints JSON).
    DVC's queue logs hold both."""
    print(message, file=sys.stderr, flush=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def machine_cores() -> int:
    """The cores runs on this machine share (each a lock in the machine-wide folder)."""
    return os.cpu_count() or 1


def cpu_kind() -> str:
    """The CPU's model and the instruction set torch's kernels use on it (AVX2, AVX512...): float results on CPU
    differ between kinds, as oneDNN picks other kernels."""
    name = platform.processor() or platform.machine()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    """What a run's numbers depend on beyond its params, data and code, so that a difference between two machines
    can be explained: the torch build, the device (and CUDA and cuDNN on a GPU), the threads and the kind of CPU."""
    described: dict[str, Any] = {"torch": str(torch.__version__)}  # not TorchVersion: checkpoints load weights_only
    if device.type == "cuda":
        described |= {"device": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version()}
    else:
        described["device"] = "cpu"
    return described | {"threads": threads, "cpu": cpu_kind()}


def configure(device: torch.device) -> None:
    """Kernel choice for `device`: deterministic kernels on CPU, so that a CPU run repeats to the last digit; on a
    GPU cuDNN's autotuner, which picks the fastest kernel for each input shape once (training feeds one shape, and
    evaluation the same shape under every frame ordering): deterministic 3D-convolution kernels would cost much of
    the speed, so GPU results vary in their last digits between runs."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


@contextmanager
def claimed(requested: str, count: int = 1, *, threads: int, setting: str, amp: str | None = None,
            cpu_fix: str = CPU_FIX, gpus: Sequence[Gpu] | None = None, poll_s: float = 1.0,
            say: Callable[[str], None] = _say) -> Iterator[torch.device]:
    """Hold the device this run computes on until the block ends (or the process does), after `decide` chose it:
    `count` GPUs that no other run holds, taken all at once; or `threads` x `count` CPU cores (at most the machine's),
    each run waiting while others hold what it needs. Every process computes with exactly `threads` torch threads,
    whatever else runs. Call before anything starts CUDA: the GPUs taken become CUDA_VISIBLE_DEVICES, which the
    processes this one starts (torchrun's) inherit, so they see cuda:0..count-1.

    Args:
        requested: "auto" (GPUs when the driver shows any), "cuda" or "cpu".
        count: processes of the run (train.nproc_per_node): a GPU each, or `threads` cores each.
        threads: torch threads per process (train.threads).
        setting: the param or option that asked, for the one-line errors.
        amp: the run's autocast (train.amp), refused where the GPU cannot run it well.
        cpu_fix: how to ask for the CPU, for the one-line errors ("--device cpu" for slr-test).
        gpus: a simulated machine's GPUs (tests): taken as visible and usable, without asking the driver or torch.
    """
    if threads < 1:  # take_locks would wait for ever, torch would raise
        raise UserError(f"{threads} torch threads per process: it takes at least 1 (train.threads; slr-test: "
                        "--threads)")
    saved_visible, saved_threads = os.environ.get("CUDA_VISIBLE_DEVICES"), torch.get_num_threads()
    fds: list[int] = []
    try:
        if gpus is not None:
            decision = Decision("cuda" if gpus and requested != "cpu" else "cpu", list(gpus))
        else:
            # Under torchrun each process uses its LOCAL_RANK's GPU, which distributed.start checks.
            decision = decide(requested, setting=setting, count=1 if under_torchrun() else count, amp=amp,
                              cpu_fix=cpu_fix)
        if under_torchrun():
            pass  # placed by its launcher: the stage's relaunch, which holds the run's devices, or a starter's torchrun
        elif decision.device == "cuda":
            taken = take_locks([_gpu_lock(lock_dir(), gpu) for gpu in decision.gpus], count, "GPU", poll_s, say)
            fds = [fd for _, fd in taken]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(decision.gpus[i].entry for i, _ in taken)
            say(f"devices: this run holds {_count(count, 'GPU')} of {len(decision.gpus)}: "
                f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
            if gpus is None:
                check_torch_sees(decision, count, cpu_fix)
        else:
            folder, cores = lock_dir(), machine_cores()
            need = min(threads * count, cores)
            taken = take_locks([folder / f"cpu-{i}.lock" for i in range(cores)], need, "CPU core", poll_s, say)
            fds = [fd for _, fd in taken]
            say(f"devices: CPU, {_count(threads, 'thread')} per process, holding {need} of this machine's "
                f"{_count(cores, 'core')}")
        torch.set_num_threads(threads)
        yield torch.device(decision.device)
    finally:
        torch.set_num_threads(saved_threads)
        for fd in fds:
            os.close(fd)
        if saved_visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_visible
