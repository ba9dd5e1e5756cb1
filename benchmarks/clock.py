"""Timing a step of torch work the same way in every benchmark: random uint8 clips in memory (no loader in the
measure), and a wall clock that waits for the GPU before it starts and before it stops (CUDA kernels run
asynchronously, so without the waits a timing measures only the launches)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_batches(num: int, batch: int, frames: int, size: int, classes: int
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`num` batches of clips (batch, frames, size, size, 3) in the loader's uint8 layout, with random labels."""
    return [(torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8),
             torch.randint(0, classes, (batch,))) for _ in range(num)]


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds `fn()` takes on `device`, its GPU work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start
