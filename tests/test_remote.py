"""Sharing results through a DVC remote, as docs/housekeeping.md tells users: push, fresh clone, pull, and nothing to redo."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from conftest import copy_repo, sh

pytestmark = pytest.mark.slow

DVC_OUTS = ("data/raw", "data/clips", "models")  # what DVC caches: raw videos, clip arrays, checkpoints


def _same_tree(a: Path, b: Path) -> bool:
    """The two folders hold the same file names with the same bytes, at every depth."""
    diff = filecmp.dircmp(a, b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, diff.common_files, shallow=False)
    return (not diff.left_only and not diff.right_only and not mismatch and not errors
            and all(_same_tree(a / sub, b / sub) for sub in diff.common_dirs))


def test_push_clone_pull_gives_the_same_outputs_and_a_clean_status(repo: Path, tmp_path: Path) -> None:
    origin = copy_repo(repo, tmp_path / "origin")
    storage = tmp_path / "storage"
    sh(origin, "dvc", "remote", "add", "-d", "local", str(storage))  # writes .dvc/config: commit it for the team
    sh(origin, "git", "add", ".dvc/config")
    sh(origin, "git", "commit", "-qm", "Default DVC remote")
    assert "pushed" in sh(origin, "dvc", "push")

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "models/best.pth").exists()
    sh(clone, "dvc", "pull")

    assert "Data and pipelines are up to date" in sh(clone, "dvc", "status")
    assert "in sync" in sh(clone, "dvc", "status", "--cloud")
    for out in DVC_OUTS:
        assert _same_tree(origin / out, clone / out), out
    assert "Running stage" not in sh(clone, "dvc", "repro")
