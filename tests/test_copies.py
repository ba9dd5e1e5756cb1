"""A WLASL copy brought by the user: its fingerprint is DVC's own md5, it travels into every result, and a changed
copy is never silently skipped by `dvc repro`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from slr.data.fingerprint import folder_md5
from slr.data.synthetic import generate
from slr.params import load_params

from conftest import copy_repo, sh


def test_fingerprint_is_the_md5_dvc_records(tmp_path: Path) -> None:
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    copy = tmp_path / "wlasl"
    (copy / "videos" / "sub").mkdir(parents=True)
    (copy / "WLASL_v0.3.json").write_text("[]")
    for i, name in enumerate(["videos/00001.mp4", "videos/00002.mp4", "videos/sub/b c.mp4", "z.zip"]):
        (copy / name).write_bytes(bytes([i]) * (1000 + i))
    sh(tmp_path, "dvc", "add", "wlasl")
    recorded = yaml.safe_load((tmp_path / "wlasl.dvc").read_text())["outs"][0]
    fingerprint = folder_md5(copy, skip_placeholders=False)
    assert (fingerprint.md5, fingerprint.files, fingerprint.bytes) == (recorded["md5"], recorded["nfiles"],
                                                                       recorded["size"])


@pytest.mark.slow
def test_a_local_copy_is_named_in_every_result_and_its_changes_rerun_the_pipeline(repo: Path, tmp_path: Path) -> None:
    root = copy_repo(repo, tmp_path / "repo")
    generate(load_params(root / "params.yaml").data.synthetic, root / "data/wlasl")  # a copy in WLASL's own format
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["source"] = "local"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert sh(root, "git", "status", "--porcelain", "data/wlasl") == ""  # git never sees the copy's files
    out = sh(root, "dvc", "repro")
    assert "Running stage 'download'" in out and "Running stage 'evaluate'" in out
    copy = folder_md5(root / "data/wlasl").md5
    assert yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"] == copy  # recorded by dvc repro
    download = json.loads((root / "reports/download.json").read_text())
    manifest = json.loads((root / "data/clips/manifest.json").read_text())
    checkpoint = torch.load(root / "models/best.pth", weights_only=True)
    metrics = json.loads((root / "metrics/eval.json").read_text())
    assert download["copy"]["md5"] == manifest["copy"]["md5"] == checkpoint["copy"]["md5"] == metrics["copy"] == copy
    assert "up to date" in sh(root, "dvc", "status", "dvc.yaml")

    removed = sorted((root / "data/wlasl/videos").iterdir())[0]
    removed.unlink()  # a video removed from the copy, nothing recorded: DVC must not skip it
    status = sh(root, "dvc", "status", "dvc.yaml")
    assert "download:" in status and "modified:" in status and "data/wlasl" in status, status
    out = sh(root, "dvc", "repro", "download")  # what `dvc repro` runs first (the rest follows from data/raw)
    assert "Running stage 'download'" in out and "Stage 'download' didn't change" not in out
    download = json.loads((root / "reports/download.json").read_text())
    assert download["copy"]["md5"] == folder_md5(root / "data/wlasl").md5 != copy
    assert download["instances_without_video"] == 1
    assert yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"] == download["copy"]["md5"]
