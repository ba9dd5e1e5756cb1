"""torchvision video classifiers with a new dropout + linear head, by the names the original project used.

Models come from `torchvision.models.get_model`; each model's normalisation and smallest legal input come from its
torchvision weights entry, so they cannot drift from what the backbone was trained with.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import get_model, get_model_weights
from torchvision.models._api import WeightsEnum

from slr.errors import UserError

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


def build_model(name: str, num_classes: int, dropout: float) -> nn.Module:
    """A randomly initialised `name` whose head is Dropout(dropout) + a layer sized to `num_classes`."""
    builder, head_attr = _entry(name)
    model = get_model(builder, weights=None)
    setattr(model, head_attr, _new_head(getattr(model, head_attr), num_classes, dropout))
    return model


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

