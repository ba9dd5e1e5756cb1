"""The metrics against scikit-learn on random logits, whatever the batch size used to produce them."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, log_loss, top_k_accuracy_score

from slr.metrics import average_loss, base_result, mean_per_class_accuracy, per_instance_accuracy


def _random_set(n: int = 97, classes: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=gen)
    logits = torch.randn(n, classes, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, classes)
    return logits, labels


def test_per_instance_topk_matches_sklearn() -> None:
    # Batch-size independence of the logits themselves is tested in test_evaluate.py (batch sizes 1 and 7).
    logits, labels = _random_set()
    result = per_instance_accuracy(logits, labels)
    for k in (1, 5, 10):
        expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=np.arange(12))
        assert result[f"top{k}"] == pytest.approx(expected)


def test_mean_per_class_top1_is_balanced_accuracy() -> None:
    logits, labels = _random_set()
    expected = balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert mean_per_class_accuracy(logits, labels)["top1"] == pytest.approx(expected)


def test_mean_per_class_topk_averages_per_class_recall() -> None:
    logits, labels = _random_set()
    top5 = logits.topk(5, dim=1).indices
    recalls = [np.mean([labels[i].item() in top5[i] for i in np.flatnonzero(labels == c)]) for c in labels.unique()]
    assert mean_per_class_accuracy(logits, labels)["top5"] == pytest.approx(np.mean(recalls))


def test_only_classes_present_are_averaged() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = torch.tensor([0, 0, 2])  # class 1 absent: averaged over classes 0 and 2 only
    assert mean_per_class_accuracy(logits, labels)["top1"] == pytest.approx(0.5)


def test_k_is_clamped_to_the_number_of_classes() -> None:
    logits, labels = _random_set(classes=4)
    assert per_instance_accuracy(logits, labels)["top10"] == 1.0


def test_average_loss_matches_sklearn_log_loss() -> None:
    logits, labels = _random_set()
    probs = torch.softmax(logits.double(), 1).numpy()
    expected = log_loss(labels.numpy(), probs, labels=np.arange(12))
    assert average_loss(logits, labels) == pytest.approx(expected, rel=1e-5)


def test_base_result_has_the_original_shape() -> None:
    result = base_result(*_random_set())
    assert set(result) == {"top_k_average_per_class_acc", "top_k_per_instance_acc", "average_loss"}
    assert set(result["top_k_per_instance_acc"]) == {"top1", "top5", "top10"}
