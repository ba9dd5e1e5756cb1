"""End to end: the real DVC pipeline on a tiny synthetic config, in a fresh git repo with no DVC remote."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from slr.params import CROPS

from conftest import REPO, copy_repo, queue_status, sh, tool_env
from conftest import sh as _sh

pytestmark = pytest.mark.slow

def test_all_stages_write_their_outputs(repo: Path) -> None:
    assert json.loads((repo / "metrics/data.json").read_text()) == {
        "classes": 4, "train_clips": 24, "val_clips": 8, "test_clips": 12, "skipped": 0}
    data = json.loads((repo / "reports/data.json").read_text())
    assert data["train"] == {"listed": 24, "present": 24, "readable": 24, "short": 0, "bbox_fallback": 0,
                             "person_fallback": 0, "range_applied": 23, "range_ignored": 0, "range_clamped": 0,
                             "skipped": {"missing": 0, "unreadable": 0, "zero_frame": 0, "truncated": 0}}
    assert json.loads((repo / "reports/download.json").read_text())["videos"] == 44
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["val_consistent"] is True and (metrics["device"], metrics["precision"]) == ("cpu", "fp32")
    result = json.loads((repo / "reports/eval.json").read_text())
    assert {"check_name", "best_val_acc", "best_val_loss", "test", "val", "test_shuff", "val_consistent"} <= set(result)
    assert result["test"]["num_videos"] == 12 and result["val"]["num_videos"] == 8
    assert sorted(result["test_shuff"]["perm"]) == list(range(8))
    assert result["test_shuff"]["shannon_entropy"] > 0
    assert result["test"]["top_k_per_instance_acc"]["top1"] == metrics["ordered"]["top1"]
    assert len(result["order_study"]["sweep"]) == 4
    for name in ("best.pth", "last.pth", "data_info.json"):
        assert (repo / "models" / name).is_file()
    info = json.loads((repo / "models/data_info.json").read_text())
    assert (info["num_frames"], info["crop_size"], info["num_classes"]) == (8, 16, 4)
    confusion = json.loads((repo / "plots/eval/confusion_test.json").read_text())
    assert len(confusion) == 12 and {"actual", "predicted"} <= set(confusion[0])
    assert len(json.loads((repo / "plots/eval/entropy_sweep.json").read_text())) == 4
    glosses = json.loads((repo / "plots/eval/order_by_gloss.json").read_text())
    assert [g["gloss"] for g in glosses] == ["up", "down", "come", "go"]
    images = sorted(p.name for p in (repo / "plots/eval/images").iterdir())
    assert images == ["confusion_test.png", "order_by_gloss.png", "per_class_bars.png"]
    curve = (repo / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"] and len(curve) == 3  # header + 2 epochs


def test_metrics_table_stays_small(repo: Path) -> None:
    """What `dvc exp show` lists as metric columns: the numbers a comparison needs, at most 40 of them."""
    shown = json.loads(_sh(repo, "dvc", "metrics", "show", "--json", stdout_only=True))

    def leaves(value: object) -> int:
        return sum(map(leaves, value.values())) if isinstance(value, dict) else 1

    columns = sum(leaves(data["data"]) for rev in shown.values() for data in rev["data"].values())
    assert 20 <= columns <= 40, columns


def test_pipeline_is_clean_and_second_repro_is_a_no_op(repo: Path) -> None:
    assert "up to date" in _sh(repo, "dvc", "status", "dvc.yaml")
    out = _sh(repo, "dvc", "repro")
    assert "Running stage" not in out


@pytest.mark.parametrize("how", ["exp run", "repro"])
def test_a_typo_in_params_costs_nothing(repo: Path, tmp_path: Path, how: str) -> None:
    root = copy_repo(repo, tmp_path / "repo")
    outputs = {p: p.read_bytes() for p in [*(root / "models").iterdir(), *(root / "metrics").rglob("*.*"),
                                           *(root / "reports").iterdir(), *(root / "plots").rglob("*.*")]}
    if how == "exp run":
        result = subprocess.run(["dvc", "exp", "run", "-S", "train.epochs=four"], cwd=root, env=tool_env(),
                                capture_output=True, text=True)
    else:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["preprocess"]["crop"] = "centre"
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        result = subprocess.run(["dvc", "repro"], cwd=root, env=tool_env(), capture_output=True, text=True)
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [{"exp run": "error: params.yaml: train.epochs must be an integer, got 'four' (str)",
                       "repro": f"error: params.yaml: preprocess.crop must be one of {', '.join(CROPS)}, got 'centre'"}[
                          how]]
    assert {p: p.read_bytes() for p in outputs if p.exists()} == outputs  # nothing of the finished run deleted
    sh(root, "git", "checkout", "params.yaml")  # README: how to get back after a failed experiment
    assert "up to date" in sh(root, "dvc", "status", "dvc.yaml")


def test_same_params_give_identical_results(repo: Path) -> None:
    files = ("metrics/eval.json", "reports/eval.json", "metrics/train/metrics.json", "models/best.pth", "dvc.lock")
    before = {p: (repo / p).read_bytes() for p in files}
    _sh(repo, "dvc", "repro", "--force", "--downstream", "train")  # retrain and re-evaluate
    assert {p: (repo / p).read_bytes() for p in files} == before


def test_runs_started_together_give_the_results_of_a_run_alone(repo: Path, tmp_path: Path) -> None:
    """Two clones retrain at once on one machine (sharing its lock folder): each computes with train.threads, taking
    that many cores or waiting for them, so both score exactly as the session's repo did alone."""
    alone = {p: (repo / p).read_bytes() for p in ("metrics/eval.json", "models/best.pth")}
    clones = [copy_repo(repo, tmp_path / name) for name in ("a", "b")]
    runs = [subprocess.Popen(["dvc", "repro", "--force", "--downstream", "train"], cwd=clone, env=tool_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for clone in clones]
    for run in runs:
        out = run.communicate(timeout=900)[0]
        assert run.returncode == 0, out
    for clone in clones:
        assert {p: (clone / p).read_bytes() for p in alone} == alone


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
        assert {"top1", "top5", "top1_low", "top1_high"} <= set(metrics["metrics/eval.json"]["data"]["ordered"])


def test_plots_diff_overlays_two_experiments(repo: Path, mc3_experiment: str) -> None:
    plots = json.loads(_sh(repo, "dvc", "plots", "diff", "HEAD", mc3_experiment, "--json", stdout_only=True))["data"]
    for name in ("frame-order", "entropy-sweep", "confusion-test", "per-class-f1", "order-sensitive-glosses", "loss"):
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


def test_queued_grid_runs_and_the_comparison_table_shows_it(queued_grid: Path) -> None:
    status = queue_status(queued_grid)
    assert status.count("Success") == 3 and "Failed" not in status, status
    table = _sh(queued_grid, *_readme_command("dvc exp show --md --drop"), stdout_only=True)
    header = [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]
    assert sorted(header) == sorted([
        "Experiment", "model", "data.split",
        *(f"{c}.top1{s}" for c in ("ordered", "shuffled", "drop") for s in ("", "_low", "_high")), "reversed.top1",
    ])
    rows = json.loads(_sh(queued_grid, "dvc", "exp", "show", "--json", stdout_only=True))
    runs = [rev for row in rows if row["rev"] != "workspace" for exp in row["experiments"] or [] for rev in exp["revs"]]
    assert sorted(r["name"] for r in runs) == ["seed1", "seed2", "seed3"]
    weights = {r["data"]["outs"]["models/best.pth"]["hash"] for r in runs}
    assert len(weights) == 3  # each seed's own run, although two ran at once


def test_a_queued_experiment_scores_as_the_same_experiment_run_alone(queued_grid: Path, tmp_path: Path) -> None:
    root = copy_repo(queued_grid, tmp_path / "repo", commit=False)  # the grid's commit, its experiments' refs
    _sh(root, "dvc", "exp", "run", "-S", "model=MC3_18", "-S", "train.epochs=1", "-S", "seed=1")
    refs = _sh(root, "git", "for-each-ref", "--format=%(refname)", "refs/exps", stdout_only=True).split()
    queued = next(ref for ref in refs if ref.endswith("/seed1"))  # run by `dvc queue start -j 2`, beside another
    assert _sh(root, "git", "show", f"{queued}:metrics/eval.json", stdout_only=True) == \
        (root / "metrics/eval.json").read_text()
