"""Checks of a whole experiment that need the model zoo or the machine, not only params.yaml's types.

The `check` stage runs them before any other stage: DVC deletes a stage's outputs before running it, so a typo met
by the train stage (`-S model=R3D18`, a crop larger than the frames) would cost the finished run's outputs. The
stages run the same checks again where they use the values, so a stage run by hand is no less safe.
"""

from __future__ import annotations

import torch

from slr.errors import UserError
from slr.models import check_input
from slr.params import Params


def check_recipe(model_name: str, num_frames: int, frame_size: int, crop_size: int) -> None:
    """Fail with one line if `model_name` is unknown or cannot train on `crop_size` crops of clips of `num_frames`
    frames of `frame_size` x `frame_size`."""
    check_input(model_name, num_frames, crop_size)  # an unknown model name fails here too, listing the valid ones
    if crop_size > frame_size:
        raise UserError(f"train.crop_size {crop_size} is larger than preprocess.frame_size {frame_size}; lower the "
                        "crop or raise the frame size")


def check_experiment(params: Params) -> None:
    """Everything about `params` that can be known before the data is read."""
    check_recipe(params.model, params.preprocess.num_frames, params.preprocess.frame_size, params.train.crop_size)
    if params.evaluate.device == "cuda" and not torch.cuda.is_available():
        raise UserError("evaluate.device is cuda but no CUDA GPU is visible; set it to auto or cpu")
