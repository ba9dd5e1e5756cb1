"""Every model builds with a new head, takes one training step and one evaluation on the smallest legal clip."""

from __future__ import annotations

import pytest
import torch
import torchvision.models.video

from slr.errors import UserError
from slr.models import MODELS, build_model, check_input, kinetics_weights, normalization


def _smallest_clip(name: str) -> tuple[int, int]:
    meta = kinetics_weights(name).meta
    return max(meta.get("min_temporal_size") or 1, 4), max(*meta["min_size"], 32)


def test_names_map_to_torchvision_video_models() -> None:
    assert {builder for builder, _ in MODELS.values()} == set(torchvision.models.list_models(torchvision.models.video))


@pytest.mark.parametrize("name", list(MODELS))
def test_train_step_and_eval(name: str) -> None:
    frames, size = _smallest_clip(name)
    check_input(name, frames, size)
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, dropout=0.5)
    x, y = torch.randn(2, 3, frames, size, size), torch.tensor([1, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    head = [p for p in model.parameters()][-1].detach().clone()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(head, [p for p in model.parameters()][-1])
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 5)


def test_normalisation_comes_from_each_models_weights() -> None:
    assert normalization("R3D_18") == ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
    assert normalization("S3D")[1] == (0.22803, 0.22145, 0.216989)  # the std, not the mean
    assert normalization("Swin3D_T") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization("MViTv2_S") == ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))


@pytest.mark.parametrize(
    ("name", "frames", "size", "message"),
    [
        ("MViTv2_S", 8, 224, "MViTv2_S takes exactly 16 frames at 224x224, got 8 at 224x224"),
        ("MViTv1_B", 16, 112, "MViTv1_B takes exactly 16 frames at 224x224"),
        ("S3D", 16, 112, "S3D needs at least 14 frames at 224x224, got 16 at 112x112"),
    ],
)
def test_inputs_a_model_cannot_take(name: str, frames: int, size: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_input(name, frames, size)


def test_unknown_model() -> None:
    with pytest.raises(UserError, match="unknown model 'I3D'; valid: S3D, R3D_18"):
        build_model("I3D", 5, 0.5)
