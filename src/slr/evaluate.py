"""Evaluation of a trained checkpoint: the original project's `full` test (val, test, shuffled test) and the
frame-order study (reversed frames, a sweep of permutations by entropy, and which glosses need frame order).

The test set is read once: every batch is scored under all the study's frame orderings while it is on the device
(`slr.inference.predict`). Everything after that is arithmetic on the scored clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slr.batches import eval_loader
from slr.checkpoint import load_checkpoint
from slr.data.dataset import ClipDataset, load_manifest, manifest_digest
from slr.devices import EVALUATE_CPU_FIX, claimed, configure, environment
from slr.distributed import Process
from slr.errors import UserError
from slr.inference import Feed, predict
from slr.metrics import (
    Scored,
    base_result,
    bootstrap_interval,
    mean_per_class_accuracy,
    per_class_recall,
    per_instance_accuracy,
)
from slr.models import build_model
from slr.params import EvaluateParams
from slr.predictions import Predictions
from slr.shuffle import make_permutation, shannon_entropy, sweep_permutations

STUDY = ("ordered", "shuffled", "reversed")  # the named conditions; the sweep's permutations follow them
DEFAULT_THREADS = 2  # checkpoints from before train.threads existed


def read_checkpoint(path: Path) -> dict:
    """The checkpoint at `path`, weights included, on the CPU (one-line errors for a missing or damaged file)."""
    return load_checkpoint(path, "run `dvc repro train`, or `dvc checkout models/best.pth` to restore yours")


def load_model(checkpoint: dict, device: torch.device) -> nn.Module:
    """Rebuild the model saved in `checkpoint` (whose weights it takes out) on `device`, in eval mode and in the
    memory format training used there (channels-last on CUDA)."""
    model = build_model(checkpoint["model"], checkpoint["num_classes"], checkpoint["dropout"])
    model.load_state_dict(checkpoint.pop("state_dict"))
    model = model.to(device).eval()
    if feed_for(checkpoint, device).channels_last:
        model.to(memory_format=torch.channels_last_3d)
    return model


def threads_of(meta: dict) -> int:
    """The torch threads the checkpoint was trained with (per process), which evaluation on CPU uses too: its
    numbers then depend on the run's params alone, not on the machine's load."""
    return int(meta.get("threads", DEFAULT_THREADS))


def feed_for(meta: dict, device: torch.device) -> Feed:
    """Feed the model as training fed it (checkpoints from before `amp` was recorded ran in fp32)."""
    return Feed.choose(meta.get("amp", "off"), meta.get("channels_last", False), device, meta["mean"], meta["std"])


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint scored on val (ordered) and on test under every ordering of the study."""

    val: Scored
    test: dict[str, Scored]  # "ordered", "shuffled", "reversed", then "sweep 0", "sweep 1", ...
    orderings: dict[str, list[int]]  # the permutation behind each test condition but "ordered"
    missing: dict[str, int]  # per set: videos listed but skipped by preprocessing
    glosses: list[str]
    provenance: dict[str, Any]


def study_orderings(num_frames: int, p: EvaluateParams) -> dict[str, list[int]]:
    """The permutations of the study: the seeded shuffle, reversal, and the sweep from barely to fully shuffled."""
    orderings = {"shuffled": make_permutation(num_frames, p.shuffle_seed),
                 "reversed": list(range(num_frames - 1, -1, -1))}
    for i, perm in enumerate(sweep_permutations(num_frames, p.sweep_count, p.sweep_seed)):
        orderings[f"sweep {i}"] = perm
    return orderings


def evaluate(model: nn.Module, meta: dict, clips_dir: Path, device: torch.device, p: EvaluateParams) -> Evaluation:
    """Score val with ordered frames and test under every ordering of the study, each clip read once."""
    feed, process = feed_for(meta, device), Process(0, 1, device)
    manifest = load_manifest(clips_dir)
    sets = {name: ClipDataset(clips_dir, name, meta["crop_size"], train=False, flip=False, seed=0)
            for name in ("val", "test")}
    orderings = study_orderings(meta["num_frames"], p)
    print(f"evaluate: {meta['model']} on {device.type} ({feed.precision}): val ({len(sets['val'])} clips), then test "
          f"({len(sets['test'])} clips) under {1 + len(orderings)} frame orderings", flush=True)
    val = predict(model, eval_loader(sets["val"], p.batch_size, process), feed, device, desc="val")[0]
    test = predict(model, eval_loader(sets["test"], p.batch_size, process), feed, device,
                   [None, *orderings.values()], desc=f"test x {1 + len(orderings)} orderings")
    provenance = {
        **environment(device, torch.get_num_threads()),
        "precision": feed.precision,
        "copy": (manifest.get("copy") or {}).get("md5"),
        "clips": manifest_digest(clips_dir),
        "trained": meta.get("environment"),
    }
    return Evaluation(val, dict(zip(["ordered", *orderings], test)), orderings,
                      {name: ds.missing for name, ds in sets.items()}, manifest["glosses"], provenance)


def val_consistent(evaluation: Evaluation, meta: dict) -> bool:
    """Whether evaluation reproduced training's best-epoch val numbers on the same data.

    The data must be the very clips training saw (the manifest hash in the checkpoint's fingerprint). On CPU in fp32
    at both ends the numbers must match to float rounding. Under autocast (bf16/fp16), or on a GPU at either end
    (cuDNN picks kernels per batch shape, and Ampere and newer run fp32 convolutions in TF32), batch size and kernel
    choice move logits in the third digit: then accuracy may differ by one clip and the loss by 2%.
    """
    fingerprint = meta.get("fingerprint") or {}
    if fingerprint.get("data") != evaluation.provenance["clips"]:
        return False
    acc = per_instance_accuracy(evaluation.val, (1,))["top1"]
    loss = float(evaluation.val.loss.mean())
    trained_on = (fingerprint.get("placement") or {}).get("device", "cpu")
    reduced = ({evaluation.provenance["precision"], meta.get("precision", "fp32")} != {"fp32"}
               or {evaluation.provenance["device"], trained_on} != {"cpu"})
    acc_tol = 1.0 / max(1, len(evaluation.val.loss)) + 1e-9 if reduced else 1e-9
    loss_tol = (2e-2 if reduced else 1e-4) * max(1.0, meta["val_loss"])
    return abs(acc - meta["val_acc"]) <= acc_tol and abs(loss - meta["val_loss"]) <= loss_tol


def compres(evaluation: Evaluation, meta: dict, consistent: bool) -> dict:
    """The original project's CompRes {check_name, best_val_acc, best_val_loss, test, val, test_shuff}, each result
    its BaseRes plus the videos evaluated and those listed but missing, and `val_consistent`."""
    def result(scored: Scored, set_name: str) -> dict:
        return {**base_result(scored), "num_videos": len(scored.labels), "num_missing": evaluation.missing[set_name]}

    perm = evaluation.orderings["shuffled"]
    return {
        "check_name": "best_val",
        "best_val_acc": meta["val_acc"],
        "best_val_loss": meta["val_loss"],
        "test": result(evaluation.test["ordered"], "test"),
        "val": result(evaluation.val, "val"),
        "test_shuff": {**result(evaluation.test["shuffled"], "test"), "perm": perm,
                       "shannon_entropy": shannon_entropy(perm)},
        "val_consistent": consistent,
    }


def order_study(evaluation: Evaluation) -> dict:
    """Reversed frames, and each sweep permutation with its entropy and top-1/5, summarised per 1-bit band."""
    sweep = [{"perm": evaluation.orderings[name], "entropy": shannon_entropy(evaluation.orderings[name]),
              **per_instance_accuracy(scored, (1, 5))}
             for name, scored in evaluation.test.items() if name.startswith("sweep")]
    return {"reversed": per_instance_accuracy(evaluation.test["reversed"], (1, 5)), "by_entropy": entropy_bands(sweep),
            "sweep": sweep}


def entropy_bands(sweep: list[dict]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of top-1 per 1-bit band of permutation entropy ("0-1", "1-2", ...)."""
    bands: dict[str, list[float]] = {}
    for record in sorted(sweep, key=lambda r: r["entropy"]):
        low = int(record["entropy"])
        bands.setdefault(f"{low}-{low + 1}", []).append(record["top1"])
    return {
        band: {"top1_mean": float(np.mean(accs)), "top1_std": float(np.std(accs)), "count": len(accs)}
        for band, accs in bands.items()
    }


def by_gloss(evaluation: Evaluation) -> list[dict]:
    """Per gloss of the test set: its clips and top-1 recall with frames ordered, shuffled, reversed and averaged
    over the sweep, and the drops from ordered. Glosses in label order."""
    recall = {name: per_class_recall(evaluation.test[name]) for name in STUDY}
    sweeps = [per_class_recall(s) for name, s in evaluation.test.items() if name.startswith("sweep")]
    counts = torch.bincount(evaluation.test["ordered"].labels).tolist()
    records = []
    for label in sorted(recall["ordered"]):
        row = {name: recall[name][label] for name in STUDY}
        row["sweep"] = float(np.mean([s[label] for s in sweeps])) if sweeps else row["ordered"]
        records.append({"gloss": evaluation.glosses[label], "clips": counts[label], **row,
                        **{f"drop_{name}": row["ordered"] - row[name] for name in ("shuffled", "reversed", "sweep")}})
    return records


def per_clip(evaluation: Evaluation, clips_dir: Path) -> Predictions:
    """Each test clip's outcome, in the manifest's order (reports/predictions.json): what a comparison of two runs
    pairs clip by clip."""
    test = evaluation.test
    return Predictions(evaluation.provenance["copy"], evaluation.orderings["shuffled"], evaluation.glosses,
                       load_manifest(clips_dir)["sets"]["test"]["video_ids"], test["ordered"].labels.tolist(),
                       test["ordered"].predicted.tolist(), test["ordered"].hits(5).tolist(),
                       test["shuffled"].predicted.tolist(), test["reversed"].predicted.tolist())


def summary(evaluation: Evaluation, consistent: bool, study: dict, samples: int, seed: int) -> dict:
    """The DVC metrics of an evaluation: what a comparison of runs needs, with 95% bootstrap intervals (paired for
    the drop from ordered to shuffled)."""
    ordered, shuffled = evaluation.test["ordered"], evaluation.test["shuffled"]
    hits = {name: evaluation.test[name].hits(1).numpy() for name in ("ordered", "shuffled")}

    def condition(scored: Scored, name: str) -> dict:
        low, high = bootstrap_interval(hits[name], samples=samples, seed=seed)
        acc = per_instance_accuracy(scored, (1, 5))
        return {**acc, "top1_low": low, "top1_high": high,
                "mean_class_top1": mean_per_class_accuracy(scored, (1,))["top1"]}

    low, high = bootstrap_interval(hits["ordered"], hits["shuffled"], samples=samples, seed=seed)
    sweep = study["sweep"]
    return {
        "ordered": {**condition(ordered, "ordered"), "loss": float(ordered.loss.mean())},
        "shuffled": {**condition(shuffled, "shuffled"), "entropy": shannon_entropy(evaluation.orderings["shuffled"])},
        "reversed": study["reversed"],
        "drop": {"top1": float(hits["ordered"].mean() - hits["shuffled"].mean()), "top1_low": low, "top1_high": high},
        "sweep": {"top1_mean": float(np.mean([r["top1"] for r in sweep])),
                  **{f"top1_{band}_bits": v["top1_mean"] for band, v in study["by_entropy"].items()}},
        "val_consistent": consistent,
        **{key: evaluation.provenance[key] for key in ("device", "precision", "threads", "torch", "cpu", "copy")},
    }


@dataclass(frozen=True)
class Report:
    """Everything the evaluate stage writes, computed once."""

    meta: dict  # the checkpoint's metadata
    evaluation: Evaluation
    metrics: dict  # metrics/eval.json: the comparison's numbers
    compres: dict  # the original project's result shapes
    study: dict  # the order study in full
    by_gloss: list[dict]  # per-gloss order sensitivity


def evaluate_checkpoint(checkpoint: Path, clips_dir: Path, p: EvaluateParams) -> Report:
    """The full test and the order study of `checkpoint` on `clips_dir`, on the device `p.device` picks (auto: a GPU
    that no other run on the machine holds, as training, else as many CPU cores as training had threads)."""
    meta = read_checkpoint(checkpoint)
    with claimed(p.device, threads=threads_of(meta), setting="evaluate.device",
                 cpu_fix=EVALUATE_CPU_FIX) as device:
        configure(device)
        try:
            evaluation = evaluate(load_model(meta, device), meta, clips_dir, device, p)
        except torch.OutOfMemoryError:
            raise UserError(f"out of GPU memory evaluating at evaluate.batch_size {p.batch_size}: lower it (-S "
                            f"evaluate.batch_size={max(1, p.batch_size // 2)})")\
                from None
    consistent = val_consistent(evaluation, meta)
    if not consistent:
        val = per_instance_accuracy(evaluation.val, (1,))["top1"], float(evaluation.val.loss.mean())
        print(f"warning: val top-1/loss {val[0]:.4f}/{val[1]:.4f} here, {meta['val_acc']:.4f}/{meta['val_loss']:.4f} "
              f"in training's best epoch: the clips or the code changed since training (retrain: dvc repro train)")
    study = order_study(evaluation)
    return Report(meta, evaluation, summary(evaluation, consistent, study, p.bootstrap_samples, p.bootstrap_seed),
                  compres(evaluation, meta, consistent), study, by_gloss(evaluation))
