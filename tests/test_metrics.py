"""The metrics against scikit-learn on random logits, whatever the batch size used to produce them."""

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, log_loss, top_k_accuracy_score

from slr.metrics import (
    Scored,
    average_loss,
    base_result,
    bootstrap_interval,
    mean_per_class_accuracy,
    per_class_recall,
    per_instance_accuracy,
)


def _random_set(n: int = 97, classes: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=gen)
    logits = torch.randn(n, classes, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, classes)
    return logits, labels


def _scored(**kwargs: int) -> tuple[Scored, torch.Tensor, torch.Tensor]:
    logits, labels = _random_set(**kwargs)
    return Scored.from_logits(logits, labels), logits, labels


def test_per_instance_topk_matches_sklearn() -> None:
    # Batch-size independence of the scores themselves is tested in test_evaluate.py (batch sizes 1 and 7).
    scored, logits, labels = _scored()
    result = per_instance_accuracy(scored)
    for k in (1, 5, 10):
        expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=np.arange(12))
        assert result[f"top{k}"] == pytest.approx(expected)


def test_mean_per_class_top1_is_balanced_accuracy() -> None:
    scored, logits, labels = _scored()
    expected = balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert mean_per_class_accuracy(scored)["top1"] == pytest.approx(expected)


def test_mean_per_class_topk_averages_per_class_recall() -> None:
    scored, logits, labels = _scored()
    top5 = logits.topk(5, dim=1).indices
    recalls = [np.mean([labels[i].item() in top5[i] for i in np.flatnonzero(labels == c)]) for c in labels.unique()]
    assert mean_per_class_accuracy(scored)["top5"] == pytest.approx(np.mean(recalls))
    assert list(per_class_recall(scored, 5).values()) == pytest.approx(recalls)


def test_only_classes_present_are_averaged() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    labels = torch.tensor([0, 0, 2])  # class 1 absent: averaged over classes 0 and 2 only
    assert mean_per_class_accuracy(Scored.from_logits(logits, labels))["top1"] == pytest.approx(0.5)


def test_k_is_clamped_to_the_number_of_classes() -> None:
    scored, _, _ = _scored(classes=4)
    assert scored.topk.shape == (97, 4) and per_instance_accuracy(scored)["top10"] == 1.0


def test_average_loss_matches_sklearn_log_loss() -> None:
    scored, logits, labels = _scored()
    probs = torch.softmax(logits.double(), 1).numpy()
    expected = log_loss(labels.numpy(), probs, labels=np.arange(12))
    assert average_loss(scored) == pytest.approx(expected, rel=1e-5)


def test_scored_parts_concatenate_to_the_whole() -> None:
    logits, labels = _random_set()
    whole = Scored.from_logits(logits, labels)
    parts = Scored.cat([Scored.from_logits(logits[i : i + 10], labels[i : i + 10]) for i in range(0, 97, 10)])
    assert torch.equal(parts.topk, whole.topk) and torch.allclose(parts.loss, whole.loss)


def test_base_result_has_the_original_shape() -> None:
    result = base_result(_scored()[0])
    assert set(result) == {"top_k_average_per_class_acc", "top_k_per_instance_acc", "average_loss"}
    assert set(result["top_k_per_instance_acc"]) == {"top1", "top5", "top10"}


def test_bootstrap_interval_is_seeded_and_covers_the_mean() -> None:
    correct = np.random.default_rng(0).random(258) < 0.6  # an asl100-sized test set at about 60% top-1
    low, high = bootstrap_interval(correct, samples=2000, seed=3)
    assert (low, high) == bootstrap_interval(correct, samples=2000, seed=3)
    assert low < correct.mean() < high
    # the normal approximation of a proportion's 95% interval: +-1.96 sqrt(p(1-p)/n), about +-6 points here
    half = 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)


def test_paired_interval_of_a_difference_is_narrower_than_unpaired() -> None:
    rng = np.random.default_rng(1)
    ordered = rng.random(300) < 0.7
    shuffled = ordered & (rng.random(300) < 0.8)  # shuffling loses some of the same clips it got right
    low, high = bootstrap_interval(ordered, shuffled, seed=0)
    assert low < ordered.mean() - shuffled.mean() < high
    unpaired = np.hypot(*(np.subtract(*bootstrap_interval(x, seed=0)[::-1]) for x in (ordered, shuffled)))
    assert high - low < 0.8 * unpaired  # the pairing removes the spread the two conditions share
