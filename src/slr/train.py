"""Training: fit a model on the train set, keep the checkpoint with the best validation loss, log with dvclive."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from dvclive import Live
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from slr.checkpoint import save_checkpoint
from slr.data.dataset import ClipDataset, load_manifest
from slr.data.transforms import to_model_input
from slr.errors import UserError
from slr.files import write_json
from slr.models import build_model, check_input, count_parameters, normalization


@dataclass(frozen=True)
class Scores:
    loss: float
    acc: float


def seed_everything(seed: int) -> None:
    """Seed every generator and ask torch for deterministic kernels, so a CPU run repeats to the last digit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_loader(dataset: ClipDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A loader whose shuffling is a pure function of (seed, epoch); call `loader.sampler.set_epoch` each epoch."""
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def run_epoch(
    model: nn.Module,
    loader: DataLoader,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    optimizer: torch.optim.Optimizer | None = None,
    desc: str = "",
) -> Scores:
    """One pass over `loader`: a training epoch if `optimizer` is given, else an evaluation without gradients."""
    training = optimizer is not None
    model.train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for clips, labels in tqdm(loader, desc=desc, leave=False, unit="batch"):
            x = to_model_input(clips.to(device), mean, std)  # (B, C, T, H, W)
            labels = labels.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, labels)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
    return Scores(total_loss / seen, correct / seen)


def fit(
    model: nn.Module,
    train_set: ClipDataset,
    val_set: ClipDataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    out_dir: Path,
    live: Live,
    meta: dict,
) -> dict:
    """Train for `epochs`, writing out_dir/best.pth (lowest val loss) and out_dir/last.pth after every epoch.

    `meta` (model name, classes, clip shape, normalisation) is stored in every checkpoint so that evaluation can
    rebuild the model without params.yaml. Returns the best epoch's {epoch, val_loss, val_acc}.
    """
    if batch_size > len(train_set):
        raise UserError(f"train.batch_size {batch_size} is larger than the training set ({len(train_set)} clips)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    train_loader = make_loader(train_set, batch_size, shuffle=True, seed=seed)
    val_loader = make_loader(val_set, batch_size, shuffle=False, seed=seed)
    best: dict = {}
    for epoch in range(1, epochs + 1):
        train_set.set_epoch(epoch)
        train_loader.sampler.set_epoch(epoch)
        train = run_epoch(model, train_loader, mean, std, device, optimizer, desc=f"epoch {epoch} train")
        val = run_epoch(model, val_loader, mean, std, device, desc=f"epoch {epoch} val")
        for name, scores in (("train", train), ("val", val)):
            live.log_metric(f"{name}/loss", scores.loss)
            live.log_metric(f"{name}/acc", scores.acc)
        improved = not best or math.isnan(best["val_loss"]) or val.loss < best["val_loss"]
        if improved:
            best = {"epoch": epoch, "val_loss": val.loss, "val_acc": val.acc}
            save_checkpoint(out_dir / "best.pth", {**meta, **best, "state_dict": model.state_dict()})
        save_checkpoint(
            out_dir / "last.pth",
            {**meta, "epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
        )
        print(
            f"epoch {epoch}/{epochs}: train loss {train.loss:.4f} acc {train.acc:.3f} | "
            f"val loss {val.loss:.4f} acc {val.acc:.3f}{' (best)' if improved else ''}"
        )
        live.next_step()
    return best


def train(
    clips_dir: Path,
    out_dir: Path,
    live_dir: Path,
    *,
    model_name: str,
    seed: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    dropout: float,
    crop_size: int,
    hflip: bool,
) -> dict:
    """Train `model_name` on the clips in `clips_dir`; write best.pth, last.pth and data_info.json to `out_dir`.

    data_info.json records what evaluation needs to feed the model the clips it was trained on (frames, sizes,
    normalisation), as the original project's did. Returns the best epoch's {epoch, val_loss, val_acc}.
    """
    mean, std = normalization(model_name)  # first: an unknown model name fails before anything is read
    manifest = load_manifest(clips_dir)
    num_frames, frame_size = manifest["num_frames"], manifest["frame_size"]
    check_input(model_name, num_frames, crop_size)
    info = {
        "model": model_name,
        "num_classes": len(manifest["glosses"]),
        "dropout": dropout,
        "num_frames": num_frames,
        "frame_size": frame_size,
        "crop_size": crop_size,
        "mean": list(mean),
        "std": list(std),
    }
    seed_everything(seed)
    train_set = ClipDataset(clips_dir, "train", crop_size, train=True, flip=hflip, seed=seed)
    val_set = ClipDataset(clips_dir, "val", crop_size, train=False, flip=False, seed=seed)
    model = build_model(model_name, info["num_classes"], dropout)
    print(f"train: {model_name} ({count_parameters(model) / 1e6:.1f}M parameters), {info['num_classes']} classes, "
          f"{len(train_set)} train / {len(val_set)} val clips of {num_frames}x{crop_size}x{crop_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "data_info.json", info)
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        best = fit(model, train_set, val_set, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   seed=seed, mean=mean, std=std, out_dir=out_dir, live=live, meta=info)
    print(f"train: best epoch {best['epoch']} (val loss {best['val_loss']:.4f}); checkpoints in {out_dir}")
    return best
