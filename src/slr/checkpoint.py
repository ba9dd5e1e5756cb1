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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slr.data.dataset import manifest_digest
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


def run_fingerprint(model_name: str, seed: int, p: TrainParams, clips_dir: Path) -> dict[str, Any]:
    """Everything that decides a training run's result; a checkpoint resumes only a run with the same values."""
    return {"model": model_name, "seed": seed, "train": dataclasses.asdict(p), "data": manifest_digest(clips_dir)}


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
    gradient scaler, best epoch, RNG, and how many epochs are done."""

    def __init__(self, model: nn.Module, model_name: str, p: TrainParams, device: torch.device) -> None:
        self.model, self.device = model, device
        self.optimizer = make_optimizer(model, model_name, p)
        self.schedule = Schedule(self.optimizer, p.scheduler, p.epochs)
        self.stopper = EarlyStopping(p.early_stopping)
        self.scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and p.amp == "fp16")
        self.epoch = 0
        self.best: dict[str, Any] = {}
        self.stopped = False

    def state_dict(self) -> dict[str, Any]:
        """Training state after `self.epoch` epochs. Augmentation and shuffling are pure functions of (seed,
        epoch, index), so torch's generators (dropout, loader seeds) are the only RNG state there is."""
        return {
            "epoch": self.epoch,
            "best": self.best,
            "stopped": self.stopped,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "scaler": self.scaler.state_dict(),
            # this process's GPU only: a resumed run may see another number of GPUs
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.best, self.stopped = state["epoch"], state["best"], state["stopped"]
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)


def resume(run: Run, out_dir: Path, fingerprint: dict[str, Any], process: Process) -> bool:
    """Load out_dir/last.pth into `run` if it holds an unfinished run with this fingerprint (and best.pth is that
    run's); True if it did.

    A run with other params (model, split, lr) starts fresh and says why instead of continuing someone else's run,
    and a finished run is trained again from scratch (that is what `dvc repro --force` asks for).
    """
    last, best = out_dir / "last.pth", out_dir / "best.pth"
    if not last.is_file():
        return False
    checkpoint = load_checkpoint(last, f"delete {last} to train this run from scratch")
    if checkpoint.get("fingerprint") != fingerprint:
        changed = differences(checkpoint.get("fingerprint") or {}, fingerprint)
        process.log(f"train: {last} is from a run with other params ({', '.join(changed[:5])}); starting fresh")
        return False
    if checkpoint["stopped"] or checkpoint["epoch"] >= fingerprint["train"]["epochs"]:
        process.log(f"train: {last} holds a finished run of these params; training again from scratch")
        return False
    if not best.is_file() or _fingerprint_of(best) != fingerprint:
        process.log(f"train: {best} is missing or from another run, so this run cannot continue; starting fresh")
        return False
    run.load_state_dict(checkpoint)
    process.log(f"train: resuming this run from {last}, where {run.epoch} epochs are done")
    return True


def _fingerprint_of(path: Path) -> dict[str, Any] | None:
    """The fingerprint recorded in a checkpoint; a damaged one has none (its run then starts afresh)."""
    try:
        return load_checkpoint(path, "").get("fingerprint")
    except UserError:
        return None
