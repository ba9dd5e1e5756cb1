"""The training recipe and loop: accumulation, schedules, early stopping, pretrained weights, resume after kill -9,
and a two-process DDP run (gloo on CPU)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import slr.hub
import slr.models
import slr.train
from slr.distributed import Process
from slr.errors import UserError
from slr.models import build_model, head_parameters, weights_file
from slr.optim import EarlyStopping, Schedule, make_optimizer
from slr.params import EarlyStoppingParams, SchedulerParams
from slr.checkpoint import Run, resume, save_checkpoint
from slr.inference import Feed
from slr.train import accumulation_sizes, rewind_live, seed_epoch, train_epoch

from conftest import REPO, TINY, tiny_params_file, repro_until_epoch_one, sh, train_params

CPU = Process(0, 1, torch.device("cpu"))


def test_accumulation_groups_cover_every_clip_once() -> None:
    assert accumulation_sizes(10, 4, 2) == [8, 8, 2]  # batches of 4, 4, 2; the last group is one short batch
    assert accumulation_sizes(10, 4, 1) == [4, 4, 2]
    assert accumulation_sizes(9, 2, 3) == [6, 6, 6, 3, 3]


def _linear_run(batch_size: int, accumulate: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    clips = torch.randint(0, 256, (10, 2, 4, 4, 3), dtype=torch.uint8)
    labels = torch.randint(0, 3, (10,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(96, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(TensorDataset(clips, labels), batch_size=batch_size)
    sizes = accumulation_sizes(10, batch_size, accumulate)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_epoch(model, loader, sizes, accumulate, optimizer, scaler, Feed((0.5,) * 3, (0.2,) * 3), CPU)
    return model, optimizer


def test_accumulated_small_batches_equal_one_large_batch_and_nothing_leaks() -> None:
    small, optimizer = _linear_run(batch_size=4, accumulate=2)  # steps on clips 0-7, then on the short group 8-9
    large, _ = _linear_run(batch_size=8, accumulate=1)  # steps on clips 0-7, then on 8-9
    for a, b in zip(small.parameters(), large.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(p.grad is None for group in optimizer.param_groups for p in group["params"])


def _schedule(name: str, warmup: int = 0, epochs: int = 6, **kw: float) -> tuple[Schedule, torch.optim.Optimizer]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    p = SchedulerParams(name=name, warmup_epochs=warmup, t0=int(kw.get("t0", 10)), factor=kw.get("factor", 0.5),
                        patience=int(kw.get("patience", 1)))
    return Schedule(optimizer, p, epochs), optimizer


def _lrs(schedule: Schedule, optimizer: torch.optim.Optimizer, losses: list[float]) -> list[float]:
    out = [optimizer.param_groups[0]["lr"]]
    for loss in losses:
        optimizer.step()  # an epoch's updates come before its schedule step
        schedule.step(loss)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_cosine_after_linear_warmup() -> None:
    lrs = _lrs(*_schedule("cosine", warmup=2, epochs=6), [1.0] * 6)
    cosine = [(1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)]
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, *cosine], abs=1e-9)


def test_warm_up_then_warm_restarts_ramps_to_the_base_lr() -> None:
    # CosineAnnealingWarmRestarts resets the lr when built; the warm-up must still start at lr / (warmup + 1)
    assert _lrs(*_schedule("warm_restarts", warmup=2, t0=2), [1.0] * 4) == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5, 1.0])


def test_warm_restarts_and_plateau() -> None:
    assert _lrs(*_schedule("warm_restarts", t0=2), [1.0] * 4) == pytest.approx([1.0, 0.5, 1.0, 0.5, 1.0])
    # plateau (factor 0.5, patience 1) after one warm-up epoch: two epochs without improvement halve the lr
    lrs = _lrs(*_schedule("plateau", warmup=1), [3.0, 2.0, 2.0, 2.0, 2.0])
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5, 0.5])
    assert _lrs(*_schedule("none", warmup=1), [1.0] * 3) == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_schedule_state_round_trip() -> None:
    first, opt1 = _schedule("cosine", warmup=1)
    _lrs(first, opt1, [1.0] * 3)
    second, opt2 = _schedule("cosine", warmup=1)
    opt2.load_state_dict(opt1.state_dict())
    second.load_state_dict(first.state_dict())
    assert _lrs(first, opt1, [1.0] * 3) == _lrs(second, opt2, [1.0] * 3)


def test_early_stopping_waits_patience_epochs_beyond_min_delta() -> None:
    stopper = EarlyStopping(EarlyStoppingParams(patience=2, min_delta=0.1))
    assert [stopper.update(loss) for loss in (1.0, 0.95, 0.5, 0.45, float("nan"))] == [False, False, False, False, True]
    assert not any(EarlyStopping(EarlyStoppingParams(0, 0.0)).update(1.0) for _ in range(5))  # patience 0 = off


def test_backbone_and_head_learn_at_their_own_rates() -> None:
    model = build_model("R3D_18", num_classes=5, dropout=0.5)
    optimizer = make_optimizer(model, "R3D_18", train_params(backbone_lr=1e-4, head_lr=1e-3, weight_decay=1e-3))
    backbone, head = optimizer.param_groups
    assert (backbone["lr"], head["lr"], head["eps"], head["weight_decay"]) == (1e-4, 1e-3, 1e-5, 1e-3)
    assert head["params"] == head_parameters(model, "R3D_18") and [p.shape for p in head["params"]] == [(5, 512), (5,)]
    assert len(backbone["params"]) + 2 == len(list(model.parameters()))


# --- pretrained weights -------------------------------------------------------------------------------------------

@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_kinetics_weights_load_from_the_torch_hub_cache(torch_home: Path) -> None:
    kinetics = torchvision.models.video.r3d_18(weights=None)  # stands in for the real file: same names and shapes
    _, path = weights_file("R3D_18")
    assert path.parent == torch_home / "hub" / "checkpoints" and path.name.startswith("r3d_18-")
    path.parent.mkdir(parents=True)
    torch.save(kinetics.state_dict(), path)
    model = build_model("R3D_18", num_classes=5, dropout=0.5, pretrained="kinetics")
    assert torch.equal(model.stem[0].weight, kinetics.stem[0].weight)
    assert model.fc[1].weight.shape == (5, 512)  # the 400-class Kinetics head is replaced


def test_local_weights_file_may_be_one_of_our_checkpoints(tmp_path: Path) -> None:
    source = build_model("R3D_18", num_classes=100, dropout=0.5)
    torch.save({"model": "R3D_18", "state_dict": source.state_dict()}, tmp_path / "asl100.pth")
    model = build_model("R3D_18", num_classes=10, dropout=0.5, pretrained=str(tmp_path / "asl100.pth"))
    assert torch.equal(model.layer4[1].conv2[0].weight, source.layer4[1].conv2[0].weight)
    with pytest.raises(UserError, match="do not fit this model"):
        build_model("MC3_18", num_classes=10, dropout=0.5, pretrained=str(tmp_path / "asl100.pth"))
    with pytest.raises(UserError, match="weights file .*nope.pth not found; use none, kinetics or the path"):
        build_model("R3D_18", num_classes=10, dropout=0.5, pretrained=str(tmp_path / "nope.pth"))


def test_missing_weights_offline_fail_in_seconds(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch, offline_server: str
) -> None:
    real_url, path = weights_file("R3D_18")
    url = f"{offline_server}/{Path(real_url).name}"
    monkeypatch.setattr(slr.models, "weights_file", lambda name: (url, path))
    monkeypatch.setattr(slr.hub, "DOWNLOAD_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        build_model("R3D_18", num_classes=5, dropout=0.5, pretrained="kinetics")
    assert time.monotonic() - start < 5
    assert f"fetch {url} by hand and put it at {path}" in str(error.value) and "TORCH_HOME" in str(error.value)
    assert not path.exists()


# --- the train stage: resume after kill -9, and DDP ---------------------------------------------------------------


def _train_command(repo: Path, out: Path, params: Path) -> list[str]:
    return [sys.executable, "stages/train.py", str(repo / "data/clips"), str(out / "models"), str(out / "live"),
            "--params", str(params)]


def _run(command: list[str]) -> str:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _results(out: Path) -> dict:
    best = torch.load(out / "models/best.pth", weights_only=True)
    return {
        "metrics": (out / "live/metrics.json").read_text(),
        "curves": {p.name: p.read_text() for p in sorted((out / "live").rglob("*.tsv"))},
        "best_epoch": best["epoch"],
        "best_weights": best["state_dict"],
    }


@pytest.mark.slow
def test_killed_training_resumes_at_the_next_epoch_with_identical_results(repo: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    params = tiny_params_file(tmp_path, epochs=3)
    _run(_train_command(repo, tmp_path / "whole", params))
    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(repo, killed, params), cwd=REPO, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:  # the epoch line is printed once that epoch's checkpoint is on disk
        if line.startswith("epoch 1/3"):
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert torch.load(killed / "models/last.pth", weights_only=True)["epoch"] == 1
    out = _run(_train_command(repo, killed, params))
    assert "resuming this run from" in out and "after epoch 1" in out
    assert "epoch 1/3" not in out and "epoch 2/3" in out and "epoch 3/3" in out
    whole, resumed = _results(tmp_path / "whole"), _results(killed)
    assert resumed["curves"] == whole["curves"] and resumed["metrics"] == whole["metrics"]
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert all(torch.equal(resumed["best_weights"][k], v) for k, v in whole["best_weights"].items())
    # a finished run is not continued: another run of the same params trains from scratch
    last = torch.load(killed / "models/last.pth", weights_only=True)
    model = build_model("R3D_18", num_classes=4, dropout=0.2)
    run = Run(model, "R3D_18", train_params(**{**TINY["train"], "epochs": 3}), torch.device("cpu"))
    assert not resume(run, killed / "models", last["fingerprint"], CPU) and run.epoch == 0
    assert "finished run of these params; training again from scratch" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_dvc_repro_resumes_from_the_persisted_checkpoint(repo: Path, tmp_path: Path) -> None:
    root, process = repro_until_epoch_one(repo, tmp_path / "repo", stderr=subprocess.DEVNULL)
    os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage it runs
    process.wait()
    out = sh(root, "dvc", "repro")
    assert "resuming this run from models/last.pth after epoch 1" in out  # persist: DVC kept it
    assert "epoch 1/3:" not in out and "epoch 2/3:" in out and "epoch 3/3:" in out
    curve = (root / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in curve] == ["step", "0", "1", "2"]  # history continued, not restarted
    assert "up to date" in sh(root, "dvc", "status", "dvc.yaml")


@pytest.mark.slow
def test_checkpoint_of_other_params_is_not_resumed(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = tiny_params_file(tmp_path, epochs=2)
    _run(_train_command(repo, out, first))
    last = torch.load(out / "models/last.pth", weights_only=True)
    last["epoch"], last["stopped"] = 1, False  # as if killed after epoch 1
    torch.save(last, out / "models/last.pth")
    log = _run(_train_command(repo, out, tiny_params_file(tmp_path, epochs=2, head_lr=0.001)))
    assert "is from a run with other params (train.head_lr); starting fresh" in log and "epoch 1/2" in log


def test_rewinding_dvclive_history_drops_rows_of_unfinished_epochs(tmp_path: Path) -> None:
    tsv = tmp_path / "plots/metrics/train/loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n0\t2.0\n1\t1.5\n2\t1.2\n")
    rewind_live(tmp_path, 2)
    assert tsv.read_text() == "step\tloss\n0\t2.0\n1\t1.5\n"


@pytest.mark.slow
def test_two_process_ddp_run_has_one_writer(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    log = _run(_train_command(repo, out, tiny_params_file(tmp_path, epochs=2, nproc_per_node=2, threads=1)))
    assert "launching 2 processes" in log and "effective batch 8 on 2 x cpu" in log
    assert log.count("epoch 1/2") == 1 and log.count("epoch 2/2") == 1  # rank 0 alone logs
    metrics = json.loads((out / "live/metrics.json").read_text())
    single = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert metrics.keys() == single.keys() and metrics["train"].keys() == single["train"].keys()
    assert len((out / "live/plots/metrics/val/loss.tsv").read_text().splitlines()) == 3  # header + 2 epochs
    assert torch.load(out / "models/last.pth", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("nproc", [1, 2])
def test_batch_larger_than_the_training_set(repo: Path, tmp_path: Path, nproc: int) -> None:
    params = tiny_params_file(tmp_path, batch_size=500, nproc_per_node=nproc, threads=1)
    result = subprocess.run(_train_command(repo, tmp_path, params), cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: train.batch_size 500 is larger than the training set (24 clips)"]  # once, not per rank
    assert "Traceback" not in result.stderr


# --- GPU-run hazards, reproduced on the CPU -----------------------------------------------------------------------

class _Overflowing(nn.Module):
    """A linear model whose output overflows to inf on the batches it is told (as fp16 does past 65,504)."""

    def __init__(self, overflow_on: set[int]) -> None:
        super().__init__()
        self.linear, self.overflow_on, self.calls = nn.Linear(96, 3), overflow_on, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        self.calls += 1
        return out * torch.inf if self.calls - 1 in self.overflow_on else out


def test_an_fp16_overflow_that_gradscaler_skipped_does_not_end_the_run() -> None:
    torch.manual_seed(0)
    clips = torch.randint(0, 256, (12, 2, 4, 4, 3), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(clips, torch.randint(0, 3, (12,))), batch_size=4)
    model = _Overflowing({1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)  # fp16's scaler: skips a step whose gradients overflow
    scores = train_epoch(model, loader, [4, 4, 4], 1, optimizer, scaler, Feed((0.5,) * 3, (0.2,) * 3), CPU)
    assert scores.overflowed == 1 and math.isfinite(scores.loss) and scores.acc <= 1
    assert scaler.get_scale() == 2.0**15  # lowered once, for the one overflow
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the other two steps happened


def test_processes_draw_their_own_dropout_and_a_resumed_epoch_draws_it_again() -> None:
    def mask(rank: int, epoch: int) -> torch.Tensor:
        seed_epoch(0, rank, epoch)
        return nn.functional.dropout(torch.ones(1000), 0.5)

    assert torch.equal(mask(0, 2), mask(0, 2))  # a resumed epoch: no RNG state to save
    assert not torch.equal(mask(0, 2), mask(1, 2))  # another process of the same epoch
    assert not torch.equal(mask(0, 2), mask(0, 3))


def test_loader_workers_share_this_machines_cores_between_its_processes_only() -> None:
    cores = len(os.sched_getaffinity(0))
    gpu = torch.device("cuda", 0)  # only the device's type is read
    assert Process(3, 16, gpu, local_world_size=2).loader_workers == max(1, min(8, cores // 2))
    assert Process(0, 16, gpu, local_world_size=16).loader_workers == max(1, min(8, cores // 16))
    assert Process(0, 1, CPU.device).loader_workers == 0


def test_normalisation_constants_reach_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = Feed((0.45, 0.4, 0.35), (0.22, 0.21, 0.2))
    clips = torch.randint(0, 256, (2, 4, 8, 8, 3), dtype=torch.uint8)
    first = feed.inputs(clips, CPU.device)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    assert torch.equal(feed.inputs(clips, CPU.device), first) and made == []  # on a GPU each would be a blocking copy


def test_out_of_gpu_memory_is_one_line_with_the_fix(repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(slr.train, "fit", out_of_memory)
    with pytest.raises(UserError) as error:
        slr.train.train(repo / "data/clips", tmp_path / "models", tmp_path / "live", model_name="R3D_18", seed=0,
                        p=train_params(**{**TINY["train"], "batch_size": 4, "accumulate": 2}), device_type="cpu")
    assert str(error.value) == ("out of GPU memory training R3D_18 at train.batch_size 4: halve train.batch_size and "
                                "double train.accumulate (-S train.batch_size=2 -S train.accumulate=4: the effective "
                                "batch stays 8)")


def _checkpoints(folder: Path, placement: dict, epochs_done: int = 1) -> dict:
    """models/best.pth and last.pth of a tiny run with `placement`, killed after `epochs_done` epochs."""
    p = train_params(epochs=3)
    model = nn.Linear(2, 2)
    fingerprint = {"model": "R3D_18", "seed": 0, "train": dataclasses.asdict(p), "data": "d", "placement": placement}
    meta = {"model": "R3D_18", "num_classes": 2, "dropout": 0.0, "num_frames": 8, "frame_size": 20, "crop_size": 16,
            "mean": [0.5] * 3, "std": [0.2] * 3, "fingerprint": fingerprint}
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "best.pth", {**meta, "epoch": 1, "state_dict": model.state_dict()})
    save_checkpoint(folder / "last.pth", {**meta, "epoch": epochs_done, "stopped": False,
                                          "state_dict": model.state_dict()})
    return fingerprint


def test_resuming_on_another_device_precision_or_world_size_is_one_line(tmp_path: Path) -> None:
    fingerprint = _checkpoints(tmp_path, {"device": "cpu", "precision": "fp32", "world_size": 1})
    here = {**fingerprint, "placement": {"device": "cuda", "precision": "fp16", "world_size": 2}}
    run = Run(build_model("R3D_18", num_classes=2, dropout=0.0), "R3D_18", train_params(epochs=3), CPU.device)
    with pytest.raises(UserError) as error:
        resume(run, tmp_path, here, CPU)
    assert str(error.value) == (
        f"{tmp_path}/last.pth holds 1 of 3 epochs of this run trained on 1 x cpu in fp32, but this run is on 2 x cuda "
        "in fp16: continue it where it was trained (train.device, train.nproc_per_node or the torchrun nodes), or "
        f"delete {tmp_path}/last.pth to train it from scratch here")
    assert run.epoch == 0
