"""Training: fit a model on the train set, keep the checkpoint with the best validation loss, log with dvclive,
and resume a killed run from its last finished epoch.

One code path serves a CPU run, a GPU run (AMP, channels-last) and a torchrun data-parallel run: `slr.distributed`
says which process this is, and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from tqdm import tqdm

from slr import distributed
from slr.checkpoint import load_checkpoint, save_checkpoint
from slr.data.dataset import ClipDataset, load_manifest
from slr.data.store import MANIFEST
from slr.data.transforms import to_model_input
from slr.distributed import Process
from slr.errors import UserError
from slr.files import atomic_path, write_json
from slr.models import build_model, check_input, count_parameters, normalization
from slr.optim import EarlyStopping, Schedule, make_optimizer
from slr.params import TrainParams


@dataclass(frozen=True)
class Scores:
    loss: float
    acc: float


@dataclass(frozen=True)
class Feed:
    """How batches meet the model: its normalisation, the autocast dtype (None = fp32) and the memory format.
    Autocast and channels-last are for CUDA only; on CPU the model sees plain fp32."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    autocast: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def choose(cls, p: TrainParams, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> Feed:
        if device.type != "cuda":
            return cls(mean, std)
        if p.amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError("train.amp: this GPU has no bf16; set train.amp to fp16 or off")
        return cls(mean, std, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p.amp), p.channels_last)

    def context(self, device: torch.device) -> Any:
        return torch.autocast(device.type, self.autocast) if self.autocast else nullcontext()

    def inputs(self, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
        x = to_model_input(clips.to(device, non_blocking=True), self.mean, self.std)  # (B, C, T, H, W)
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


def seed_everything(seed: int) -> None:
    """Seed every generator; on CPU also ask for deterministic kernels, so a CPU run repeats to the last digit.

    On a GPU, deterministic 3D-convolution kernels can cost much of the speed, so there cuDNN picks the fastest
    ones instead (results then vary in the last digits between runs).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)


def train_loader(dataset: ClipDataset, batch_size: int, seed: int, process: Process) -> DataLoader:
    """This process's shuffled share of the train set; the order is a pure function of (seed, epoch)."""
    sampler = DistributedSampler(dataset, process.world_size, process.rank, shuffle=True, seed=seed)
    return _loader(dataset, batch_size, process, sampler)


def eval_loader(dataset: ClipDataset, batch_size: int, process: Process) -> DataLoader:
    """This process's share of an evaluation set: every clip exactly once over all processes (no padding, unlike
    DistributedSampler, so the summed scores are exact)."""
    share = Subset(dataset, range(process.rank, len(dataset), process.world_size))
    return _loader(share, batch_size, process)


def _loader(dataset: Dataset, batch_size: int, process: Process, sampler: Sampler | None = None) -> DataLoader:
    # Workers are started afresh every epoch (not persistent): each holds a copy of the dataset, and a persistent
    # copy would never see ClipDataset.set_epoch, repeating the first epoch's crops and flips for the whole run.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=process.loader_workers,
                      pin_memory=process.device.type == "cuda")


def accumulation_sizes(num_samples: int, batch_size: int, accumulate: int) -> list[int]:
    """For each batch of an epoch, the number of clips in its accumulation group (the last group may be short).

    Dividing each batch's summed loss by its group's size makes every optimizer step average over exactly the
    clips it saw, so a short last group is neither over- nor under-weighted and nothing carries into the next epoch.
    """
    sizes = [min(batch_size, num_samples - first) for first in range(0, num_samples, batch_size)]
    groups: list[int] = []
    for first in range(0, len(sizes), accumulate):
        group = sizes[first : first + accumulate]
        groups += [sum(group)] * len(group)
    return groups


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    group_sizes: list[int],
    accumulate: int,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    feed: Feed,
    process: Process,
    desc: str = "",
) -> Scores:
    """One epoch of training over `batches` (uint8 clips, labels), one optimizer step per `accumulate` batches;
    `group_sizes` comes from `accumulation_sizes`. Scores are summed over all processes.

    Scores stay on the device until the end of the epoch: a `.item()` per batch would stall the GPU queue.
    """
    model.train()
    device = process.device
    sums = torch.zeros(3, device=device)  # loss, correct, clips
    optimizer.zero_grad(set_to_none=True)
    progress = tqdm(batches, desc=desc, total=len(group_sizes), leave=False, unit="batch", disable=not process.is_main)
    for i, (clips, labels) in enumerate(progress):
        x, y = feed.inputs(clips, device), labels.to(device, non_blocking=True)
        step = (i + 1) % accumulate == 0 or i + 1 == len(group_sizes)
        # DDP averages gradients at every backward; skip that until the group's last batch.
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not step else nullcontext()
        with sync:
            with feed.context(device):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            scaler.scale(loss / group_sizes[i]).backward()
        if step:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        sums += _tally(loss.detach(), logits, y)
    return _scores(sums)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    feed: Feed,
    process: Process,
    desc: str = "",
) -> Scores:
    """Loss and top-1 accuracy over an evaluation set, summed over all processes. `model` is the bare module, not
    the DDP wrapper, whose forward would expect every process to take part in every batch."""
    model.eval()
    device = process.device
    sums = torch.zeros(3, device=device)
    for clips, labels in tqdm(loader, desc=desc, leave=False, unit="batch", disable=not process.is_main):
        x, y = feed.inputs(clips, device), labels.to(device, non_blocking=True)
        with feed.context(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        sums += _tally(loss, logits, y)
    return _scores(sums)


def _tally(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One batch's (summed loss, correct, clips), on the device."""
    correct = (logits.argmax(1) == labels).sum().float()
    # new_full fills on the device; torch.tensor(..., device=cuda) would be a host copy that waits for the queue
    return torch.stack([loss, correct, loss.new_full((), float(len(labels)))])


def _scores(sums: torch.Tensor) -> Scores:
    loss, correct, seen = distributed.sum_across(sums).tolist()
    return Scores(loss / seen, correct / seen)


def run_fingerprint(model_name: str, seed: int, p: TrainParams, clips_dir: Path) -> dict[str, Any]:
    """Everything that decides a training run's result; a checkpoint resumes only a run with the same values."""
    data = hashlib.sha256((clips_dir / MANIFEST).read_bytes()).hexdigest()
    return {"model": model_name, "seed": seed, "train": dataclasses.asdict(p), "data": data}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two fingerprints."""
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
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

    The checkpoints are `persist: true` outs, so they outlive their run and the next one finds them: a run with
    other params (model, split, lr) starts fresh and says why instead of continuing someone else's run, and a
    finished run is trained again from scratch (that is what `dvc repro --force` asks for).
    """
    last, best = out_dir / "last.pth", out_dir / "best.pth"
    if not last.is_file():
        return False
    checkpoint = load_checkpoint(last)
    if checkpoint.get("fingerprint") != fingerprint:
        changed = _differences(checkpoint.get("fingerprint") or {}, fingerprint)
        process.log(f"train: {last} is from a run with other params ({', '.join(changed[:5])}); starting fresh")
        return False
    if checkpoint["stopped"] or checkpoint["epoch"] >= fingerprint["train"]["epochs"]:
        process.log(f"train: {last} holds a finished run of these params; training again from scratch")
        return False
    if not best.is_file() or load_checkpoint(best).get("fingerprint") != fingerprint:
        process.log(f"train: {best} is missing or from another run, so this run cannot continue; starting fresh")
        return False
    run.load_state_dict(checkpoint)
    process.log(f"train: resuming this run from {last}, where {run.epoch} epochs are done")
    return True


def rewind_live(live_dir: Path, steps: int) -> None:
    """Drop dvclive history rows from step `steps` on: a run killed after logging an epoch but before its
    checkpoint repeats that epoch, and its rows must not appear twice."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines()
        kept = [row for row in rows if int(row.split("\t")[0]) < steps]
        with atomic_path(tsv) as tmp:  # a kill mid-rewind must not leave a cut history
            tmp.write_text("\n".join([header, *kept]) + "\n")


def fit(
    run: Run,
    train_set: ClipDataset,
    val_set: ClipDataset,
    p: TrainParams,
    seed: int,
    process: Process,
    feed: Feed,
    out_dir: Path,
    live: Any,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Train from epoch `run.epoch + 1` to `p.epochs` or an early stop, writing out_dir/best.pth (lowest val loss)
    and out_dir/last.pth (the full run state) after every epoch. Returns the best epoch's {epoch, val_loss, val_acc}.
    """
    device = process.device
    model = run.model
    trained = model
    if process.world_size > 1:
        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    train_batches = train_loader(train_set, p.batch_size, seed, process)
    group_sizes = accumulation_sizes(len(train_batches.sampler), p.batch_size, p.accumulate)
    val_batches = eval_loader(val_set, p.batch_size, process)
    while run.epoch < p.epochs and not run.stopped:
        epoch = run.epoch + 1
        train_set.set_epoch(epoch)
        train_batches.sampler.set_epoch(epoch)
        train = train_epoch(trained, train_batches, group_sizes, p.accumulate, run.optimizer, run.scaler, feed,
                            process, desc=f"epoch {epoch} train")
        if not math.isfinite(train.loss):
            raise UserError(
                f"train loss is {train.loss} in epoch {epoch}; lower train.backbone_lr/head_lr or set train.amp "
                f"to bf16 or off (the last good state is {out_dir / 'last.pth'})"
            )
        val = evaluate(model, val_batches, feed, process, desc=f"epoch {epoch} val")
        run.epoch = epoch
        run.schedule.step(val.loss)
        run.stopped = run.stopper.update(val.loss)
        improved = math.isfinite(val.loss) and (not run.best or val.loss < run.best["val_loss"])
        if improved:
            run.best = {"epoch": epoch, "val_loss": val.loss, "val_acc": val.acc}
        if process.is_main:
            for name, scores in (("train", train), ("val", val)):
                live.log_metric(f"{name}/loss", scores.loss)
                live.log_metric(f"{name}/acc", scores.acc)
            if improved:
                save_checkpoint(out_dir / "best.pth", {**meta, **run.best, "state_dict": model.state_dict()})
            save_checkpoint(out_dir / "last.pth", {**meta, **run.state_dict()})
            live.next_step()
        lrs = "/".join(f"{group['lr']:.2e}" for group in run.optimizer.param_groups)
        process.log(f"epoch {epoch}/{p.epochs}: train loss {train.loss:.4f} acc {train.acc:.3f} | val loss "
                    f"{val.loss:.4f} acc {val.acc:.3f}{' (best)' if improved else ''} | lr {lrs}")
    if run.stopped:
        process.log(f"train: early stop after epoch {run.epoch}: val loss has not improved for "
                    f"{p.early_stopping.patience} epochs")
    return run.best


def train(clips_dir: Path, out_dir: Path, live_dir: Path, *, model_name: str, seed: int, p: TrainParams) -> dict:
    """Train `model_name` on the clips in `clips_dir`; write best.pth, last.pth and data_info.json to `out_dir`
    and the training curves to `live_dir`, resuming from out_dir/last.pth when it belongs to this very run.

    data_info.json records what evaluation needs to feed the model the clips it was trained on (frames, sizes,
    normalisation), as the original project's did. Returns the best epoch's {epoch, val_loss, val_acc}.
    """
    mean, std = normalization(model_name)  # first: an unknown model name fails before anything is read
    manifest = load_manifest(clips_dir)
    num_frames, frame_size = manifest["num_frames"], manifest["frame_size"]
    check_input(model_name, num_frames, p.crop_size)
    process = distributed.start()
    try:
        return _train(clips_dir, out_dir, live_dir, model_name, seed, p, process, manifest, mean, std)
    finally:
        distributed.stop()


def _train(
    clips_dir: Path,
    out_dir: Path,
    live_dir: Path,
    model_name: str,
    seed: int,
    p: TrainParams,
    process: Process,
    manifest: dict[str, Any],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict:
    meta = {
        "model": model_name,
        "num_classes": len(manifest["glosses"]),
        "dropout": p.dropout,
        "num_frames": manifest["num_frames"],
        "frame_size": manifest["frame_size"],
        "crop_size": p.crop_size,
        "mean": list(mean),
        "std": list(std),
    }
    seed_everything(seed)
    train_set = ClipDataset(clips_dir, "train", p.crop_size, train=True, flip=p.hflip, seed=seed)
    val_set = ClipDataset(clips_dir, "val", p.crop_size, train=False, flip=False, seed=seed)
    if p.batch_size > len(train_set):
        raise UserError(f"train.batch_size {p.batch_size} is larger than the training set ({len(train_set)} clips)")
    model = build_model(model_name, meta["num_classes"], p.dropout, p.pretrained).to(process.device)
    feed = Feed.choose(p, process.device, mean, std)
    if feed.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    run = Run(model, model_name, p, process.device)
    meta["fingerprint"] = run_fingerprint(model_name, seed, p, clips_dir)
    resumed = resume(run, out_dir, meta["fingerprint"], process)
    effective = p.batch_size * p.accumulate * process.world_size
    process.log(f"train: {model_name} ({count_parameters(model) / 1e6:.1f}M parameters, backbone {p.pretrained}), "
        f"{meta['num_classes']} classes, {len(train_set)} train / {len(val_set)} val clips of "
        f"{meta['num_frames']}x{p.crop_size}x{p.crop_size}; effective batch {effective} on {process.world_size} x "
        f"{process.device.type} ({feed.autocast or torch.float32})")
    live = None
    if process.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "data_info.json", {k: v for k, v in meta.items() if k != "fingerprint"})
        from dvclive import Live  # only rank 0 logs; imported here so the loop runs where dvclive is not installed

        if resumed:
            rewind_live(live_dir, run.epoch)
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resumed)
        live.step = run.epoch
    try:
        best = fit(run, train_set, val_set, p, seed, process, feed, out_dir, live, meta)
    finally:
        if live is not None:
            live.end()
    process.log(f"train: best epoch {best['epoch']} (val loss {best['val_loss']:.4f}); checkpoints in {out_dir}, "
                f"curves in {live_dir}")
    return best
