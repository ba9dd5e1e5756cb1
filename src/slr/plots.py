"""Plots of evaluation results: JSON records for DVC's templates (`dvc plots show/diff` render and overlay them)
and PNG images for reading one run (confusion matrix, per-class precision/recall/F1 as bars and a heatmap).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from slr.files import atomic_path, write_json  # noqa: E402

MAX_CLASSES_SHOWN = 50  # larger confusion matrices show the most-confused classes only


def confusion_records(labels: list[int], predicted: list[int], glosses: list[str]) -> list[dict[str, str]]:
    """One {actual, predicted} gloss pair per clip, for DVC's `confusion` template."""
    return [{"actual": glosses[a], "predicted": glosses[p]} for a, p in zip(labels, predicted)]


def per_class_scores(labels: list[int], predicted: list[int], glosses: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class of the split, by label (no averages mixed in)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(len(glosses)), zero_division=0
    )
    return [
        {"class": g, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for g, p, r, f, s in zip(glosses, precision, recall, f1, support)
    ]


def order_records(result: dict, study: dict) -> list[dict]:
    """Top-1/5 on val and test with frames ordered, reversed, shuffled once, and shuffled (sweep mean)."""
    def row(condition: str, acc: dict) -> dict:
        return {"condition": condition, "top1": acc["top1"], "top5": acc["top5"]}

    sweep = study["sweep"]
    return [
        row("val, ordered", result["val"]["top_k_per_instance_acc"]),
        row("test, ordered", result["test"]["top_k_per_instance_acc"]),
        row("test, reversed", study["reversed"]),
        row("test, shuffled (one permutation)", result["test_shuff"]["top_k_per_instance_acc"]),
        row(
            f"test, shuffled (mean of {len(sweep)})",
            {k: float(np.mean([r[k] for r in sweep])) for k in ("top1", "top5")},
        ),
    ]


def write_plots(out_dir: Path, result: dict, study: dict, predictions: dict) -> None:
    """Write the plot data of one evaluation to `out_dir` (JSON for DVC) and `out_dir/images` (PNG)."""
    glosses, labels, ordered = predictions["glosses"], predictions["labels"], predictions["ordered"]
    write_json(out_dir / "confusion_test.json", confusion_records(labels, ordered, glosses))
    write_json(out_dir / "confusion_test_shuffled.json", confusion_records(labels, predictions["shuffled"], glosses))
    write_json(out_dir / "order.json", order_records(result, study))
    write_json(out_dir / "entropy_sweep.json", [{k: r[k] for k in ("entropy", "top1", "top5")} for r in study["sweep"]])
    scores = per_class_scores(labels, ordered, glosses)
    write_json(out_dir / "per_class.json", scores)
    images = out_dir / "images"
    save_figure(confusion_figure(labels, ordered, glosses), images / "confusion_test.png")
    save_figure(per_class_bar_figure(scores), images / "per_class_bars.png")
    save_figure(per_class_heatmap_figure(scores), images / "per_class_heatmap.png")


def confusion_figure(labels: list[int], predicted: list[int], glosses: list[str]) -> plt.Figure:
    """Confusion matrix with gloss names; beyond MAX_CLASSES_SHOWN classes, only the most-confused ones."""
    matrix = confusion_matrix(labels, predicted, labels=range(len(glosses)))
    shown = np.arange(len(glosses))
    title = "Confusion matrix, test set"
    if len(glosses) > MAX_CLASSES_SHOWN:
        errors = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)  # wrong predictions into or out of a class
        shown = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES_SHOWN])
        matrix = matrix[np.ix_(shown, shown)]
        title += f" ({MAX_CLASSES_SHOWN} most-confused of {len(glosses)} classes)"
    side = 3 + 0.25 * len(shown)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(shown))
    ax.set_xticks(ticks, [glosses[i] for i in shown], rotation=90)
    ax.set_yticks(ticks, [glosses[i] for i in shown])
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > matrix.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    return fig


def per_class_bar_figure(scores: list[dict]) -> plt.Figure:
    """Grouped bars of precision, recall and F1 per class."""
    x = np.arange(len(scores))
    fig, ax = plt.subplots(figsize=(3 + 0.35 * len(scores), 4))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1")):
        ax.bar(x + offset, [s[key] for s in scores], width=0.27, label=key)
    ax.set_xticks(x, [s["class"] for s in scores], rotation=90)
    ax.set(ylim=(0, 1.05), ylabel="score", title="Per-class precision, recall and F1, test set")
    ax.legend(loc="lower right")
    return fig


def per_class_heatmap_figure(scores: list[dict]) -> plt.Figure:
    """Classes x (precision, recall, F1) as a heatmap, one row per class."""
    keys = ("precision", "recall", "f1")
    values = np.array([[s[k] for k in keys] for s in scores])
    fig, ax = plt.subplots(figsize=(4, 1 + 0.25 * len(scores)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(3), keys)
    ax.set_yticks(range(len(scores)), [s["class"] for s in scores])
    ax.set_title("Per-class scores, test set")
    fig.colorbar(image, ax=ax)
    return fig


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save `fig` as PNG atomically and free it. Metadata is stripped so identical plots give identical bytes."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
