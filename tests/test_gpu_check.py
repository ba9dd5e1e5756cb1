"""benchmarks/gpu_check.py, the GPU check for the day a GPU is at hand, works: its dry run on the CPU goes through
every kind of step (the CUDA tests collected, training through the train stage's loop in each precision and memory
format, evaluation, a DDP run of the train stage under torchrun) and writes its JSON and table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.slow
def test_the_gpu_check_dry_run_goes_through_every_step(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--dry-run", "--models", "R3D_18",
                           "Swin3D_T", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["environment"]["device"] == "cpu"
    assert "tests collected" in report["cuda_tests"]["summary"] and report["cuda_tests"]["passed"]
    measured = {(r["model"], r["precision"], r["channels_last"]) for r in report["throughput"]}
    assert {(p, cl) for m, p, cl in measured if m == "R3D_18"} == {(p, cl) for p in ("fp32", "bf16", "fp16")
                                                                   for cl in (False, True)}
    assert ("Swin3D_T", "fp32", False) in measured
    assert all(r["train_clips_s"] > 0 for r in report["throughput"])
    assert report["ddp"]["passed"] and any("effective batch 4 on 1 x cpu" in line for line in report["ddp"]["log"])
    assert report["table"].splitlines()[0].startswith("| model | clip | fp32 | fp32 CL | bf16 |")
    assert "| S3D | not measured |" in report["table"]  # models left out are said to be
