"""The stage scripts as users meet them: --help, and one-line errors (no traceback) for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

STAGES = ["check", "download", "preprocess", "train", "evaluate"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("stage", STAGES)
def test_help(stage: str) -> None:
    result = _run([str(REPO / "stages" / f"{stage}.py"), "--help"], REPO)
    assert result.returncode == 0
    assert "usage:" in result.stdout and "--params" in result.stdout


def _params(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


def _assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr  # beside it at most the stage's device line (slr.devices)
    assert message in errors[0]
    assert "Traceback" not in result.stderr


def test_unknown_model_lists_the_valid_ones(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: raw.update(model="R3D18"))
    result = _run([str(REPO / "stages/check.py"), "params.ok"], cwd)  # the first stage to run
    _assert_one_line_error(result, "unknown model 'R3D18'; valid: S3D, R3D_18, MC3_18, R(2+1)D_18, Swin3D_T")
    assert not (cwd / "params.ok").exists()


def test_crop_larger_than_the_frames_is_met_by_the_check(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: raw["train"].update(crop_size=64))
    result = _run([str(REPO / "stages/check.py"), "params.ok"], cwd)
    _assert_one_line_error(result, "train.crop_size 64 is larger than preprocess.frame_size 28")


def test_unknown_split(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: raw["data"].update(split="asl42"))
    result = _run([str(REPO / "stages/preprocess.py"), "raw", "clips", "data.json", "report.json"], cwd)
    _assert_one_line_error(result, "unknown data.split 'asl42'; valid: asl100, asl300, asl1000, asl2000")


def test_wrong_type(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: raw["train"].update(epochs="many"))
    result = _run([str(REPO / "stages/download.py"), "raw", "download.json"], cwd)
    _assert_one_line_error(result, "train.epochs must be an integer, got 'many'")


def test_missing_preprocessed_data(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: None)
    result = _run([str(REPO / "stages/train.py"), "clips", "models", "live"], cwd)
    _assert_one_line_error(result, "no preprocessed data at clips")


def test_missing_checkpoint(tmp_path: Path) -> None:
    cwd = _params(tmp_path, lambda raw: None)
    result = _run([str(REPO / "stages/evaluate.py"), "best.pth", "clips", "eval.json", "report.json", "plots",
                   "predictions.json"], cwd)
    _assert_one_line_error(result, "checkpoint best.pth not found")
