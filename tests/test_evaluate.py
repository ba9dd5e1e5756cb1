"""Evaluation on a small trained-from-scratch checkpoint: one inference path, one read per clip, batch-size
invariance, views, val consistency, the order study per gloss, and slr-test."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slr.batches import eval_loader
from slr.data.dataset import ClipDataset
from slr.data.transforms import three_crops
from slr.distributed import Process
from slr.errors import UserError
from slr.evaluate import (
    entropy_bands,
    evaluate,
    evaluate_checkpoint,
    feed_for,
    load_model,
    read_checkpoint,
    val_consistent,
)
from slr.inference import Feed, Views, predict
from slr.params import EvaluateParams
from slr.train import train

from conftest import train_params

CPU = torch.device("cpu")
P = EvaluateParams(device="cpu", batch_size=5, shuffle_seed=1, sweep_count=4, sweep_seed=0, bootstrap_samples=200,
                   bootstrap_seed=0)


@pytest.fixture(scope="module")
def trained(small_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/, clips/ (conftest.small_clips) and models/best.pth of one epoch of R3D_18 on the CPU."""
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("raw", "clips"):
        (root / name).symlink_to(small_clips / name)
    train(root / "clips", root / "models", root / "live", model_name="R3D_18", seed=0,
          p=train_params(epochs=1, batch_size=4, crop_size=16), device_type="cpu")
    return root


def _load(root: Path) -> tuple[torch.nn.Module, dict]:
    """The trained model on the CPU, and its checkpoint's metadata."""
    meta = read_checkpoint(root / "models" / "best.pth")
    return load_model(meta, CPU), meta


def _test_batches(root: Path, batch_size: int, crop: int | None = 16) -> torch.utils.data.DataLoader:
    dataset = ClipDataset(root / "clips", "test", crop, train=False, flip=False, seed=0)
    return eval_loader(dataset, batch_size, Process(0, 1, CPU))


@pytest.mark.parametrize("batch_size", [1, 7])
def test_scores_do_not_depend_on_batch_size(trained: Path, batch_size: int) -> None:
    model, meta = _load(trained)
    feed = feed_for(meta, CPU)
    reference = predict(model, _test_batches(trained, 12), feed, CPU)[0]
    scored = predict(model, _test_batches(trained, batch_size), feed, CPU)[0]
    assert torch.equal(scored.topk, reference.topk) and torch.allclose(scored.loss, reference.loss, atol=1e-5)


class _CountingDataset(torch.utils.data.Dataset):
    def __init__(self, inner: ClipDataset) -> None:
        self.inner, self.reads = inner, [0] * len(inner)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):  # noqa: ANN204
        self.reads[index] += 1
        return self.inner[index]


def test_all_orderings_come_from_one_read_of_each_clip(trained: Path) -> None:
    model, meta = _load(trained)
    feed = feed_for(meta, CPU)
    counting = _CountingDataset(ClipDataset(trained / "clips", "test", 16, train=False, flip=False, seed=0))
    perm, reverse = [3, 1, 7, 0, 2, 6, 4, 5], list(range(7, -1, -1))
    together = predict(model, eval_loader(counting, 5, Process(0, 1, CPU)), feed, CPU, [None, perm, reverse])
    assert counting.reads == [1] * len(counting)
    for order, scored in zip([None, perm, reverse], together):
        alone = predict(model, _test_batches(trained, 5), feed, CPU, [order])[0]
        assert torch.equal(scored.topk, alone.topk) and torch.allclose(scored.loss, alone.loss)
    assert not torch.allclose(together[0].loss, together[2].loss)  # reversing frames changes the scores


def test_views_average_probabilities(trained: Path) -> None:
    model, meta = _load(trained)
    feed = feed_for(meta, CPU)
    three = predict(model, _test_batches(trained, 4, crop=None), feed, CPU, views=Views(1, 3, 8, 16))[0]
    clips, labels = next(iter(_test_batches(trained, 12, crop=None)))
    singles = [model(feed.inputs(view, CPU)).log_softmax(1) for view in three_crops(clips, 16)]
    expected = torch.stack(singles).exp().mean(0).log()  # log of the three crops' mean probability
    assert torch.allclose(-expected.gather(1, labels[:, None]).squeeze(1).double(), three.loss, atol=1e-5)
    with pytest.raises(UserError, match="temporal views need clips longer than the model's 8 frames"):
        predict(model, _test_batches(trained, 4, crop=None), feed, CPU, views=Views(2, 1, 8, 16))


def test_val_is_consistent_with_training_in_fp32_and_under_a_bf16_rerun(trained: Path) -> None:
    model, meta = _load(trained)
    evaluation = evaluate(model, meta, trained / "clips", CPU, P)
    assert val_consistent(evaluation, meta)
    # A GPU rerun in bf16 moves the logits a little; on the CPU, autocast to bf16 does the same.
    bf16 = Feed(tuple(meta["mean"]), tuple(meta["std"]), torch.bfloat16)
    scored = predict(model, eval_loader(ClipDataset(trained / "clips", "val", 16, False, False, 0), 5,
                                        Process(0, 1, CPU)), bf16, CPU)[0]
    assert not torch.equal(scored.loss, evaluation.val.loss)
    rerun = dataclasses.replace(evaluation, val=scored, provenance={**evaluation.provenance, "precision": "bf16"})
    assert val_consistent(rerun, meta)


def test_val_is_inconsistent_on_other_data_or_other_numbers(trained: Path) -> None:
    model, meta = _load(trained)
    evaluation = evaluate(model, meta, trained / "clips", CPU, P)
    other_data = dataclasses.replace(evaluation, provenance={**evaluation.provenance, "clips": "0" * 64})
    assert not val_consistent(other_data, meta)
    off_loss = {**meta, "val_loss": meta["val_loss"] * 1.01}  # beyond fp32 rounding, within bf16's tolerance
    assert not val_consistent(evaluation, off_loss)
    bf16 = dataclasses.replace(evaluation, provenance={**evaluation.provenance, "precision": "bf16"})
    assert val_consistent(bf16, off_loss)
    assert not val_consistent(bf16, {**meta, "val_loss": meta["val_loss"] * 1.2})
    # fp32 on a GPU at either end: cuDNN's kernel choice and TF32 convolutions move the numbers as bf16 does
    gpu = dataclasses.replace(evaluation, provenance={**evaluation.provenance, "device": "NVIDIA A100-SXM4-40GB"})
    assert val_consistent(gpu, off_loss)
    trained_on_gpu = {**off_loss, "fingerprint": {**meta["fingerprint"], "placement": {
        **meta["fingerprint"]["placement"], "device": "cuda"}}}
    assert val_consistent(evaluation, trained_on_gpu)


def test_evaluation_computes_with_the_threads_training_had(trained: Path, tmp_path: Path) -> None:
    checkpoint = read_checkpoint(trained / "models" / "best.pth")
    torch.save({**checkpoint, "threads": 1}, tmp_path / "one-thread.pth")
    assert evaluate_checkpoint(tmp_path / "one-thread.pth", trained / "clips", P).metrics["threads"] == 1


def test_full_evaluation_report(trained: Path) -> None:
    report = evaluate_checkpoint(trained / "models" / "best.pth", trained / "clips", P)
    m = report.metrics
    assert set(m) == {"ordered", "shuffled", "reversed", "drop", "sweep", "val_consistent", "device", "precision",
                      "threads", "torch", "cpu", "copy"}
    # what the numbers depend on beyond params and data: torch build, device, threads (training's), kind of CPU
    assert (m["device"], m["precision"], m["threads"], m["val_consistent"]) == ("cpu", "fp32", 2, True)
    assert m["torch"] == torch.__version__ and f"({torch.backends.cpu.get_cpu_capability()})" in m["cpu"]
    assert report.evaluation.provenance["trained"]["threads"] == 2
    for name in ("ordered", "shuffled"):
        assert m[name]["top1_low"] <= m[name]["top1"] <= m[name]["top1_high"]
    assert m["drop"]["top1"] == pytest.approx(m["ordered"]["top1"] - m["shuffled"]["top1"])
    assert m["drop"]["top1_low"] <= m["drop"]["top1"] <= m["drop"]["top1_high"]
    assert report.compres["test"]["num_videos"] == 12 and report.compres["val"]["num_videos"] == 8
    assert report.compres["test_shuff"]["perm"] == report.evaluation.orderings["shuffled"]
    assert len(report.study["sweep"]) == 4 and sum(b["count"] for b in report.study["by_entropy"].values()) == 4
    # per gloss: the 4 glosses, 3 test clips each, recalls that average back to the set's top-1 (equal supports)
    assert [r["gloss"] for r in report.by_gloss] == ["up", "down", "come", "go"]
    assert all(r["clips"] == 3 for r in report.by_gloss)
    assert np.mean([r["ordered"] for r in report.by_gloss]) == pytest.approx(m["ordered"]["top1"])
    assert np.mean([r["reversed"] for r in report.by_gloss]) == pytest.approx(m["reversed"]["top1"])
    assert all(r["drop_reversed"] == pytest.approx(r["ordered"] - r["reversed"]) for r in report.by_gloss)
    again = evaluate_checkpoint(trained / "models" / "best.pth", trained / "clips", P)
    assert json.dumps(again.metrics) == json.dumps(m)  # seeded: the file repeats


def test_entropy_bands() -> None:
    sweep = [{"entropy": 0.5, "top1": 1.0}, {"entropy": 3.2, "top1": 0.2}, {"entropy": 3.9, "top1": 0.4}]
    bands = entropy_bands(sweep)
    assert list(bands) == ["0-1", "3-4"]
    assert bands["3-4"] == pytest.approx({"top1_mean": 0.3, "top1_std": 0.1, "count": 2})


def test_missing_device_is_one_line(trained: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UserError, match="evaluate.device is cuda but no CUDA GPU is visible"):
        evaluate_checkpoint(trained / "models" / "best.pth", trained / "clips", dataclasses.replace(P, device="cuda"))


def _slr_test(trained: Path, *args: str) -> subprocess.CompletedProcess:
    """`slr-test ARGS` on the CPU (as the rest of this module, also where a GPU is visible)."""
    code = "from slr.partial import cli; cli()"
    return subprocess.run([sys.executable, "-c", code, "--device", "cpu", *args], cwd=trained, capture_output=True,
                          text=True, timeout=300)


def test_slr_test_reversed_with_graphs(trained: Path) -> None:
    result = _slr_test(trained, "--checkpoint", "models/best.pth", "--clips", "clips", "--set", "val", "--reverse",
                       "--graphs", "confusion", "bars", "--save", "out")
    assert result.returncode == 0, result.stderr
    saved = json.loads((trained / "out" / "result.json").read_text())
    assert saved["perm"] == list(range(7, -1, -1)) and saved["shannon_entropy"] == 0.0
    assert saved["num_videos"] == 8 and saved["provenance"]["device"] == "cpu"
    assert sorted(p.name for p in (trained / "out").iterdir()) == ["bars.png", "confusion.png", "result.json"]
    printed = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert printed["average_loss"] == round(saved["average_loss"], 4)  # printed rounded, saved in full


def test_slr_test_multiview_with_more_frames(trained: Path) -> None:
    result = _slr_test(trained, "--checkpoint", "models/best.pth", "--clips", "clips", "--raw", "raw",
                       "--num-frames", "12", "--temporal-views", "2", "--spatial-views", "3")
    assert result.returncode == 0, result.stderr
    protocol = json.loads(result.stdout[: result.stdout.rindex("}") + 1])["protocol"]
    assert protocol == {"num_frames": 12, "frame_size": 20, "crop_size": 16, "temporal_views": 2, "spatial_views": 3}


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_slr_test_threads_below_one_is_one_line(trained: Path, threads: str) -> None:
    """Not a wait for ever for -1 free cores, nor 0 taken as "the checkpoint's"."""
    result = _slr_test(trained, "--checkpoint", "models/best.pth", "--clips", "clips", "--threads", threads)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"error: {threads} torch threads per process: it takes at least 1 (train.threads; slr-test: --threads)")


def test_slr_test_graphs_need_save(trained: Path) -> None:
    result = _slr_test(trained, "--graphs", "bars")
    assert result.returncode == 2 and result.stderr.strip() == "error: --graphs writes PNG files: add --save DIR"
