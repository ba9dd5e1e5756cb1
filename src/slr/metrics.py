"""Classification metrics as pure functions of (logits, labels): the numbers every result file reports.

All take the whole set's logits at once, so a result never depends on the batch size used to compute it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KS: tuple[int, ...] = (1, 5, 10)


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """bool (N,): whether each label is among its row's k highest logits (k clamped to the number of classes)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def per_instance_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Top-k accuracy over instances: {"top1": ..., "top5": ..., "top10": ...}."""
    return {f"top{k}": topk_hits(logits, labels, k).double().mean().item() for k in ks}


def mean_per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Top-k recall of each class present in `labels`, averaged over those classes (balanced accuracy at k=1)."""
    classes = labels.unique()
    result = {}
    for k in ks:
        hits = topk_hits(logits, labels, k).double()
        result[f"top{k}"] = torch.stack([hits[labels == c].mean() for c in classes]).mean().item()
    return result


def average_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy over instances."""
    return F.cross_entropy(logits.float(), labels).item()


def base_result(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The original project's BaseRes: {top_k_average_per_class_acc, top_k_per_instance_acc, average_loss}."""
    return {
        "top_k_average_per_class_acc": mean_per_class_accuracy(logits, labels),
        "top_k_per_instance_acc": per_instance_accuracy(logits, labels),
        "average_loss": average_loss(logits, labels),
    }
