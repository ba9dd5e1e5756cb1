"""End to end: the real DVC pipeline on a tiny synthetic config, in a fresh git repo with no DVC remote."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from conftest import sh as _sh

pytestmark = pytest.mark.slow

def test_all_stages_write_their_outputs(repo: Path) -> None:
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["classes"] == 4
    assert data["train"] == {"listed": 24, "present": 24, "readable": 24, "short": 0, "bbox_fallback": 0,
                             "person_fallback": 0, "range_ignored": 0,
                             "skipped": {"missing": 0, "unreadable": 0, "zero_frame": 0, "truncated": 0}}
    assert json.loads((repo / "metrics/download.json").read_text())["videos"] == 44
    result = json.loads((repo / "metrics/eval.json").read_text())
    assert set(result) == {"check_name", "best_val_acc", "best_val_loss", "test", "val", "test_shuff", "val_consistent"}
    assert result["val_consistent"] is True
    assert result["test"]["num_videos"] == 12 and result["val"]["num_videos"] == 8
    assert sorted(result["test_shuff"]["perm"]) == list(range(8))
    assert result["test_shuff"]["shannon_entropy"] > 0
    for name in ("best.pth", "last.pth", "data_info.json"):
        assert (repo / "models" / name).is_file()
    info = json.loads((repo / "models/data_info.json").read_text())
    assert (info["num_frames"], info["crop_size"], info["num_classes"]) == (8, 16, 4)
    confusion = json.loads((repo / "plots/eval/confusion_test.json").read_text())
    assert len(confusion) == 12 and {"actual", "predicted"} <= set(confusion[0])
    order = json.loads((repo / "metrics/order.json").read_text())
    assert set(order) == {"ordered", "reversed", "by_entropy"}
    assert len(json.loads((repo / "plots/eval/entropy_sweep.json").read_text())) == 4
    images = sorted(p.name for p in (repo / "plots/eval/images").iterdir())
    assert images == ["confusion_test.png", "per_class_bars.png", "per_class_heatmap.png"]
    curve = (repo / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"] and len(curve) == 3  # header + 2 epochs


def test_pipeline_is_clean_and_second_repro_is_a_no_op(repo: Path) -> None:
    assert "up to date" in _sh(repo, "dvc", "status", "dvc.yaml")
    out = _sh(repo, "dvc", "repro")
    assert "Running stage" not in out


def test_same_params_give_identical_results(repo: Path) -> None:
    files = ("metrics/eval.json", "metrics/train/metrics.json", "models/best.pth", "dvc.lock")
    before = {p: (repo / p).read_bytes() for p in files}
    _sh(repo, "dvc", "repro", "--force", "--downstream", "train")  # retrain and re-evaluate
    assert {p: (repo / p).read_bytes() for p in files} == before


def test_evaluate_only_param_reruns_only_evaluate(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["shuffle_seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _sh(repo, "dvc", "repro")
    assert "Running stage 'evaluate'" in out
    assert not any(f"Running stage '{s}'" in out for s in ("download", "preprocess", "train"))


def test_exp_run_with_another_model_and_exp_show(repo: Path, mc3_experiment: str) -> None:
    rows = json.loads(_sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    baseline = next(row for row in rows if row["rev"] != "workspace")
    runs = [baseline, *[rev for exp in baseline["experiments"] for rev in exp["revs"]]]
    shown = {run["data"]["params"]["params.yaml"]["data"]["model"]: run["data"]["metrics"] for run in runs}
    assert set(shown) == {"R3D_18", "MC3_18"}
    for metrics in shown.values():
        assert set(metrics["metrics/eval.json"]["data"]["test"]["top_k_per_instance_acc"]) == {"top1", "top5", "top10"}


def test_plots_diff_overlays_two_experiments(repo: Path, mc3_experiment: str) -> None:
    plots = json.loads(_sh(repo, "dvc", "plots", "diff", "HEAD", mc3_experiment, "--json", stdout_only=True))["data"]
    for name in ("frame-order", "entropy-sweep", "confusion-test", "per-class-f1", "loss"):
        values = [v for part in plots[name] for v in part["content"]["data"]["values"]]
        assert len({v["rev"] for v in values}) == 2, name
    order = plots["frame-order"][0]["content"]["data"]["values"]
    assert {v["condition"] for v in order} == {
        "val, ordered",
        "test, ordered",
        "test, reversed",
        "test, shuffled (one permutation)",
        "test, shuffled (mean of 4)",
    }


def _readme_command(prefix: str) -> list[str]:
    """The README's command line that starts with `prefix`, split as a shell would: tests run what users read."""
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(prefix))
    return shlex.split(line.split("  #")[0])


def test_queued_grid_runs_and_the_comparison_table_shows_it(repo: Path, mc3_experiment: str) -> None:
    _sh(repo, "dvc", "exp", "run", "--queue", "-S", "model=MC3_18,R3D_18", "-S", "train.epochs=1", "-S", "seed=3")
    _sh(repo, "dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = _sh(repo, "dvc", "queue", "status", stdout_only=True)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert status.count("Success") >= 2 and "Failed" not in status, status
    table = _sh(repo, *_readme_command("dvc exp show --md --drop"), stdout_only=True)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert sorted(header) == sorted([
        "Experiment", "model", "data.split", "preprocess.num_frames",
        "test.top_k_per_instance_acc.top1", "test.top_k_per_instance_acc.top5",
        "test_shuff.top_k_per_instance_acc.top1", "test_shuff.top_k_per_instance_acc.top5",
        "test.top_k_average_per_class_acc.top1",
    ])
    rows = json.loads(_sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    runs = [rev for row in rows if row["rev"] != "workspace" for exp in row["experiments"] or [] for rev in exp["revs"]]
    grid = {(r["data"]["params"]["params.yaml"]["data"]["model"], r["data"]["params"]["params.yaml"]["data"]["seed"])
            for r in runs}
    assert {("MC3_18", 3), ("R3D_18", 3)} <= grid
