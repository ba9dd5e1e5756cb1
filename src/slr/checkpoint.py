"""Checkpoints: one dict per file, written atomically, read back by one function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slr.errors import UserError
from slr.files import atomic_path


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` atomically, byte-identical for identical contents (so dvc.lock hashes repeat)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        # Given a file object, torch names the archive "archive"; given a path it would use the random temp name.
        torch.save(checkpoint, f)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; run `dvc repro train` first")
    return torch.load(path, map_location="cpu", weights_only=True)
