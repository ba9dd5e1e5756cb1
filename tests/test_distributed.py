"""The stage's own torchrun launch: one `error:` line per failure, whichever rank meets it first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WORKER = """
import os, sys, time
from slr.cli import run_main
from slr.errors import UserError

def main():
    if os.environ["RANK"] == "{rank}":
        {action}
    time.sleep(60)  # the other rank is still busy when torchrun stops it

run_main(main)
"""
LAUNCH = "import sys; from slr.cli import run_main; from slr.distributed import relaunch; " \
         "run_main(lambda: sys.exit(relaunch(2, [sys.argv[1]])))"


def _launch(tmp_path: Path, rank: int, action: str) -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(rank=rank, action=action))
    return subprocess.run([sys.executable, "-c", LAUNCH, str(script)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rank", [0, 1])
def test_bad_input_met_by_any_rank_is_one_line(tmp_path: Path, rank: int) -> None:
    # rank 1 failing while rank 0 is still working is the race that printed a second line (or none from rank 0)
    result = _launch(tmp_path, rank, f"raise UserError('rank {rank} met bad input')")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: rank {rank} met bad input"]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr


def test_a_crashed_rank_is_named_once_beside_its_own_traceback(tmp_path: Path) -> None:
    result = _launch(tmp_path, 1, "raise RuntimeError('boom')")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: training process 1 of 2 failed with exit code 1; its output above says why"]
    assert "RuntimeError: boom" in result.stderr  # the worker's own traceback says why
