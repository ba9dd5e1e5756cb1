"""Which device a run computes on when several runs share a machine: GPUs that no other run holds, or a fair share
of the CPU cores.

`dvc queue start -j N` runs N experiments at once, each in a temporary copy of the repository, and gives none of
them a device of its own. The runs meet in one machine-wide folder instead, $SLR_LOCK_DIR (default /tmp/slr-locks):
one lock file per GPU and per CPU slot, held with flock(2), which the kernel releases when the holder ends however
it ends (kill -9 included), so a crashed run never keeps a GPU.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from slr.distributed import under_torchrun
from slr.errors import UserError

LOCK_DIR = "SLR_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/slr-locks")
# Set for the processes of a CPU run that `slr.distributed.relaunch` starts: the threads the whole run may use.
THREAD_BUDGET = "SLR_THREAD_BUDGET"
REBALANCE_S = 2.0  # how often a CPU run counts again the runs it shares the cores with


@dataclass(frozen=True)
class Gpu:
    entry: str  # how CUDA_VISIBLE_DEVICES names it: an index, a UUID (or a prefix of one) or a MIG id
    key: str  # the physical GPU (its UUID where NVML knows it): runs that name it differently share its lock


def physical_gpus() -> list[str]:
    """The UUIDs of this machine's GPUs in NVML's order, read without initialising CUDA (once CUDA is up,
    CUDA_VISIBLE_DEVICES no longer narrows what the process sees); none without a driver or with a CPU-only torch."""
    if not torch.backends.cuda.is_built():
        return []
    import pynvml  # nvidia-ml-py, which dvclive requires for its GPU monitor

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        return [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()


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


def take_gpus(gpus: Sequence[Gpu], count: int, folder: Path, poll_s: float,
              say: Callable[[str], None]) -> list[tuple[Gpu, int]]:
    """Lock `count` of `gpus` all at once, waiting while fewer are free; return each with its lock's descriptor.

    A pass that finds too few free releases what it took before it sleeps, so a waiting run never keeps a GPU
    from a run that needs fewer.
    """
    waited_since = None
    while True:
        taken: list[tuple[Gpu, int]] = []
        for gpu in gpus:
            fd = _try_lock(_gpu_lock(folder, gpu))
            if fd is not None:
                taken.append((gpu, fd))
                if len(taken) == count:
                    for _, held in taken:
                        _mark(held)
                    if waited_since is not None:
                        waited = time.monotonic() - waited_since
                        say(f"devices: got {_count(count, 'GPU')} after waiting {waited:.0f} s")
                    return taken
        for _, fd in taken:
            os.close(fd)
        if waited_since is None:
            busy = [gpu for gpu in gpus if gpu not in {g for g, _ in taken}]
            pids = ", ".join(_holder(_gpu_lock(folder, gpu)) for gpu in busy)
            want = "a free GPU" if count == 1 else f"{count} free GPUs at once"
            say(f"devices: waiting for {want}: {len(busy)} of {len(gpus)} are held by other runs (pids {pids})")
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


def take_cpu_slots(count: int, folder: Path) -> list[int]:
    """Lock `count` CPU slots (the lowest free ones); a CPU run never waits, it shares the cores instead."""
    fds: list[int] = []
    slot = 0
    while len(fds) < count:
        fd = _try_lock(folder / f"cpu-{slot}.lock")
        if fd is not None:
            _mark(fd)
            fds.append(fd)
        slot += 1
    return fds


def cpu_runs(folder: Path) -> int:
    """How many CPU slots are held now, by any process on the machine, this one included (a few µs a slot)."""
    held = 0
    for path in folder.glob("cpu-*.lock"):
        fd = _try_lock(path)
        if fd is None:
            held += 1
        else:
            os.close(fd)
    return held


class CoreShare:
    """This process's share of the cores: `budget` threads (what the run would use alone) divided by the CPU slots
    held on the machine, counted again every REBALANCE_S seconds. Alone, a run keeps exactly its budget, so its
    results are those of a run before sharing existed; shared, float sums may differ in their last digits."""

    def __init__(self, folder: Path, budget: int) -> None:
        self.folder, self.budget, self.due = folder, budget, 0.0

    def rebalance(self, announce: bool = False) -> None:
        """Set torch's threads to this process's share; on the main thread, whose OpenMP setting is the one used."""
        now = time.monotonic()
        if now < self.due and not announce:
            return
        self.due = now + REBALANCE_S
        runs = max(1, cpu_runs(self.folder))
        threads = max(1, self.budget // runs)
        if threads != torch.get_num_threads() or announce:
            torch.set_num_threads(threads)
            if os.environ.get("RANK", "0") == "0":
                _say(f"devices: CPU, {threads} of {self.budget} threads for this process ({_count(runs, 'CPU slot')} "
                     "held on this machine)")


_share: CoreShare | None = None  # the CPU share of the run this process belongs to, if any


def share_cores() -> None:
    """Follow other CPU runs starting and ending: cheap enough to call for every batch (it looks every few s)."""
    if _share is not None:
        _share.rebalance()


@contextmanager
def claimed(device: str, count: int = 1, *, setting: str, gpus: Sequence[Gpu] | None = None, poll_s: float = 1.0,
            say: Callable[[str], None] = _say) -> Iterator[torch.device]:
    """Hold the device this run computes on until the block ends (or the process does): `count` GPUs that no other
    run holds, taken all at once, waiting while other runs hold them; or, on CPU, `count` CPU slots and a share of
    the cores. Call before anything initialises CUDA: the GPUs taken become CUDA_VISIBLE_DEVICES, which the processes
    this one starts (torchrun's) inherit, so they see cuda:0..count-1.

    Args:
        device: "auto" (GPUs when any is visible, as training), "cuda" or "cpu".
        count: GPUs (or CPU slots) for the run: train.nproc_per_node.
        setting: the param or option that asked, for the one-line errors.
        gpus: the candidates; by default CUDA_VISIBLE_DEVICES' entries, or every GPU of the machine.
    """
    global _share
    gpus = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), physical_gpus()) if gpus is None else gpus
    if device == "cuda" and not gpus:
        raise UserError(f"{setting} is cuda but no CUDA GPU is visible; set it to auto or cpu")
    on_gpu = device == "cuda" or (device == "auto" and bool(gpus))
    saved = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", THREAD_BUDGET)}
    budget = torch.get_num_threads()  # torch's own choice: all physical cores, or OMP_NUM_THREADS if set
    fds: list[int] = []
    try:
        if under_torchrun():
            # Placed by its launcher: the stage's relaunch, which holds the run's GPUs or CPU slots and says how many
            # threads the run has, or a torchrun started by hand, whose starter placed the processes.
            if not on_gpu and THREAD_BUDGET in os.environ:
                _share = CoreShare(lock_dir(), int(os.environ[THREAD_BUDGET]))
                _share.rebalance()
        elif on_gpu:
            if count > len(gpus):
                shown = saved["CUDA_VISIBLE_DEVICES"]
                raise UserError(f"{setting} is {count} but {_count(len(gpus), 'GPU')} "
                                f"{'is' if len(gpus) == 1 else 'are'} visible"
                                f"{'' if shown is None else f' (CUDA_VISIBLE_DEVICES={shown})'}; lower it to "
                                f"{len(gpus)} or make more GPUs visible")
            taken = take_gpus(gpus, count, lock_dir(), poll_s, say)
            fds = [fd for _, fd in taken]
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu.entry for gpu, _ in taken)
            say(f"devices: this run holds {_count(count, 'GPU')} of {len(gpus)}: "
                f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}")
        else:
            folder = lock_dir()
            fds = take_cpu_slots(count, folder)
            os.environ[THREAD_BUDGET] = str(budget)  # for the processes of a CPU run that relaunch starts
            _share = CoreShare(folder, budget)
            _share.rebalance(announce=True)
        yield torch.device("cuda" if on_gpu else "cpu")
    finally:
        _share = None
        torch.set_num_threads(budget)
        for fd in fds:
            os.close(fd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
