"""Evaluation of a trained checkpoint: the original project's `full` test (val, test, shuffled test)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from slr.checkpoint import load_checkpoint
from slr.data.dataset import ClipDataset, load_manifest
from slr.data.transforms import to_model_input
from slr.metrics import base_result
from slr.models import build_model
from slr.shuffle import make_permutation, shannon_entropy


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved in checkpoint `path`, in eval mode; also return the checkpoint's metadata."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["model"], checkpoint["num_classes"], checkpoint["dropout"])
    model.load_state_dict(checkpoint.pop("state_dict"))
    return model.eval(), checkpoint


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: ClipDataset,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    perm: list[int] | None = None,
) -> torch.Tensor:
    """Logits (N, classes) for every clip of `dataset`, in order; frames reordered by `perm` if given."""
    device = next(model.parameters()).device
    outputs = []
    for clips, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        if perm is not None:
            clips = clips[:, perm]  # (B, T, H, W, C): the same new frame order for every clip
        outputs.append(model(to_model_input(clips.to(device), mean, std)).float().cpu())
    return torch.cat(outputs)


def full_test(checkpoint_path: Path, clips_dir: Path, batch_size: int, shuffle_seed: int) -> tuple[dict, dict]:
    """Score val and test with ordered frames and test with one seeded frame permutation.

    Returns the original's CompRes {check_name, best_val_acc, best_val_loss, test, val, test_shuff}, each set with
    its number of videos evaluated and listed-but-missing, and the test labels and predictions for plots.
    """
    model, meta = load_model(checkpoint_path)
    manifest = load_manifest(clips_dir)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    perm = make_permutation(meta["num_frames"], shuffle_seed)
    result: dict = {"check_name": "best_val", "best_val_acc": meta["val_acc"], "best_val_loss": meta["val_loss"]}
    logits, labels = {}, {}
    for key, set_name, order in (("test", "test", None), ("val", "val", None), ("test_shuff", "test", perm)):
        dataset = ClipDataset(clips_dir, set_name, meta["crop_size"], train=False, flip=False, seed=0)
        labels[key] = torch.tensor(dataset.labels)
        logits[key] = predict(model, dataset, batch_size, mean, std, order)
        skipped = manifest["sets"][set_name]
        result[key] = {
            **base_result(logits[key], labels[key]),
            "num_videos": len(dataset),
            "num_missing": len(skipped["missing"]) + len(skipped["unreadable"]),
        }
        if order is not None:
            result[key] |= {"perm": order, "shannon_entropy": shannon_entropy(order)}
    predictions = {
        "glosses": manifest["glosses"],
        "labels": labels["test"].tolist(),
        "ordered": logits["test"].argmax(1).tolist(),
        "shuffled": logits["test_shuff"].argmax(1).tolist(),
    }
    return result, predictions
