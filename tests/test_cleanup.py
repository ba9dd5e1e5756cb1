"""`slr-cleanup`: which experiments it keeps, that a dry run deletes nothing, and that --yes deletes what it listed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import GRID_SEEDS, REPO, copy_repo, sh
from slr import cleanup
from slr.cleanup import Experiment, choose, confirmed, resolve
from slr.errors import UserError


def _exp(name: str, group: str, metric: float | None, minute: int) -> Experiment:
    return Experiment(name=name, rev=name, baseline="b", timestamp=f"2025-01-01T10:{minute:02d}:00", group=(group,),
                      metric=metric, outs={})


def _kept(experiments: list[Experiment], lower_is_better: bool = False) -> dict[str, tuple[str, ...]]:
    return choose(experiments, lower_is_better)


def test_keeps_the_best_and_the_latest_of_each_group() -> None:
    runs = [_exp("a1", "A", 0.5, 1), _exp("a2", "A", 0.9, 2), _exp("a3", "A", 0.1, 3), _exp("a4", "A", 0.7, 4),
            _exp("b1", "B", 0.2, 5)]
    assert _kept(runs) == {"a2": ("best",), "a4": ("latest",), "b1": ("best", "latest")}
    assert _kept(runs, lower_is_better=True) == {"a3": ("best",), "a4": ("latest",), "b1": ("best", "latest")}


def test_a_tie_goes_to_the_later_run_and_runs_without_the_metric_are_never_best() -> None:
    runs = [_exp("old", "A", 0.5, 1), _exp("new", "A", 0.5, 2), _exp("failed", "A", None, 3)]
    assert _kept(runs) == {"new": ("best",), "failed": ("latest",)}


def test_metric_names_resolve_to_one_file_or_fail_listing_the_choices() -> None:
    available = {"metrics/eval.json:best_val_loss", "metrics/eval.json:test.top1", "metrics/data.json:test.top1"}
    assert resolve("best_val_loss", available, "metric") == "metrics/eval.json:best_val_loss"
    assert resolve("metrics/data.json:test.top1", available, "metric") == "metrics/data.json:test.top1"
    with pytest.raises(UserError, match="in several files; choose one of: metrics/data.json:test.top1, metrics/eval"):
        resolve("test.top1", available, "metric")
    with pytest.raises(UserError, match=r"unknown metric 'top1'; available: metrics/data.json:test.top1, "):
        resolve("top1", available, "metric")


def test_deleting_needs_yes_or_a_y_typed_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["y", "", "no"])
    monkeypatch.setattr("builtins.input", lambda _: next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert [confirmed(False, "?") for _ in range(3)] == [True, False, False]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert not confirmed(False, "?")  # a pipe is never asked
    assert confirmed(True, "?")


def _cleanup(root: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """slr-cleanup in `root`, its stdin a pipe (never this terminal, so never a prompt)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    return subprocess.run([sys.executable, "-m", "slr.cleanup", *args], cwd=root, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_console_script_and_help() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["slr-cleanup"] == "slr.cleanup:cli"
    result = _cleanup(REPO, "--help")
    assert result.returncode == 0
    assert all(option in result.stdout for option in ("--yes", "--metric", "--lower-is-better", "--by", "dry run"))


def test_outside_a_dvc_project(tmp_path: Path) -> None:
    assert "is not in a DVC project" in _one_line_error(_cleanup(tmp_path))


def test_a_project_without_experiments(tmp_path: Path) -> None:
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    sh(tmp_path, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "init")
    assert "no experiments in" in _one_line_error(_cleanup(tmp_path))


SEEDS = GRID_SEEDS  # the queued_grid fixture (conftest): three one-epoch MC3_18 experiments, seed1..seed3


@pytest.fixture(scope="module")
def exps_repo(queued_grid: Path) -> Path:
    return queued_grid


def _experiments(root: Path) -> dict[str, dict]:
    """name -> exp show's data (metrics, outs, timestamp) for HEAD's experiments."""
    rows = json.loads(sh(root, "dvc", "exp", "show", "--json", stdout_only=True))
    return {rev["name"]: rev["data"] for row in rows for exp in row["experiments"] or [] for rev in exp["revs"]}


def _cache_files(root: Path) -> set[str]:
    """The object ids in the local cache (files/md5/ab/cdef... -> abcdef...)."""
    return {p.parent.name + p.name for p in (root / ".dvc/cache/files").rglob("*") if p.is_file()}


def _plan(output: str) -> tuple[set[str], set[str], int]:
    """From a cleanup report: the experiments marked REMOVE, the object ids it names, the number of objects."""
    removed = {line.split()[0] for line in output.splitlines() if line.endswith("REMOVE")}
    named = set(re.findall(r"\(([0-9a-f]{32}(?:\.dir)?)\)$", output, re.MULTILINE))
    count = int(re.search(r"dvc gc then deletes (\d+) cache objects", output).group(1))
    return removed, named, count


@pytest.mark.slow
def test_unknown_metric_lists_the_available_ones(exps_repo: Path) -> None:
    error = _one_line_error(_cleanup(exps_repo, "--metric", "top1_acc"))
    assert "unknown metric 'top1_acc'; available: " in error
    assert "metrics/eval.json:ordered.top1" in error


@pytest.mark.slow
def test_dry_run_lists_what_it_would_delete_and_deletes_nothing(exps_repo: Path) -> None:
    before = (set(_experiments(exps_repo)), _cache_files(exps_repo))
    for stdin in ("", "y\n"):  # no --yes: a "y" piped in is no answer (stdin is not a terminal)
        result = _cleanup(exps_repo, stdin=stdin)
        assert result.returncode == 0, result.stderr
        removed, named, count = _plan(result.stdout)
        assert removed and count >= len(named) > 0
        command = next(line.split() for line in result.stdout.splitlines() if "dvc exp remove" in line)
        assert set(command[3:]) == removed
        assert "dvc gc --workspace --all-commits --all-experiments --force" in result.stdout
        assert "dry run: nothing deleted" in result.stdout
        assert (set(_experiments(exps_repo)), _cache_files(exps_repo)) == before


@pytest.mark.slow
def test_yes_deletes_exactly_what_the_dry_run_listed(queued_grid: Path, tmp_path: Path) -> None:
    exps_repo = copy_repo(queued_grid, tmp_path / "repo", commit=False)  # other tests read the grid as it is
    experiments = _experiments(exps_repo)
    removed, named, count = _plan(_cleanup(exps_repo).stdout)
    kept = set(experiments) - removed
    top1 = {name: data["metrics"]["metrics/eval.json"]["data"]["ordered"]["top1"]
            for name, data in experiments.items()}
    assert f"seed{SEEDS[-1]}" in kept and 1 <= len(kept) <= 2  # the latest, plus the best if that is another
    assert max(top1[name] for name in kept) == max(top1.values())
    cache_before = _cache_files(exps_repo)

    result = _cleanup(exps_repo, "--yes")
    assert result.returncode == 0, result.stderr
    assert set(_experiments(exps_repo)) == kept
    deleted = cache_before - _cache_files(exps_repo)
    assert len(deleted) == count and named <= deleted
    checkpoints = {experiments[name]["outs"][f"models/{file}"]["hash"] for name in removed
                   for file in ("best.pth", "last.pth")}
    assert checkpoints <= deleted
    for name in kept:  # their checkpoints are still in the cache: they can be applied
        sh(exps_repo, "dvc", "exp", "apply", name)
        assert "up to date" in sh(exps_repo, "dvc", "status")
        assert yaml.safe_load((exps_repo / "params.yaml").read_text())["seed"] == int(name.removeprefix("seed"))
        best = hashlib.md5((exps_repo / "models/best.pth").read_bytes()).hexdigest()
        assert best == experiments[name]["outs"]["models/best.pth"]["hash"]


@pytest.mark.parametrize(("executor", "saved"), [
    (None, True),  # run in the workspace
    ({"state": "success", "name": "dvc-task", "local": None}, True),  # run by `dvc queue start`
    ({"state": "queued", "name": None, "local": None}, False),
    ({"state": "failed", "name": "dvc-task", "local": None}, False),
])
def test_queue_runs_that_succeeded_are_candidates(executor: dict | None, saved: bool) -> None:
    assert cleanup._finished({"executor": executor, "revs": []}) is saved
