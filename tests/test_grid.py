"""The grid on several machines, with DVC's own commands only (docs/grid.md: "Running the grid on several machines"):
two clones each run an experiment and push it to a shared git remote and DVC remote; a third pulls both, compares
them and restores each one's checkpoints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import copy_repo, sh, tool_env

pytestmark = pytest.mark.slow


def _clone(origin: Path, path: Path) -> Path:
    """A machine's fresh `git clone` of the team's repository."""
    sh(path.parent, "git", "clone", "-q", str(origin), str(path))
    sh(path, "git", "config", "user.name", path.name)  # `dvc exp run` commits
    sh(path, "git", "config", "user.email", f"{path.name}@slr.invalid")
    return path


def test_experiments_of_two_machines_meet_in_a_third_clone(repo: Path, tmp_path: Path) -> None:
    team = copy_repo(repo, tmp_path / "team")
    sh(team, "dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-storage"))
    sh(team, "git", "add", ".dvc/config")
    sh(team, "git", "commit", "-qm", "The team's DVC remote")
    sh(team, "dvc", "push")
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "clone", "-q", "--bare", str(team), str(origin))

    machines = {"exp-a": _clone(origin, tmp_path / "machine-a"), "exp-b": _clone(origin, tmp_path / "machine-b")}
    runs = {}
    for seed, (name, clone) in enumerate(machines.items(), start=1):  # both at once, as on two machines
        sh(clone, "dvc", "pull")
        runs[name] = subprocess.Popen(
            ["dvc", "exp", "run", "-n", name, "-S", f"seed={seed}", "-S", "train.epochs=1"], cwd=clone,
            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for name, run in runs.items():
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out
    sh(machines["exp-a"], "dvc", "exp", "push", "origin", "exp-a")  # by name
    sh(machines["exp-b"], "dvc", "exp", "push", "origin")  # every experiment of the commit

    third = _clone(origin, tmp_path / "machine-c")
    listed = sh(third, "dvc", "exp", "list", "origin", "--name-only", stdout_only=True)
    assert sorted(listed.split()) == ["exp-a", "exp-b"]
    # the git refs alone: metrics and plot data are in git, so the table and the plots need no checkpoint
    sh(third, "dvc", "exp", "pull", "--no-cache", "origin")
    rows = json.loads(sh(third, "dvc", "exp", "show", "--json", stdout_only=True))
    shown = {rev["name"]: rev["data"] for row in rows if row["rev"] != "workspace"
             for exp in row["experiments"] or [] for rev in exp["revs"]}
    assert set(shown) == {"exp-a", "exp-b"}
    ordered = {name: data["metrics"]["metrics/eval.json"]["data"]["ordered"] for name, data in shown.items()}
    assert {name: data["params"]["params.yaml"]["data"]["seed"] for name, data in shown.items()} == {
        "exp-a": 1, "exp-b": 2}
    assert ordered["exp-a"]["loss"] != ordered["exp-b"]["loss"]  # two runs, two results

    plots = json.loads(sh(third, "dvc", "plots", "diff", "exp-a", "exp-b", "--json", stdout_only=True))["data"]
    for name in ("loss", "frame-order"):
        assert {v["rev"] for part in plots[name] for v in part["content"]["data"]["values"]} == {"exp-a", "exp-b"}

    for name, machine in machines.items():  # each machine's pushed outputs, by name and by the bare push
        sh(third, "dvc", "exp", "pull", "origin", name)  # now its outputs too, from the DVC remote
        sh(third, "dvc", "exp", "apply", name)
        sh(third, "dvc", "pull")
        for out in ("models/best.pth", "models/last.pth", "metrics/eval.json"):
            assert (third / out).read_bytes() == (machine / out).read_bytes(), (name, out)
        assert "Data and pipelines are up to date" in sh(third, "dvc", "status")
