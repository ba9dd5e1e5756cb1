"""The optimisation recipe: AdamW with a backbone and a head learning rate, a per-epoch learning-rate schedule with
optional linear warm-up, and early stopping on validation loss.

Each piece has a `state_dict` so that a resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
)

from slr.models import head_parameters
from slr.params import EarlyStoppingParams, SchedulerParams, TrainParams


def make_optimizer(model: nn.Module, model_name: str, p: TrainParams) -> torch.optim.AdamW:
    """AdamW over two parameter groups: the backbone at `backbone_lr` and the new head at `head_lr`."""
    head = head_parameters(model, model_name)
    head_ids = {id(param) for param in head}
    backbone = [param for param in model.parameters() if id(param) not in head_ids]
    return torch.optim.AdamW(
        [{"params": backbone, "lr": p.backbone_lr}, {"params": head, "lr": p.head_lr}],
        weight_decay=p.weight_decay,
        eps=p.eps,
    )


class Schedule:
    """A learning-rate schedule stepped once per epoch: `warmup_epochs` of linear warm-up, then `name`.

    torch's SequentialLR cannot chain ReduceLROnPlateau (which needs the val loss), so the two phases are kept
    here and stepped in turn; the epoch count decides which one is live.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, p: SchedulerParams, epochs: int) -> None:
        self.p, self.epochs_done = p, 0
        self.main: LRScheduler | ReduceLROnPlateau | None = None
        if p.name == "cosine":
            self.main = CosineAnnealingLR(optimizer, T_max=max(1, epochs - p.warmup_epochs))
        elif p.name == "warm_restarts":
            self.main = CosineAnnealingWarmRestarts(optimizer, T_0=p.t0)
        elif p.name == "plateau":
            self.main = ReduceLROnPlateau(optimizer, mode="min", factor=p.factor, patience=p.patience)
        # Built last: a scheduler sets the lr when it is built (CosineAnnealingWarmRestarts back to the base lr),
        # so the warm-up's starting factor must be the last word.
        self.warmup: LRScheduler | None = None
        if p.warmup_epochs:
            self.warmup = LinearLR(optimizer, start_factor=1 / (p.warmup_epochs + 1), total_iters=p.warmup_epochs)

    def step(self, val_loss: float) -> None:
        """Advance one epoch; ReduceLROnPlateau judges `val_loss`."""
        self.epochs_done += 1
        if self.warmup is not None and self.epochs_done <= self.p.warmup_epochs:
            self.warmup.step()
        elif isinstance(self.main, ReduceLROnPlateau):
            self.main.step(val_loss)
        elif self.main is not None:
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "main": self.main.state_dict() if self.main is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = state["epochs_done"]
        if self.warmup is not None:
            self.warmup.load_state_dict(state["warmup"])
        if self.main is not None:
            self.main.load_state_dict(state["main"])


class EarlyStopping:
    """Stop when val loss has not fallen below the best by more than `min_delta` for `patience` epochs."""

    def __init__(self, p: EarlyStoppingParams) -> None:
        self.patience, self.min_delta = p.patience, p.min_delta
        self.best, self.bad_epochs = math.inf, 0

    def update(self, val_loss: float) -> bool:
        """Record one epoch's val loss; True when training should stop (never, with patience 0)."""
        if val_loss < self.best - self.min_delta:
            self.best, self.bad_epochs = val_loss, 0
        else:  # also a NaN loss: it never counts as an improvement
            self.bad_epochs += 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
