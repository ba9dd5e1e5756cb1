"""Checkpoints and the training run they hold: one dict per file, written atomically, read back by one function;
what `last.pth` must hold to continue a run exactly, and when a run may continue from it.

`best.pth` is the model of the best epoch with its metadata (what evaluation needs); `last.pth` is the whole run
after its last finished epoch. Both are `persist: true` outputs, so they outlive their run and the next one finds
them: `resume` continues only an unfinished run of the very same params and data.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slr.data.dataset import manifest_digest
from slr import distributed
from slr.distributed import Process
from slr.errors import UserError
from slr.files import atomic_path
from slr.optim import EarlyStopping, Schedule, make_optimizer
from slr.params import TrainParams

# Keys every checkpoint of this project holds beside the weights ("state_dict").
META_KEYS = ("model", "num_classes", "dropout", "num_frames", "frame_size", "crop_size", "mean", "std")


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` atomically, byte-identical for identical contents (so dvc.lock hashes repeat).

    A full disk fails here, not in a corrupt file: the temporary file is removed and the message says how much room
    the checkpoint needs.
    """
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            # Given a file object, torch names the archive "archive"; given a path it would use the random temp name.
            torch.save(checkpoint, f)
    except (OSError, RuntimeError) as exc:  # torch reports a short write as RuntimeError("... unexpected pos ...")
        free = shutil.disk_usage(path.parent).free  # the partial file is already gone (atomic_path)
        need = sum(t.numel() * t.element_size() for t in _tensors(checkpoint))
        disk_full = exc.errno == errno.ENOSPC if isinstance(exc, OSError) else free < need + 2**26
        if not disk_full:
            raise
        raise UserError(
            f"cannot write {path}: no space left on its disk ({free / 2**20:.0f} MB free, the checkpoint needs about "
            f"{need / 2**20:.0f} MB); free some space and rerun: training resumes from the last saved epoch"
        ) from None


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


def load_checkpoint(path: Path, fix: str) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU; UserError naming the file and `fix` if it is
    missing, damaged (a truncated copy, another format) or not one of this project's checkpoints."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; {fix}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is damaged (not a torch checkpoint: truncated, or another format); {fix}")
    try:
        # weights_only: a checkpoint is tensors and plain values; nothing in it may run code
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for a damaged archive; its messages are not for this user
        raise UserError(f"{path} is damaged (an unreadable torch archive); {fix}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or any(k not in checkpoint for k in META_KEYS):
        raise UserError(f"{path} is not a checkpoint of this project's train stage; {fix}")
    return checkpoint


def run_fingerprint(model_name: str, seed: int, p: TrainParams, clips_dir: Path, placement: dict[str, Any]) -> dict:
    """Everything that decides a training run's result; a checkpoint resumes only a run with the same values.

    `placement` ({device, precision, world_size}) is where the run computes: the same params on another device,
    precision or number of processes make another run, which must not continue this one's optimizer state.
    """
    return {"model": model_name, "seed": seed, "train": dataclasses.asdict(p), "data": manifest_digest(clips_dir),
            "placement": placement}


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts (fingerprints)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


class Run:
    """The state of a training run that a full checkpoint holds: model, optimizer, schedule, early stopping,
    gradient scaler, best epoch, and how many epochs are done."""

    def __init__(self, model: nn.Module, model_name: str, p: TrainParams, device: torch.device) -> None:
        self.model = model
        self.optimizer = make_optimizer(model, model_name, p)
        self.schedule = Schedule(self.optimizer, p.scheduler, p.epochs)
        self.stopper = EarlyStopping(p.early_stopping)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and p.amp == "fp16")
        self.epoch = 0
        self.best: dict[str, Any] = {}
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        """Training state after `self.epoch` epochs. There is no RNG state: every process seeds its generators at the
        start of each epoch from (seed, rank, epoch), and augmentation and shuffling are pure functions of (seed,
        epoch, index), so a resumed run draws what the uninterrupted one would have, on every process."""
        return {
            "epoch": self.epoch,
            "best": self.best,
            "stopped": self.stopped,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.best, self.stopped = state["epoch"], state["best"], state["stopped"]
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.scaler.load_state_dict(state["scaler"])


@dataclass(frozen=True)
class Found:
    """What one process finds in its own out_dir/last.pth: a run to continue (`epoch` >= 1), or nothing to
    continue, and what to say about it."""

    epoch: int = 0
    note: str = ""
    error: str = ""  # this very run, but trained elsewhere: continuing it here would mix two runs


def _find(out_dir: Path, fingerprint: dict[str, Any]) -> tuple[Found, dict[str, Any] | None]:
    last, best = out_dir / "last.pth", out_dir / "best.pth"
    if not last.is_file():
        return Found(), None
    try:
        checkpoint = load_checkpoint(last, f"delete {last} to train this run from scratch")
    except UserError as exc:  # said after the gather: a process that stopped here would leave the others waiting in it
        return Found(error=str(exc)), None
    old = checkpoint.get("fingerprint") or {}
    changed = differences({k: v for k, v in old.items() if k != "placement"},
                          {k: v for k, v in fingerprint.items() if k != "placement"})
    if changed:
        return Found(note=f"train: {last} is from a run with other params ({', '.join(changed[:5])}); starting fresh"), None
    if checkpoint["stopped"] or checkpoint["epoch"] >= fingerprint["train"]["epochs"]:
        return Found(note=f"train: {last} holds a finished run of these params; training again from scratch"), None
    if not best.is_file() or _fingerprint_of(best) != fingerprint:
        if old.get("placement") == fingerprint["placement"]:
            return Found(note=f"train: {best} is missing or from another run, so this run cannot continue; "
                              "starting fresh"), None
    if old.get("placement") != fingerprint["placement"]:
        return Found(error=f"{last} holds {checkpoint['epoch']} of {fingerprint['train']['epochs']} epochs of this "
                           f"run trained on {_placed(old.get('placement'))}, but this run is on "
                           f"{_placed(fingerprint['placement'])}: continue it where it was trained (train.device, "
                           f"train.nproc_per_node or the torchrun nodes), or delete {last} to train it from scratch "
                           "here"), None
    return Found(epoch=checkpoint["epoch"]), checkpoint


def _placed(placement: dict[str, Any] | None) -> str:
    if not placement:
        return "an unrecorded device"
    return f"{placement['world_size']} x {placement['device']} in {placement['precision']}"


def resume(run: Run, out_dir: Path, fingerprint: dict[str, Any], process: Process) -> bool:
    """Load out_dir/last.pth into `run` if it holds an unfinished run with this fingerprint (and best.pth is that
    run's); True if it did. Every process of the run resumes from the same state.

    A run with other params (model, split, lr) starts fresh and says why instead of continuing someone else's run,
    and a finished run is trained again from scratch (that is what `dvc repro --force` asks for). The same run on
    another device, precision or number of processes stops in one line.

    Only rank 0 writes checkpoints, so without a shared filesystem only the main node has last.pth: each process
    says what it found, the most advanced state wins, and the process holding it sends it to the others (all would
    otherwise start from different epochs, drift apart silently and hang in the last all_reduce).
    """
    found, checkpoint = _find(out_dir, fingerprint)
    everyone = distributed.gather(found)
    best = max(f.epoch for f in everyone)
    if best == 0:
        error = next((f.error for f in everyone if f.error), "")
        if error:
            raise UserError(error)
        note = next((f.note for f in everyone if f.note), "")
        if note:
            process.log(note)
        return False
    source = next(rank for rank, f in enumerate(everyone) if f.epoch == best)
    run.load_state_dict(distributed.send_from(source, checkpoint))
    sent = f" (process {source}'s, sent to every process)" if process.world_size > 1 else ""
    process.log(f"train: resuming this run from {out_dir / 'last.pth'}{sent} after epoch {run.epoch}")
    if found.epoch != best and not process.is_main:  # another node's console says what this one did
        print(f"train: process {process.rank} has no last.pth of this run: resuming from process {source}'s after "
              f"epoch {run.epoch}", flush=True)
    return True


def _fingerprint_of(path: Path) -> dict[str, Any] | None:
    """The fingerprint recorded in a checkpoint; a damaged one has none (its run then starts afresh)."""
    try:
        return load_checkpoint(path, "").get("fingerprint")
    except UserError:
        return None
