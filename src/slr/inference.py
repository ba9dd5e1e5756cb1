"""Scoring clips with a model: the one inference path of training's validation, the evaluate stage and `slr-test`.

Batches come from a DataLoader, go to the model's device once, and are fed the way training fed them (the model's
normalisation, autocast and memory format). Each batch is then scored under every requested frame ordering (and
view) while it is on the device, so the order study reads each clip once however many permutations it tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from slr.data.transforms import center_crop, three_crops, to_model_input
from slr.errors import UserError
from slr.metrics import Scored

Ordering = Sequence[int] | None  # the frame order applied to every clip (stored index per position); None: as stored
AUTOCAST: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


@dataclass(frozen=True)
class Feed:
    """How batches meet the model: its normalisation, the autocast dtype (None = fp32) and the memory format.
    Autocast and channels-last are for CUDA only; on CPU the model sees plain fp32."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    autocast: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def choose(cls, amp: str, channels_last: bool, device: torch.device, mean: Sequence[float],
               std: Sequence[float]) -> Feed:
        """The feed for `device`: `amp` ("bf16", "fp16" or "off") and `channels_last` apply on CUDA only."""
        mean, std = tuple(mean), tuple(std)
        if device.type != "cuda":
            return cls(mean, std)
        if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"the model was trained in bf16, which {torch.cuda.get_device_name(device)} only emulates "
                            "(slowly); use a GPU of compute capability 8.0 or newer, train with train.amp=fp16, or "
                            "evaluate on the CPU (evaluate.device=cpu)")
        return cls(mean, std, AUTOCAST[amp], channels_last)

    @property
    def precision(self) -> str:
        """The arithmetic the model runs in: "fp32", "bf16" or "fp16" (autocast)."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    def context(self, device: torch.device) -> Any:
        return torch.autocast(device.type, self.autocast) if self.autocast else nullcontext()

    def inputs(self, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (B, T, H, W, C) clips -> the model's float input (B, C, T, H, W) on `device`."""
        x = to_model_input(clips.to(device, non_blocking=True), *_normalization(self.mean, self.std, device))
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


@functools.cache
def _normalization(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std as (1, C, 1, 1, 1) tensors on `device`, made once: making them for every batch would be a
    blocking host-to-GPU copy each time (for every ordering and view of an evaluation batch)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1, 1),
            torch.tensor(std, device=device).view(1, -1, 1, 1, 1))


@dataclass(frozen=True)
class Views:
    """Multi-view testing: each clip is scored on `temporal` windows of `length` frames spread over its frames,
    times 1 (centre) or 3 (top-left, centre, bottom-right) `crop` x `crop` crops; the views' probabilities are
    averaged. Clips then reach `predict` uncropped."""

    temporal: int
    spatial: int
    length: int
    crop: int

    def __post_init__(self) -> None:
        if self.spatial not in (1, 3):
            raise UserError(f"spatial views must be 1 or 3, got {self.spatial}")
        if self.temporal < 1:
            raise UserError(f"temporal views must be at least 1, got {self.temporal}")

    def windows(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """The views of uint8 clips (B, T, H, W, C)."""
        frames, size = clips.shape[1], clips.shape[2]
        if size < self.crop:
            raise UserError(f"clips of {size}x{size} are smaller than the model's {self.crop}x{self.crop} crop")
        if self.temporal > 1 and frames <= self.length:
            raise UserError(f"{self.temporal} temporal views need clips longer than the model's {self.length} "
                            f"frames, got {frames}; preprocess more frames (--num-frames)")
        starts = [round(i * (frames - self.length) / (self.temporal - 1)) for i in range(self.temporal)] \
            if self.temporal > 1 else [0]
        windows = [clips if self.temporal == 1 else clips[:, s : s + self.length] for s in starts]
        if self.spatial == 3:
            return [view for window in windows for view in three_crops(window, self.crop)]
        return [center_crop(window, self.crop) for window in windows]


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    feed: Feed,
    device: torch.device,
    orderings: Sequence[Ordering] = (None,),
    views: Views | None = None,
    desc: str = "",
    progress: bool = True,
) -> list[Scored]:
    """Score every clip of `batches` (uint8 clips (B, T, H, W, C), labels) under each of `orderings`; one `Scored`
    per ordering, in clip order, on the CPU.

    Each batch is moved to the device once and reordered there, so the clips are read once per call however many
    orderings there are. `model` is the bare module, not a DDP wrapper (whose forward expects every process in
    every batch). Scores stay on the device until the end: a `.item()` per batch would stall the GPU queue.
    """
    model.eval()
    parts: list[list[Scored]] = [[] for _ in orderings]
    index = [None if order is None else torch.as_tensor(list(order), device=device) for order in orderings]
    for clips, labels in tqdm(batches, desc=desc, leave=False, unit="batch", disable=not progress):
        clips, labels = clips.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for part, order in zip(parts, index):
            ordered = clips if order is None else clips.index_select(1, order)
            part.append(Scored.from_log_probs(_log_probs(model, ordered, feed, device, views), labels))
    return [_to_cpu(Scored.cat(part)) if part else _empty() for part in parts]


def _log_probs(model: nn.Module, clips: torch.Tensor, feed: Feed, device: torch.device,
               views: Views | None) -> torch.Tensor:
    """Log-probabilities (B, classes) of uint8 clips on the device: of the clip itself, or the log of its views'
    mean probability (logsumexp, so a confident view never underflows to log(0))."""
    per_view = []
    for view in [clips] if views is None else views.windows(clips):
        with feed.context(device):
            logits = model(feed.inputs(view, device))
        per_view.append(logits.float().log_softmax(1))
    if len(per_view) == 1:
        return per_view[0]
    return torch.stack(per_view).logsumexp(0) - math.log(len(per_view))


def _to_cpu(scored: Scored) -> Scored:
    return Scored(scored.topk.cpu(), scored.loss.cpu(), scored.labels.cpu())


def _empty() -> Scored:
    return Scored(torch.zeros((0, 1), dtype=torch.int64), torch.zeros(0, dtype=torch.float64),
                  torch.zeros(0, dtype=torch.int64))
