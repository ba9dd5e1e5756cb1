"""torchvision video classifiers with a new dropout + linear head, by the names the original project used.

Models come from `torchvision.models.get_model`; each model's normalisation and smallest legal input come from its
torchvision weights entry, so they cannot drift from what the backbone was trained with.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models._api import WeightsEnum

from slr.errors import UserError
from slr.hub import cache_path, load_state

# Our name -> (torchvision builder, attribute holding the classification head).
MODELS: dict[str, tuple[str, str]] = {
    "S3D": ("s3d", "classifier"),
    "R3D_18": ("r3d_18", "fc"),
    "MC3_18": ("mc3_18", "fc"),
    "R(2+1)D_18": ("r2plus1d_18", "fc"),
    "Swin3D_T": ("swin3d_t", "head"),
    "Swin3D_S": ("swin3d_s", "head"),
    "Swin3D_B": ("swin3d_b", "head"),
    "MViTv2_S": ("mvit_v2_s", "head"),
    "MViTv1_B": ("mvit_v1_b", "head"),
}
# The MViTs' positional embeddings are built for one clip shape, so their minimum is also their maximum.
EXACT_INPUT = {"MViTv2_S", "MViTv1_B"}


def _entry(name: str) -> tuple[str, str]:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
    return MODELS[name]


def kinetics_weights(name: str) -> WeightsEnum:
    """The torchvision weights entry the model's normalisation and input limits are read from."""
    builder, _ = _entry(name)
    weights = get_model_weights(builder)
    return weights.KINETICS400_IMAGENET22K_V1 if name == "Swin3D_B" else weights.DEFAULT


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel, as the model's Kinetics-400 weights expect."""
    preset = kinetics_weights(name).transforms()
    return tuple(preset.mean), tuple(preset.std)


def check_input(name: str, num_frames: int, size: int) -> None:
    """Fail up front, with the fix, if `name` cannot take clips of `num_frames` x `size` x `size`."""
    meta = kinetics_weights(name).meta
    min_frames = meta.get("min_temporal_size") or 1
    min_h, min_w = meta["min_size"]
    if name in EXACT_INPUT and (num_frames, size) != (min_frames, min_h):
        raise UserError(
            f"{name} takes exactly {min_frames} frames at {min_h}x{min_w}, got {num_frames} at {size}x{size}"
        )
    if num_frames < min_frames or size < max(min_h, min_w):
        raise UserError(
            f"{name} needs at least {min_frames} frames at {min_h}x{min_w}, got {num_frames} at {size}x{size}; "
            "raise preprocess.num_frames / train.crop_size"
        )


def build_model(name: str, num_classes: int, dropout: float, pretrained: str = "none") -> nn.Module:
    """`name` with a new head, Dropout(dropout) + a layer sized to `num_classes`, on a backbone that is randomly
    initialised (`pretrained` "none"), torchvision's Kinetics-400 weights ("kinetics") or read from a file path."""
    builder, head_attr = _entry(name)
    model = get_model(builder, weights=None)
    if pretrained != "none":
        _load_backbone(model, head_attr, _pretrained_state(name, pretrained), pretrained)
    setattr(model, head_attr, _new_head(getattr(model, head_attr), num_classes, dropout))
    return model


def weights_file(name: str) -> tuple[str, Path]:
    """(url, cache path) of `name`'s Kinetics weights: torch.hub keeps them in $TORCH_HOME/hub/checkpoints."""
    url = kinetics_weights(name).url
    return url, cache_path(url)


def _pretrained_state(name: str, pretrained: str) -> dict[str, torch.Tensor]:
    if pretrained == "kinetics":
        url, _ = weights_file(name)
        return load_state(url, f"the {name} Kinetics weights", "or set train.pretrained to a local weights file")
    path = Path(pretrained)
    if not path.is_file():
        raise UserError(
            f"train.pretrained: weights file {path} not found; use none, kinetics or the path of a weights file"
        )
    try:
        # weights_only: a weights file holds tensors; loading must never run code from it
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for a file that is not a checkpoint; its advice is not ours
        raise UserError(f"train.pretrained: {path} is not a torch weights file (a state dict saved with torch.save, "
                        "or one of this project's checkpoints): damaged, or another format") from None
    # This project's own checkpoints keep the weights under "state_dict" beside their metadata.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"train.pretrained: {path} holds a {type(state).__name__}, not a state dict of the model's "
                        "weights (name -> tensor); save one with torch.save(model.state_dict(), path)")
    return state


def _load_backbone(model: nn.Module, head_attr: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every weight but the classification head's (which is replaced), failing if the backbone does not fit."""
    backbone = {k: v for k, v in state.items() if not k.startswith(f"{head_attr}.")}
    try:
        result = model.load_state_dict(backbone, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise UserError(f"train.pretrained: weights from {source} do not fit this model ({exc})") from None
    missing = [k for k in result.missing_keys if not k.startswith(f"{head_attr}.")]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise UserError(
            f"train.pretrained: weights from {source} do not fit this model "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected keys, e.g. {first!r})"
        )


def head_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The new classification head's parameters (they get their own learning rate)."""
    return list(getattr(model, _entry(name)[1]).parameters())


def _new_head(old: nn.Module, num_classes: int, dropout: float) -> nn.Module:
    last = old[-1] if isinstance(old, nn.Sequential) else old
    if isinstance(last, nn.Conv3d):  # S3D classifies with a 1x1x1 convolution over pooled features
        layer: nn.Module = nn.Conv3d(last.in_channels, num_classes, kernel_size=1, bias=True)
    elif isinstance(last, nn.Linear):
        layer = nn.Linear(last.in_features, num_classes)
    else:  # pragma: no cover - a new torchvision head type must be added here
        raise TypeError(f"unexpected head {type(last).__name__}")
    return nn.Sequential(nn.Dropout(dropout), layer)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

