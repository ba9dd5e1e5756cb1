"""What only a GPU can show: the device decision on a real driver, AMP and channels-last learning, and a CUDA run of
train and evaluate whose validation numbers evaluation reproduces. Skipped without a CUDA GPU; run by
benchmarks/gpu_check.py (`pytest -m cuda`). The rest of the suite runs on the CPU wherever it runs (conftest.TINY)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slr.checkpoint import Run
from slr.devices import Build, check_torch_sees, decide
from slr.distributed import Process
from slr.evaluate import evaluate_checkpoint
from slr.inference import Feed
from slr.models import build_model
from slr.params import EvaluateParams
from slr.train import seed_everything, train, train_epoch

from conftest import train_params

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_the_driver_and_torch_agree_on_this_gpu() -> None:
    decision = decide("auto", setting="train.device", amp="fp16")
    assert decision.device == "cuda" and decision.gpus
    check_torch_sees(decision, 1)
    capability = torch.cuda.get_device_capability(0)
    assert Build.of_torch().runs_on(capability)
    assert decision.machine.gpus[0].capability == capability or len(decision.machine.gpus) > 1
    # the honest bf16 check: native from compute capability 8.0 on, as slr.devices.decide refuses below
    assert torch.cuda.is_bf16_supported(including_emulation=False) == (capability >= (8, 0))


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_amp_and_channels_last_learn_on_cuda(amp: str) -> None:
    device = torch.device("cuda")
    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU only emulates bf16")
    p = train_params(amp=amp, channels_last=True, backbone_lr=1e-3, head_lr=1e-3)
    feed = Feed.choose(p.amp, p.channels_last, device, (0.45,) * 3, (0.225,) * 3)
    assert feed.autocast == {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    seed_everything(0)
    model = build_model("R3D_18", num_classes=4, dropout=0.0).to(device).to(memory_format=torch.channels_last_3d)
    run = Run(model, "R3D_18", p, device)
    assert run.scaler.is_enabled() == (amp == "fp16")
    batch = [(torch.randint(0, 256, (8, 8, 32, 32, 3), dtype=torch.uint8), torch.arange(8) % 4)]
    process = Process(0, 1, device)
    losses = [train_epoch(model, batch, [8], 1, run.optimizer, run.scaler, feed, process).loss for _ in range(15)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0] / 2


def test_a_cuda_run_is_evaluated_on_its_gpu_in_its_precision_and_agrees_with_training(
    small_clips: Path, tmp_path: Path
) -> None:
    amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    best = train(small_clips / "clips", tmp_path / "models", tmp_path / "live", model_name="R3D_18", seed=0,
                 p=train_params(epochs=2, batch_size=4, crop_size=16, amp=amp, device="cuda"), device_type="cuda")
    assert best["epoch"] in (1, 2)
    p = EvaluateParams(device="auto", batch_size=5, shuffle_seed=1, sweep_count=4, sweep_seed=0,
                       bootstrap_samples=200, bootstrap_seed=0)
    report = evaluate_checkpoint(tmp_path / "models" / "best.pth", small_clips / "clips", p)
    m = report.metrics
    assert m["device"] == torch.cuda.get_device_name(0) and m["precision"] == amp
    assert m["val_consistent"] is True  # another batch size, cuDNN's kernel choice: within reduced precision's bounds
    assert report.evaluation.provenance["trained"]["device"] == m["device"]
    assert torch.backends.cudnn.benchmark  # evaluation autotunes: 27 orderings of one shape per batch
