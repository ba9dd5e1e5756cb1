"""Classification metrics as pure functions of a set's scored clips: the numbers every result file reports.

Evaluation keeps, per clip and frame ordering, only what the metrics need (`Scored`: the ten best classes and the
cross-entropy), not the logits: the order study scores the test set under ~28 orderings, and at 2,000 classes their
logits would take gigabytes. All functions take the whole set at once, so a result never depends on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class Scored:
    """A set of clips as a model scored them: the K best classes of each clip, best first (K = min(10, classes)),
    and each clip's cross-entropy (the negative log-probability of its label)."""

    topk: torch.Tensor  # int64 (N, K)
    loss: torch.Tensor  # float64 (N,)
    labels: torch.Tensor  # int64 (N,)

    @classmethod
    def from_log_probs(cls, log_probs: torch.Tensor, labels: torch.Tensor) -> Scored:
        """From log-probabilities (N, classes); logits work too for `topk`, but the loss needs normalised ones."""
        k = min(max(KS), log_probs.shape[1])
        loss = -log_probs.float().gather(1, labels[:, None]).squeeze(1)
        return cls(log_probs.topk(k, dim=1).indices, loss.double(), labels)

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> Scored:
        return cls.from_log_probs(logits.float().log_softmax(1), labels)

    @classmethod
    def cat(cls, parts: list[Scored]) -> Scored:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("topk", "loss", "labels")))

    @property
    def predicted(self) -> torch.Tensor:
        """int64 (N,): each clip's top-1 class."""
        return self.topk[:, 0]

    def hits(self, k: int) -> torch.Tensor:
        """bool (N,): whether each label is among its clip's k best classes (k clamped to the classes scored)."""
        return (self.topk[:, :k] == self.labels[:, None]).any(dim=1)


def per_instance_accuracy(scored: Scored, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Top-k accuracy over instances: {"top1": ..., "top5": ..., "top10": ...}."""
    return {f"top{k}": scored.hits(k).double().mean().item() for k in ks}


def mean_per_class_accuracy(scored: Scored, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Top-k recall of each class present in the labels, averaged over those classes (balanced accuracy at k=1)."""
    return {f"top{k}": float(np.mean(list(per_class_recall(scored, k).values()))) for k in ks}


def per_class_recall(scored: Scored, k: int = 1) -> dict[int, float]:
    """Top-k recall of each class present in the labels, by class index."""
    hits = scored.hits(k).double()
    return {int(c): hits[scored.labels == c].mean().item() for c in scored.labels.unique()}


def average_loss(scored: Scored) -> float:
    """Mean cross-entropy over instances."""
    return scored.loss.mean().item()


def base_result(scored: Scored) -> dict:
    """The original project's BaseRes: {top_k_average_per_class_acc, top_k_per_instance_acc, average_loss}."""
    return {
        "top_k_average_per_class_acc": mean_per_class_accuracy(scored),
        "top_k_per_instance_acc": per_instance_accuracy(scored),
        "average_loss": average_loss(scored),
    }


def bootstrap_interval(
    correct: np.ndarray, baseline: np.ndarray | None = None, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of mean(correct) - mean(baseline) over clips (of mean(correct) alone when
    `baseline` is None).

    Paired: each resample draws clips, and a drawn clip counts in both conditions, so the interval of a difference
    reflects how the two conditions disagree on the same clips, not two independent spreads. Seeded, so a result
    file repeats exactly.
    """
    values = correct.astype(np.float64) - (0.0 if baseline is None else baseline.astype(np.float64))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
