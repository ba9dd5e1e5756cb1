"""Training: fit a model on the train set, keep the checkpoint with the best validation loss, log with dvclive,
and resume a killed run from its last finished epoch.

One code path serves a CPU run, a GPU run (AMP, channels-last) and a torchrun data-parallel run: `slr.distributed`
says which process this is, and only rank 0 writes files.
"""

from __future__ import annotations

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
from torch.utils.data import DataLoader
from tqdm import tqdm

from slr import distributed
from slr.batches import eval_loader, train_loader
from slr.checkpoint import Run, resume, run_fingerprint, save_checkpoint
from slr.data.dataset import ClipDataset, load_manifest
from slr.devices import configure, environment
from slr.distributed import Process
from slr.errors import UserError
from slr.files import atomic_path, write_json
from slr.inference import Feed, predict
from slr.checks import check_recipe
from slr.models import build_model, count_parameters, normalization
from slr.params import TrainParams


@dataclass(frozen=True)
class Scores:
    loss: float  # mean over the clips of batches whose loss was finite
    acc: float
    overflowed: int = 0  # batches whose loss overflowed (fp16): GradScaler skipped their steps


def seed_everything(seed: int) -> None:
    """Seed every generator before the model is built, so that every process builds the same weights."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Seed torch's generators (dropout, stochastic depth) for one epoch of one process: the processes of a DDP run
    draw different masks, as they see different clips, and a run resumed at this epoch draws what the
    uninterrupted run drew, with no RNG state to save."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0]))


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
    sums = torch.zeros(5, device=device)  # loss of finite batches, correct, clips, clips of finite batches, overflows
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
            scaler.step(optimizer)  # with fp16, a step whose gradients overflowed is skipped
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        sums += _tally(loss.detach(), logits, y)
    return _scores(sums)


def validate(model: nn.Module, batches: DataLoader, feed: Feed, process: Process, desc: str = "") -> Scores:
    """Loss and top-1 accuracy over this process's share of an evaluation set, summed over all processes: the
    evaluate stage's own scoring (`slr.inference.predict`), so its val numbers are training's."""
    scored = predict(model, batches, feed, process.device, desc=desc, progress=process.is_main)[0]
    n = scored.loss.new_full((), float(len(scored.loss)))
    return _scores(torch.stack([scored.loss.sum(), scored.hits(1).sum().double(), n, n, n.new_zeros(())])
                   .to(process.device))


def _tally(loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One batch's (summed loss if finite, correct, clips, clips if the loss is finite, 1 if it is not), on the
    device: an fp16 overflow that GradScaler skipped must not turn the epoch's loss into NaN."""
    correct = (logits.argmax(1) == labels).sum().float()
    finite = loss.isfinite()
    # new_full fills on the device; torch.tensor(..., device=cuda) would be a host copy that waits for the queue
    clips = loss.new_full((), float(len(labels)))
    return torch.stack([torch.where(finite, loss, 0.0), correct, clips, torch.where(finite, clips, 0.0),
                        (~finite).float()])


def _scores(sums: torch.Tensor) -> Scores:
    loss, correct, seen, finite, overflowed = distributed.sum_across(sums).tolist()
    return Scores(loss / finite if finite else math.nan, correct / seen, int(overflowed))


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
        seed_epoch(seed, process.rank, epoch)
        train_set.set_epoch(epoch)
        train_batches.sampler.set_epoch(epoch)
        train = train_epoch(trained, train_batches, group_sizes, p.accumulate, run.optimizer, run.scaler, feed,
                            process, desc=f"epoch {epoch} train")
        # With GradScaler (fp16) an overflowing batch only skips its step; anywhere else it has reached the weights.
        if not math.isfinite(train.loss) or (train.overflowed and not run.scaler.is_enabled()):
            raise UserError(
                f"train loss is not finite in epoch {epoch} ({train.overflowed} of {len(group_sizes)} batches); "
                f"lower train.backbone_lr/head_lr or set train.amp to bf16 or off (the last good state is "
                f"{out_dir / 'last.pth'})"
            )
        if train.overflowed:
            process.log(f"train: {train.overflowed} of {len(group_sizes)} batches of epoch {epoch} overflowed in fp16; "
                        "GradScaler skipped the optimizer steps they fed and lowered its scale (the weights are "
                        "unaffected)")
        distributed.share_buffers(model)
        val = validate(model, val_batches, feed, process, desc=f"epoch {epoch} val")
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


def train(clips_dir: Path, out_dir: Path, live_dir: Path, *, model_name: str, seed: int, p: TrainParams,
          device_type: str) -> dict:
    """Train `model_name` on the clips in `clips_dir` on the device `slr.devices.claimed` chose (`device_type`);
    write best.pth, last.pth and data_info.json to `out_dir` and the training curves to `live_dir`, resuming from
    out_dir/last.pth when it belongs to this very run.

    data_info.json records what evaluation needs to feed the model the clips it was trained on (frames, sizes,
    normalisation, precision, threads), as the original project's did. Returns the best epoch's {epoch, val_loss,
    val_acc}.
    """
    manifest = load_manifest(clips_dir)
    check_recipe(model_name, manifest["num_frames"], manifest["frame_size"], p.crop_size)
    train_set = ClipDataset(clips_dir, "train", p.crop_size, train=True, flip=p.hflip, seed=seed)
    val_set = ClipDataset(clips_dir, "val", p.crop_size, train=False, flip=False, seed=seed)
    if p.batch_size > len(train_set):
        raise UserError(f"train.batch_size {p.batch_size} is larger than the training set ({len(train_set)} clips)")
    # Bad input stops every process before they connect: a process that exits while another is still joining the
    # group would end that one in gloo's "Connection closed by peer" traceback.
    process = distributed.start(device_type)
    try:
        return _train(clips_dir, train_set, val_set, out_dir, live_dir, model_name, seed, p, process, manifest)
    except torch.OutOfMemoryError:
        effective, halved = (b * p.accumulate * process.world_size for b in (p.batch_size, p.batch_size // 2 * 2))
        stays = f"stays {effective}" if halved == effective else f"goes from {effective} to {halved}"
        fix = (f"halve train.batch_size and double train.accumulate (-S train.batch_size={p.batch_size // 2} -S "
               f"train.accumulate={p.accumulate * 2}: the effective batch {stays})" if p.batch_size > 1 else
               "lower preprocess.num_frames or train.crop_size, or use a GPU with more memory")
        raise UserError(f"out of GPU memory training {model_name} at train.batch_size {p.batch_size}: {fix}") from None
    finally:
        distributed.stop()


def _train(
    clips_dir: Path,
    train_set: ClipDataset,
    val_set: ClipDataset,
    out_dir: Path,
    live_dir: Path,
    model_name: str,
    seed: int,
    p: TrainParams,
    process: Process,
    manifest: dict[str, Any],
) -> dict:
    configure(process.device)
    seed_everything(seed)
    mean, std = normalization(model_name)
    num_classes = len(manifest["glosses"])
    model = build_model(model_name, num_classes, p.dropout, p.pretrained).to(process.device)
    feed = Feed.choose(p.amp, p.channels_last, process.device, mean, std)
    if feed.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    run = Run(model, model_name, p, process.device)
    placement = {"device": process.device.type, "precision": feed.precision, "world_size": process.world_size}
    meta = {
        "model": model_name,
        "num_classes": num_classes,
        "dropout": p.dropout,
        "num_frames": manifest["num_frames"],
        "frame_size": manifest["frame_size"],
        "crop_size": p.crop_size,
        "mean": list(mean),
        "std": list(std),
        # how training's validation fed the model; evaluation on the same kind of device feeds it the same way
        "amp": p.amp,
        "channels_last": p.channels_last,
        "precision": feed.precision,
        "threads": p.threads,
        "copy": manifest.get("copy"),  # the WLASL copy the clips came from (the download stage's fingerprint)
        # what training's numbers depend on beyond params and data, to explain a difference between two machines
        "environment": {**environment(process.device, p.threads), "processes": process.world_size},
        "fingerprint": run_fingerprint(model_name, seed, p, clips_dir, placement),
    }
    resumed = resume(run, out_dir, meta["fingerprint"], process)
    effective = p.batch_size * p.accumulate * process.world_size
    process.log(f"train: {model_name} ({count_parameters(model) / 1e6:.1f}M parameters, backbone {p.pretrained}), "
        f"{num_classes} classes, {len(train_set)} train / {len(val_set)} val clips of "
        f"{meta['num_frames']}x{p.crop_size}x{p.crop_size}; effective batch {effective} on {process.world_size} x "
        f"{process.device.type} ({feed.precision}, {p.threads} threads per process)")
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
