"""End to end: the real DVC pipeline on a tiny synthetic config, in a fresh git repo with no DVC remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow

TINY = {
    "data": {"synthetic": {"pairs": 2, "signers": 3, "train_per_class": 6, "val_per_class": 2, "test_per_class": 3,
                           "size": 32}},
    "preprocess": {"num_frames": 8, "frame_size": 20},
    "train": {"epochs": 2, "batch_size": 4, "crop_size": 16},
    "evaluate": {"batch_size": 5, "sweep_count": 4},
}


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _sh(cwd: Path, *args: str, stdout_only: bool = False) -> str:
    """Run a command with the test's Python first on PATH (DVC stages call `python`); return its output."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout if stdout_only else result.stdout + result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's git-visible files as a new git repo, with tiny params, after one `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
        check=True,
    ).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file() and not name.startswith(("metrics/", "plots/", "models/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    _merge(params, TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _sh(root, "git", "init", "-q")
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    _sh(root, "dvc", "repro")
    return root


def test_all_stages_write_their_outputs(repo: Path) -> None:
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["classes"] == 4
    assert data["train"] == {"listed": 24, "present": 24, "readable": 24, "short": 0}
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
    _sh(repo, "dvc", "repro", "--force", "train")
    assert {p: (repo / p).read_bytes() for p in files} == before


def test_evaluate_only_param_reruns_only_evaluate(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["shuffle_seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = _sh(repo, "dvc", "repro")
    assert "Running stage 'evaluate'" in out
    assert not any(f"Running stage '{s}'" in out for s in ("download", "preprocess", "train"))


def test_exp_run_with_another_model_and_exp_show(repo: Path) -> None:
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    _sh(repo, "dvc", "exp", "run", "-n", "mc3", "-S", "model=MC3_18")
    rows = json.loads(_sh(repo, "dvc", "exp", "show", "--json", stdout_only=True))
    baseline = next(row for row in rows if row["rev"] != "workspace")
    runs = [baseline, *[rev for exp in baseline["experiments"] for rev in exp["revs"]]]
    shown = {run["data"]["params"]["params.yaml"]["data"]["model"]: run["data"]["metrics"] for run in runs}
    assert set(shown) == {"R3D_18", "MC3_18"}
    for metrics in shown.values():
        assert set(metrics["metrics/eval.json"]["data"]["test"]["top_k_per_instance_acc"]) == {"top1", "top5", "top10"}


def test_plots_diff_overlays_two_experiments(repo: Path) -> None:
    if "mc3" not in _sh(repo, "dvc", "exp", "list", "--name-only", stdout_only=True).split():
        _sh(repo, "dvc", "exp", "run", "-n", "mc3", "-S", "model=MC3_18")
    plots = json.loads(_sh(repo, "dvc", "plots", "diff", "HEAD", "mc3", "--json", stdout_only=True))["data"]
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
