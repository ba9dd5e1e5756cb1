"""Plots at WLASL's full size: an evaluation of 2,000 glosses gives PNGs within 4,096 px a side and DVC plot data of
at most 30 classes, and `dvc plots diff` of two such runs draws every plot in headless Chromium, offline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slr.evaluate import Evaluation, by_gloss, compres, order_study, study_orderings
from slr.metrics import Scored
from slr.params import EvaluateParams
from slr.plots import MAX_ORDER_SENSITIVE, MAX_SHOWN, OTHER, Caption, confusion_figure, confusion_records, \
    per_class_bar_figure, per_class_scores, write_plots

from conftest import REPO, sh
from test_plots_html import chromium, declared_plots, drawn_views, needs_chromium, render, view_texts

GLOSSES = 2000
FRAMES = 16
MAX_SIDE = 4096


def evaluation(seed: int, clips_per_gloss: int = 2) -> Evaluation:
    """A made-up evaluation of a 2,000-gloss split: a model right on ordered frames about 70% of the time, less on
    shuffled or swept ones, and predicting the pair's other sign on reversed frames (as the synthetic set's are)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(GLOSSES).repeat_interleave(clips_per_gloss)

    def scored(target: torch.Tensor, skill: float) -> Scored:
        logits = torch.randn(len(target), GLOSSES, generator=generator)
        right = torch.rand(len(target), generator=generator) < skill
        logits[right, target[right]] += 10.0
        return Scored.from_logits(logits, labels[: len(target)])

    p = EvaluateParams(device="cpu", batch_size=8, shuffle_seed=1, sweep_count=4, sweep_seed=0, bootstrap_samples=100,
                       bootstrap_seed=0)
    orderings = study_orderings(FRAMES, p)
    test = {"ordered": scored(labels, 0.7), "shuffled": scored(labels, 0.3), "reversed": scored(labels ^ 1, 0.9)}
    test |= {name: scored(labels, 0.2 + 0.1 * i) for i, name in enumerate(n for n in orderings if n.startswith("sweep"))}
    glosses = [f"sign{i}" for i in range(GLOSSES)]
    return Evaluation(scored(labels, 0.7), test, orderings, {"val": 0, "test": 0}, glosses,
                      {"device": "cpu", "precision": "fp32", "copy": None, "clips": "x"})


def write(out: Path, seed: int) -> None:
    """Write the plots of `evaluation(seed)` to `out` as the evaluate stage does."""
    e = evaluation(seed)
    meta = {"val_acc": 0.7, "val_loss": 1.0}
    write_plots(out, compres(e, meta, True), order_study(e), by_gloss(e), e.test, e.glosses,
                Caption("R3D_18", GLOSSES, "test", "ordered frames"))


def test_at_2000_glosses_every_png_fits_and_every_dvc_plot_holds_30_classes(tmp_path: Path) -> None:
    write(tmp_path, seed=0)
    for png in (tmp_path / "images").glob("*.png"):
        with Image.open(png) as image:
            assert max(image.size) <= MAX_SIDE, (png.name, image.size)
    assert len(list((tmp_path / "images").glob("*.png"))) == 3

    for name in ("confusion_test.json", "confusion_test_shuffled.json"):
        records = json.loads((tmp_path / name).read_text())
        assert len({r["actual"] for r in records}) == MAX_SHOWN
        assert len({r["predicted"] for r in records} - {r["actual"] for r in records}) <= 1  # "~other" only
    assert len(json.loads((tmp_path / "per_class.json").read_text())) == MAX_SHOWN
    assert len(json.loads((tmp_path / "order_by_gloss.json").read_text())) == GLOSSES  # the data, in full
    sensitive = json.loads((tmp_path / "order_sensitive.json").read_text())
    drops = [r["drop"] for r in sensitive]
    assert len(sensitive) == MAX_ORDER_SENSITIVE and drops == sorted(drops, reverse=True)
    assert sensitive[0]["gloss"].split()[0].isdigit() and len(sensitive[0]["gloss"].split()[0]) == 4  # "0042 sign42"


def test_figures_say_which_classes_they_show() -> None:
    e = evaluation(seed=0)
    caption = Caption("R3D_18", GLOSSES, "test", "ordered frames", run="burly-soul")
    ordered = e.test["ordered"]
    confusion = confusion_figure(ordered, e.glosses, caption).axes[0].get_title()
    bars = per_class_bar_figure(per_class_scores(ordered, e.glosses), ordered, caption).axes[0].get_title()
    assert confusion.startswith(f"Confusion matrix of the {MAX_SHOWN} most-confused of the {GLOSSES} glosses with "
                                "clips\n")
    assert bars.startswith(f"Per-class precision, recall and F1 of the {MAX_SHOWN} lowest-F1 of {GLOSSES} glosses\n")
    for title in (confusion, bars):
        assert "R3D_18, run burly-soul, test set (2000 glosses), ordered frames: top-1 0." in title


def test_a_partial_copy_shows_only_the_glosses_that_have_clips(tmp_path: Path) -> None:
    """20 test clips over 2,000 glosses, as a partial copy gives: the confusion plots show those 20 glosses (wrong
    predictions into glosses without a clip go to ~other), not the first glosses of the index, and say so."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(100, 2000, 95)  # 20 glosses, none of the first 100
    logits = torch.randn(len(labels), GLOSSES, generator=generator)
    logits[torch.arange(0, 20, 2), labels[::2]] += 10.0  # half right
    logits[torch.arange(1, 20, 2), torch.arange(10)] += 10.0  # half wrong, into glosses 0-9 (no clip)
    logits[1, labels[3]] += 20.0  # one wrong into a gloss with clips
    scored = Scored.from_logits(logits, labels)
    glosses = [f"sign{i}" for i in range(GLOSSES)]
    names = [f"{i:04d} sign{i}" for i in labels.tolist()]
    figure = confusion_figure(scored, glosses, Caption("R3D_18", GLOSSES, "test", "ordered frames"))
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == names
    assert [t.get_text() for t in axes.get_xticklabels()] == names + [OTHER]
    assert axes.get_title().startswith("Confusion matrix of the 20 glosses with clips\nR3D_18, test set (2000 glosses)")
    matrix = axes.images[0].get_array()
    assert matrix[:, -1].sum() == 9 and matrix[1, 3] == 1 and np.trace(matrix) == 10  # ~other, the swap, right
    records = confusion_records(scored, glosses)
    assert {r["actual"] for r in records} == set(names) and {r["predicted"] for r in records} - set(names) == {OTHER}


@pytest.mark.slow
@needs_chromium
def test_plots_diff_of_two_2000_gloss_runs_draws_offline(tmp_path: Path) -> None:
    """Two commits of a copy of the project whose plots/eval hold 2,000-gloss evaluations (the training curves are
    the committed ones): `dvc plots diff` of them draws every plot of dvc.yaml, for both, with no network."""
    root = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.name", "slr tests")
    sh(root, "git", "config", "user.email", "tests@slr.invalid")
    for seed in (0, 1):
        shutil.rmtree(root / "plots/eval")
        write(root / "plots/eval", seed)
        sh(root, "git", "add", "-A")
        sh(root, "git", "commit", "-qm", f"run {seed}")
    vega, images = declared_plots(root)
    text, tags = render(root, tmp_path / "diff", "diff", "HEAD~1", "HEAD")
    assert text.count("vegaEmbed(") == vega and len(tags.named("img")) == 2 * images
    page = tmp_path / "diff" / "index.html"
    assert drawn_views(chromium(page.as_uri(), tmp_path / "p1", "--dump-dom")) == vega
    views = view_texts(page, tmp_path / "p2")
    assert len(views) == vega
    for texts in views:
        assert "HEAD" in texts and "HEAD~1" in texts, texts  # a legend entry or facet header per run
