"""Checkpoints: one dict per file, written atomically, read back by one function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from slr.errors import UserError
from slr.files import atomic_path


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` onto the CPU."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; run `dvc repro train` first")
    return torch.load(path, map_location="cpu", weights_only=True)
