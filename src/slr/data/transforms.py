"""Clip transforms. Clips are uint8 (T, H, W, C) numpy arrays until `to_model_input` makes float (B, C, T, H, W).

Crops and flips apply identically to every frame of a clip: a per-frame crop would jitter the hand between frames
and fake motion.
"""

from __future__ import annotations

import numpy as np
import torch


def crop(clips: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """The `size` x `size` window at (top, left) of every frame; clips are (..., H, W, C)."""
    return clips[..., top : top + size, left : left + size, :]


def random_crop(clip: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The same random `size` x `size` window from every frame."""
    height, width = clip.shape[-3:-1]
    return crop(clip, size, int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1)))


def center_crop(clips: np.ndarray, size: int) -> np.ndarray:
    height, width = clips.shape[-3:-1]
    return crop(clips, size, (height - size) // 2, (width - size) // 2)


def three_crops(clips: np.ndarray, size: int) -> list[np.ndarray]:
    """Top-left, centre and bottom-right windows: the spatial views of multi-view testing."""
    height, width = clips.shape[-3:-1]
    return [crop(clips, size, 0, 0), center_crop(clips, size), crop(clips, size, height - size, width - size)]


def hflip(clip: np.ndarray) -> np.ndarray:
    """Mirror every frame left-right (this turns a right-handed sign into a left-handed one)."""
    return clip[..., ::-1, :]


def to_model_input(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, C) -> normalised float32 (B, C, T, H, W), on the batch's device; `mean` and `std` are
    (1, C, 1, 1, 1) tensors on that device."""
    # Copy to (B, C, T, H, W) memory order while still uint8: conv3d on a channels-last view is slower on CPU.
    x = batch.permute(0, 4, 1, 2, 3).contiguous().float().div_(255.0)
    return x.sub_(mean).div_(std)
