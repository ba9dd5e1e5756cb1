"""Shared fixtures: the repository root and the real WLASL metadata (skipped cleanly where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real WLASL metadata lives beside the checkout (never in git); WLASL_METADATA overrides the location.
WLASL_DIR = Path(os.environ.get("WLASL_METADATA", REPO.parent / "shared" / "wlasl"))


@pytest.fixture(scope="session")
def wlasl_dir() -> Path:
    if not (WLASL_DIR / "WLASL_v0.3.json").is_file():
        pytest.skip(f"real WLASL metadata not found in {WLASL_DIR} (set WLASL_METADATA to its folder)")
    return WLASL_DIR
