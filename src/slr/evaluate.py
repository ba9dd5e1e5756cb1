"""Evaluation of a trained checkpoint: the original project's `full` test (val, test, shuffled test), the
frame-order study (reversed frames and a sweep of permutations by entropy), and single ad-hoc tests.

Clips are read from the preprocessed uint8 arrays once per pass; a permutation reorders frames in memory, so the
order study never decodes video again.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slr.checkpoint import load_checkpoint
from slr.data.dataset import load_manifest, load_set
from slr.data.transforms import center_crop, three_crops, to_model_input
from slr.errors import UserError
from slr.metrics import base_result, per_instance_accuracy
from slr.models import build_model
from slr.shuffle import make_permutation, shannon_entropy, sweep_permutations


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved in checkpoint `path`, in eval mode; also return the checkpoint's metadata."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["model"], checkpoint["num_classes"], checkpoint["dropout"])
    model.load_state_dict(checkpoint.pop("state_dict"))
    return model.eval(), checkpoint


@torch.no_grad()
def predict(
    model: nn.Module,
    clips: np.ndarray,
    meta: dict,
    batch_size: int,
    perm: list[int] | None = None,
    temporal_views: int = 1,
    spatial_views: int = 1,
) -> torch.Tensor:
    """Log-probabilities (N, classes) for uint8 clips (N, T, H, W, C), in order.

    `perm` reorders the frames of every clip the same way. With several views, each clip is scored on
    `temporal_views` windows of the model's clip length spread over its T frames, times 1 (centre) or 3
    (top-left, centre, bottom-right) crops, and the views' probabilities are averaged.
    """
    if spatial_views not in (1, 3):
        raise UserError(f"spatial views must be 1 or 3, got {spatial_views}")
    length, frames, size = meta["num_frames"], clips.shape[1], meta["crop_size"]
    if clips.shape[2] < size:
        raise UserError(f"clips of {clips.shape[2]}x{clips.shape[2]} are smaller than the model's {size}x{size} crop")
    if temporal_views > 1 and frames <= length:
        raise UserError(
            f"{temporal_views} temporal views need clips longer than the model's {length} frames, got {frames}; "
            "preprocess more frames (--num-frames)"
        )
    starts = np.linspace(0, frames - length, temporal_views).round().astype(int) if temporal_views > 1 else [None]
    device = next(model.parameters()).device
    outputs = []
    for first in range(0, len(clips), batch_size):
        batch = np.asarray(clips[first : first + batch_size])  # (B, T, H, W, C)
        if perm is not None:
            batch = batch[:, perm]
        views = []
        for start in starts:
            window = batch if start is None else batch[:, start : start + length]
            views += three_crops(window, size) if spatial_views == 3 else [center_crop(window, size)]
        log_probs = torch.stack([
            model(to_model_input(torch.from_numpy(np.ascontiguousarray(view)).to(device), meta["mean"], meta["std"]))
            .float()
            .log_softmax(1)
            for view in views
        ])
        # log of the views' mean probability, without underflowing to log(0) = -inf
        outputs.append((log_probs.logsumexp(0) - math.log(len(views))).cpu())
    return torch.cat(outputs)


def score(logits: torch.Tensor, labels: torch.Tensor, num_missing: int) -> dict:
    """The original's BaseRes plus how many videos were evaluated and how many were listed but missing."""
    return {**base_result(logits, labels), "num_videos": len(labels), "num_missing": num_missing}


def full_test(model: nn.Module, meta: dict, clips_dir: Path, batch_size: int, shuffle_seed: int) -> tuple[dict, dict]:
    """Score val and test with ordered frames and test with one seeded frame permutation.

    Returns the original's CompRes {check_name, best_val_acc, best_val_loss, test, val, test_shuff}, plus
    `val_consistent` (training's best-epoch val numbers reproduced here), and predictions for the plots.
    """
    perm = make_permutation(meta["num_frames"], shuffle_seed)
    result: dict = {"check_name": "best_val", "best_val_acc": meta["val_acc"], "best_val_loss": meta["val_loss"]}
    logits, labels = {}, {}
    for key, set_name, order in (("test", "test", None), ("val", "val", None), ("test_shuff", "test", perm)):
        clips, labels[key], missing = load_set(clips_dir, set_name)
        logits[key] = predict(model, clips, meta, batch_size, order)
        result[key] = score(logits[key], labels[key], missing)
        if order is not None:
            result[key] |= {"perm": order, "shannon_entropy": shannon_entropy(order)}
    val = result["val"]
    result["val_consistent"] = bool(
        abs(val["top_k_per_instance_acc"]["top1"] - meta["val_acc"]) < 1e-9
        and abs(val["average_loss"] - meta["val_loss"]) <= 1e-4 * max(1.0, meta["val_loss"])
    )
    if not result["val_consistent"]:
        print(f"warning: val top-1/loss {val['top_k_per_instance_acc']['top1']}/{val['average_loss']} differ from "
              f"training's best epoch {meta['val_acc']}/{meta['val_loss']}: data or code changed since training")
    predictions = {
        "glosses": load_manifest(clips_dir)["glosses"],
        "labels": labels["test"].tolist(),
        "ordered": logits["test"].argmax(1).tolist(),
        "shuffled": logits["test_shuff"].argmax(1).tolist(),
    }
    return result, predictions


def order_study(model: nn.Module, meta: dict, clips_dir: Path, batch_size: int, count: int, seed: int) -> dict:
    """Test accuracy with frames reversed and under `count` permutations spanning low to high entropy.

    Returns top-1/5 for "reversed", "sweep": one record per permutation (perm, entropy, top-1/5), and
    "by_entropy": the sweep's top-1 mean, spread and count per 1-bit entropy band. (Ordered frames are the full
    test's `test` result; they are not scored twice.)
    """
    clips, labels, _ = load_set(clips_dir, "test")
    n = meta["num_frames"]

    def accuracy(perm: list[int]) -> dict[str, float]:
        return per_instance_accuracy(predict(model, clips, meta, batch_size, perm), labels, ks=(1, 5))

    sweep = [{"perm": p, "entropy": shannon_entropy(p), **accuracy(p)} for p in sweep_permutations(n, count, seed)]
    return {
        "reversed": accuracy(list(range(n - 1, -1, -1))),
        "by_entropy": entropy_bands(sweep),
        "sweep": sweep,
    }


def entropy_bands(sweep: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of top-1 per 1-bit band of permutation entropy ("0-1", "1-2", ...)."""
    bands: dict[str, list[float]] = {}
    for record in sorted(sweep, key=lambda r: r["entropy"]):
        low = int(record["entropy"])
        bands.setdefault(f"{low}-{low + 1}", []).append(record["top1"])
    return {
        band: {"top1_mean": float(np.mean(accs)), "top1_std": float(np.std(accs)), "count": len(accs)}
        for band, accs in bands.items()
    }
