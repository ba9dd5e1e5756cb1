"""Plot data for DVC's templates (JSON records that `dvc plots show/diff` render), from evaluation results."""

from __future__ import annotations

from pathlib import Path

from slr.files import write_json

# The sets compared in the frame-order plot: (CompRes key, label on the plot).
ORDER_CONDITIONS: tuple[tuple[str, str], ...] = (("val", "val, ordered"), ("test", "test, ordered"), ("test_shuff", "test, shuffled"))


def confusion_records(labels: list[int], predicted: list[int], glosses: list[str]) -> list[dict[str, str]]:
    """One {actual, predicted} gloss pair per clip, for DVC's `confusion` template."""
    return [{"actual": glosses[a], "predicted": glosses[p]} for a, p in zip(labels, predicted)]


def order_records(result: dict) -> list[dict]:
    """Top-1/5 per-instance accuracy of each condition, for a `bar_horizontal` plot (one bar per revision)."""
    records = []
    for key, label in ORDER_CONDITIONS:
        acc = result[key]["top_k_per_instance_acc"]
        records.append({"condition": label, "top1": acc["top1"], "top5": acc["top5"]})
    return records


def write_plots(out_dir: Path, result: dict, predictions: dict) -> None:
    """Write out_dir/confusion_test.json, confusion_test_shuffled.json and order.json."""
    glosses, labels = predictions["glosses"], predictions["labels"]
    write_json(out_dir / "confusion_test.json", confusion_records(labels, predictions["ordered"], glosses))
    write_json(out_dir / "confusion_test_shuffled.json", confusion_records(labels, predictions["shuffled"], glosses))
    write_json(out_dir / "order.json", order_records(result))
