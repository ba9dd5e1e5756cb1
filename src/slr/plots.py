"""Plots of evaluation results: JSON records for DVC's templates (`dvc plots show/diff` render and overlay them)
and PNG images for reading one run.

Every plot holds a bounded number of classes, whatever the split: at 2,000 glosses a per-class figure of them all
is tens of thousands of pixels and unreadable, so figures show the classes that matter most (the most confused, the
lowest F1, the glosses that lose most without frame order) and say so in their titles. Both the DVC confusion plot and
the PNG put actual glosses on the rows and predictions on the columns, in the split's gloss order: names carry their
label number ("003 open"), which DVC's template sorts as text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from slr.files import atomic_path, write_json  # noqa: E402
from slr.metrics import Scored, per_instance_accuracy  # noqa: E402

MAX_SHOWN = 30  # classes in a confusion matrix, a per-class chart or the order heatmap
MAX_ORDER_SENSITIVE = 20  # glosses in the DVC plot of those that lose most without frame order
OTHER = "~other"  # predictions outside the classes shown (sorts after every numbered name)


@dataclass(frozen=True)
class Caption:
    """What a figure shows: which model, on which set, under which frame order, in which run."""

    model: str
    classes: int
    set_name: str
    condition: str  # "ordered frames", "frames shuffled (permutation of seed 1, 3.25 bits)", ...
    run: str | None = None  # the experiment's name under `dvc exp run` (DVC sets DVC_EXP_NAME)

    @classmethod
    def of(cls, meta: dict, set_name: str, condition: str) -> Caption:
        return cls(meta["model"], meta["num_classes"], set_name, condition, os.environ.get("DVC_EXP_NAME") or None)

    def title(self, what: str, scored: Scored | None = None, condition: str | None = None) -> str:
        """Two lines: what the figure shows, then model, run, set, frame order and (given the clips) top-1."""
        run = f", run {self.run}" if self.run else ""
        acc = f": top-1 {per_instance_accuracy(scored, (1,))['top1']:.3f}" if scored is not None else ""
        return (f"{what}\n{self.model}{run}, {self.set_name} set ({self.classes} glosses), "
                f"{condition or self.condition}{acc}")


def label_names(glosses: list[str]) -> list[str]:
    """Gloss names prefixed by their zero-padded label, so that text order is the split's order."""
    width = len(str(len(glosses) - 1))
    return [f"{i:0{width}d} {g}" for i, g in enumerate(glosses)]


def most_confused(matrix: np.ndarray, count: int = MAX_SHOWN) -> np.ndarray:
    """Of the classes that have clips in the set (rows of the confusion `matrix` that are not empty), the `count` with
    the most wrong predictions into or out of them (all, if there are no more), in label order. A class without a
    clip has no row to show: a partial copy may hold 20 test clips of 2,000 glosses."""
    present = np.flatnonzero(matrix.sum(1))
    errors = (matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix))[present]
    return np.sort(present[np.argsort(-errors, kind="stable")[:count]])


def confusion_records(scored: Scored, glosses: list[str]) -> list[dict[str, str]]:
    """One {actual, predicted} record per clip of the most-confused classes, for DVC's `confusion` template;
    predictions outside them are `~other`."""
    labels, predicted = scored.labels.numpy(), scored.predicted.numpy()
    shown = set(most_confused(confusion_matrix(labels, predicted, labels=range(len(glosses)))).tolist())
    names = label_names(glosses)
    return [{"actual": names[a], "predicted": names[p] if p in shown else OTHER}
            for a, p in zip(labels.tolist(), predicted.tolist()) if a in shown]


def per_class_scores(scored: Scored, glosses: list[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class present in the set, in label order."""
    labels, predicted = scored.labels.numpy(), scored.predicted.numpy()
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(len(glosses)), zero_division=0
    )
    names = label_names(glosses)
    return [{"class": names[c], "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
             "support": int(support[c])} for c in range(len(glosses)) if support[c]]


def lowest_f1(scores: list[dict], count: int = MAX_SHOWN) -> list[dict]:
    """The `count` classes with the lowest F1 (ties: more clips first, then label order)."""
    return sorted(scores, key=lambda s: (s["f1"], -s["support"]))[:count]


def losing_most(records: list[dict], count: int) -> list[dict]:
    """The `count` glosses whose top-1 recall drops most from ordered frames to the sweep's shuffled ones (ties: the
    single shuffle's drop, then the reversed one, then label order)."""
    return sorted(records, key=lambda r: (-r["drop_sweep"], -r["drop_shuffled"], -r["drop_reversed"]))[:count]


def order_records(compres: dict, study: dict) -> list[dict]:
    """Top-1/5 on val and test with frames ordered, reversed, shuffled once, and shuffled (sweep mean)."""
    def row(condition: str, acc: dict) -> dict:
        return {"condition": condition, "top1": acc["top1"], "top5": acc["top5"]}

    sweep = study["sweep"]
    return [
        row("val, ordered", compres["val"]["top_k_per_instance_acc"]),
        row("test, ordered", compres["test"]["top_k_per_instance_acc"]),
        row("test, reversed", study["reversed"]),
        row("test, shuffled (one permutation)", compres["test_shuff"]["top_k_per_instance_acc"]),
        row(f"test, shuffled (mean of {len(sweep)})", {k: float(np.mean([r[k] for r in sweep])) for k in ("top1", "top5")}),
    ]


def write_plots(out_dir: Path, compres: dict, study: dict, gloss_records: list[dict],
                test: dict[str, Scored], glosses: list[str], caption: Caption) -> None:
    """Write the plot data of one evaluation to `out_dir` (JSON for DVC) and `out_dir/images` (PNG)."""
    ordered, shuffled = test["ordered"], test["shuffled"]
    write_json(out_dir / "confusion_test.json", confusion_records(ordered, glosses))
    write_json(out_dir / "confusion_test_shuffled.json", confusion_records(shuffled, glosses))
    write_json(out_dir / "order.json", order_records(compres, study))
    write_json(out_dir / "entropy_sweep.json", [{k: r[k] for k in ("entropy", "top1", "top5")} for r in study["sweep"]])
    scores = per_class_scores(ordered, glosses)
    write_json(out_dir / "per_class.json", lowest_f1(scores))
    names = dict(zip(glosses, label_names(glosses)))
    write_json(out_dir / "order_by_gloss.json", gloss_records)
    write_json(out_dir / "order_sensitive.json", [
        {"gloss": names[r["gloss"]], "drop": r["drop_sweep"], "ordered": r["ordered"], "sweep": r["sweep"]}
        for r in losing_most(gloss_records, MAX_ORDER_SENSITIVE)
    ])
    images = out_dir / "images"
    save_figure(confusion_figure(ordered, glosses, caption), images / "confusion_test.png")
    save_figure(per_class_bar_figure(scores, ordered, caption), images / "per_class_bars.png")
    save_figure(order_heatmap_figure(gloss_records, glosses, caption), images / "order_by_gloss.png")


def test_figures(scored: Scored, glosses: list[str], caption: Caption, names: list[str]) -> dict[str, plt.Figure]:
    """The figures `slr-test --graphs` draws for one test: "confusion" and/or "bars"."""
    makers = {
        "confusion": lambda: confusion_figure(scored, glosses, caption),
        "bars": lambda: per_class_bar_figure(per_class_scores(scored, glosses), scored, caption),
    }
    return {name: makers[name]() for name in names}


def confusion_figure(scored: Scored, glosses: list[str], caption: Caption) -> plt.Figure:
    """Confusion matrix, actual glosses on the rows, predictions on the columns, both in label order: the glosses
    that have clips in the set, beyond MAX_SHOWN the most-confused of them, with a last column for predictions
    outside them; the title says how many."""
    labels, predicted = scored.labels.numpy(), scored.predicted.numpy()
    full = confusion_matrix(labels, predicted, labels=range(len(glosses)))
    shown = most_confused(full)
    matrix = full[np.ix_(shown, shown)]
    columns = label_names(glosses)
    column_names = [columns[i] for i in shown]
    what = "Confusion matrix"
    if len(shown) < len(glosses):
        matrix = np.column_stack([matrix, full[shown].sum(1) - matrix.sum(1)])
        column_names.append(OTHER)
        present = int(np.count_nonzero(full.sum(1)))
        what += (f" of the {len(shown)} most-confused of the {present} glosses with clips" if len(shown) < present
                 else f" of the {present} glosses with clips")
    side = 3.5 + 0.25 * len(shown)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(column_names)), column_names, rotation=90)
    ax.set_yticks(range(len(shown)), [columns[i] for i in shown])
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if count > matrix.max() / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set(xlabel="predicted", ylabel="actual", title=caption.title(what, scored))
    return fig


def per_class_bar_figure(scores: list[dict], scored: Scored, caption: Caption) -> plt.Figure:
    """Precision, recall and F1 of the classes with the lowest F1 (all classes, up to MAX_SHOWN), as grouped
    horizontal bars, the legend beside the axes."""
    shown = lowest_f1(scores)
    y = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(shown)))
    for offset, key in zip((-0.27, 0.0, 0.27), ("precision", "recall", "f1")):
        ax.barh(y + offset, [s[key] for s in shown], height=0.27, label=key)
    ax.set_yticks(y, [s["class"] for s in shown])
    ax.invert_yaxis()  # lowest F1 on top
    what = "Per-class precision, recall and F1" + (
        f" of the {len(shown)} lowest-F1 of {len(scores)} glosses" if len(shown) < len(scores) else "")
    ax.set(xlim=(0, 1), xlabel="score", title=caption.title(what, scored))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def order_heatmap_figure(records: list[dict], glosses: list[str], caption: Caption) -> plt.Figure:
    """Top-1 recall per gloss with frames ordered, shuffled, reversed and shuffled on average (the sweep): the
    glosses that lose most without frame order (up to MAX_SHOWN), values written in the cells."""
    shown = losing_most(records, MAX_SHOWN)
    keys = ("ordered", "shuffled", "reversed", "sweep")
    values = np.array([[r[k] for k in keys] for r in shown]).reshape(len(shown), len(keys))
    names = dict(zip(glosses, label_names(glosses)))
    fig, ax = plt.subplots(figsize=(6.5, 1.8 + 0.3 * len(shown)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(keys)), ["ordered", "shuffled", "reversed", "sweep mean"])
    ax.set_yticks(range(len(shown)), [names[r["gloss"]] for r in shown])
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="black" if value > 0.5 else "white")
    what = "Top-1 recall by frame order" + (
        f", the {len(shown)} of {len(records)} glosses that lose most" if len(shown) < len(records) else "")
    ax.set_title(caption.title(what, condition="each frame order of the study"))
    fig.colorbar(image, ax=ax, fraction=0.05)
    return fig


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save `fig` as PNG atomically and free it. Metadata is stripped so identical plots give identical bytes."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
