"""Evaluation on a small trained-from-scratch checkpoint: batch-size invariance, views, the order study, slr-test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slr.data.clip import ClipSpec
from slr.data.metadata import load_index
from slr.data.preprocess import preprocess
from slr.data.synthetic import generate
from slr.data.transforms import three_crops
from slr.errors import UserError
from slr.data.dataset import load_set
from slr.evaluate import entropy_bands, full_test, load_model, order_study, predict
from slr.params import SyntheticParams
from slr.train import train

from conftest import train_params

SMALL = SyntheticParams(
    seed=0, pairs=2, signers=3, train_per_class=4, val_per_class=2, test_per_class=3, size=32, fps=25
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/, clips/ (8 frames of 20x20) and models/best.pth of one epoch of R3D_18 on 4 synthetic classes."""
    root = tmp_path_factory.mktemp("evaluate")
    generate(SMALL, root / "raw")
    index = load_index(root / "raw" / "WLASL_v0.3.json").subset("asl100")
    spec = ClipSpec(num_frames=8, frame_size=20, crop="center", bbox_margin=0.0, trim=True)
    preprocess(index, root / "raw" / "videos", root / "clips", spec, workers=1)
    train(root / "clips", root / "models", root / "live", model_name="R3D_18", seed=0,
          p=train_params(epochs=1, batch_size=4, crop_size=16))
    return root


@pytest.mark.parametrize("batch_size", [1, 7])
def test_logits_do_not_depend_on_batch_size(trained: Path, batch_size: int) -> None:
    model, meta = load_model(trained / "models" / "best.pth")
    clips, _, _ = load_set(trained / "clips", "test")
    reference = predict(model, clips, meta, batch_size=len(clips))
    assert torch.allclose(predict(model, clips, meta, batch_size), reference, atol=1e-5)


def test_full_test_reproduces_training_val_numbers(trained: Path) -> None:
    model, meta = load_model(trained / "models" / "best.pth")
    result, predictions = full_test(model, meta, trained / "clips", batch_size=5, shuffle_seed=1)
    assert result["val_consistent"] is True
    assert result["val"]["top_k_per_instance_acc"]["top1"] == meta["val_acc"]
    assert result["test"]["num_videos"] == 12 and result["test"]["num_missing"] == 0
    assert len(predictions["labels"]) == len(predictions["ordered"]) == 12


def test_views_average_probabilities(trained: Path) -> None:
    model, meta = load_model(trained / "models" / "best.pth")
    clips, _, _ = load_set(trained / "clips", "test")
    three = predict(model, clips, meta, 4, spatial_views=3)
    single = [predict(model, np.ascontiguousarray(c), meta, 4) for c in three_crops(np.asarray(clips), 16)]
    expected = torch.stack(single).exp().mean(0).log()  # log of the three crops' mean probability
    assert torch.allclose(three, expected, atol=1e-5)
    assert not torch.allclose(three, single[1], atol=1e-3)
    with pytest.raises(UserError, match="temporal views need clips longer than the model's 8 frames"):
        predict(model, clips, meta, 4, temporal_views=2)


def test_order_study(trained: Path) -> None:
    model, meta = load_model(trained / "models" / "best.pth")
    study = order_study(model, meta, trained / "clips", batch_size=6, count=5, seed=0)
    assert len(study["sweep"]) == 5 and set(study["reversed"]) == {"top1", "top5"}
    assert sum(band["count"] for band in study["by_entropy"].values()) == 5


def test_entropy_bands() -> None:
    sweep = [{"entropy": 0.5, "top1": 1.0}, {"entropy": 3.2, "top1": 0.2}, {"entropy": 3.9, "top1": 0.4}]
    bands = entropy_bands(sweep)
    assert list(bands) == ["0-1", "3-4"]
    assert bands["3-4"] == pytest.approx({"top1_mean": 0.3, "top1_std": 0.1, "count": 2})


def _slr_test(trained: Path, *args: str) -> subprocess.CompletedProcess:
    code = "from slr.partial import cli; cli()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=trained, capture_output=True, text=True, timeout=300)


def test_slr_test_reversed_with_graphs(trained: Path) -> None:
    result = _slr_test(trained, "--checkpoint", "models/best.pth", "--clips", "clips", "--set", "val", "--reverse",
                       "--graphs", "confusion", "heatmap", "--save", "out")
    assert result.returncode == 0, result.stderr
    saved = json.loads((trained / "out" / "result.json").read_text())
    assert saved["perm"] == list(range(7, -1, -1)) and saved["shannon_entropy"] == 0.0
    assert saved["num_videos"] == 8
    assert sorted(p.name for p in (trained / "out").iterdir()) == ["confusion.png", "heatmap.png", "result.json"]


def test_slr_test_multiview_with_more_frames(trained: Path) -> None:
    result = _slr_test(trained, "--checkpoint", "models/best.pth", "--clips", "clips", "--raw", "raw",
                       "--num-frames", "12", "--temporal-views", "2", "--spatial-views", "3")
    assert result.returncode == 0, result.stderr
    protocol = json.loads(result.stdout[: result.stdout.rindex("}") + 1])["protocol"]
    assert protocol == {"num_frames": 12, "frame_size": 20, "crop_size": 16, "temporal_views": 2, "spatial_views": 3}


def test_slr_test_graphs_need_save(trained: Path) -> None:
    result = _slr_test(trained, "--graphs", "bars")
    assert result.returncode == 2 and result.stderr.strip() == "error: --graphs writes PNG files: add --save DIR"
