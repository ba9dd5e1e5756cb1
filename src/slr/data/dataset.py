"""The preprocessed clips of one set as a torch Dataset, read in place from the memory-mapped shards."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from slr.data.store import MANIFEST, ClipArray
from slr.data.transforms import center_crop, hflip, random_crop
from slr.errors import UserError
from slr.files import read_json


def load_manifest(clips_dir: Path) -> dict:
    """The preprocess stage's manifest; a clear error if that stage has not run for these clips or it is damaged."""
    path = clips_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"no preprocessed data at {clips_dir} ({MANIFEST} missing); run `dvc repro preprocess` first")
    try:
        manifest = read_json(path)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        manifest = None
    if not isinstance(manifest, dict) or not {"glosses", "sets", "num_frames", "frame_size"} <= set(manifest):
        raise UserError(f"{path} is damaged (not the manifest preprocess writes); restore the clips with "
                        "`dvc checkout data/clips`, or make them again with `dvc repro -f preprocess`")
    return manifest


def manifest_digest(clips_dir: Path) -> str:
    """sha256 of the clips' manifest: names the exact preprocessed data (ids, labels, spec, copy) a run used."""
    return hashlib.sha256((clips_dir / MANIFEST).read_bytes()).hexdigest()


def load_set(clips_dir: Path, set_name: str) -> tuple[ClipArray, torch.Tensor, int]:
    """One set's clips (uint8 (N, T, H, W, C), read in place), labels, and number of videos listed but skipped."""
    manifest = load_manifest(clips_dir)
    if set_name not in manifest["sets"]:
        raise UserError(f"unknown set {set_name!r}; valid: {', '.join(manifest['sets'])}")
    entry = manifest["sets"][set_name]
    size = manifest["frame_size"]
    clips = ClipArray([clips_dir / s["file"] for s in entry["shards"]], [s["rows"] for s in entry["shards"]],
                      (manifest["num_frames"], size, size, 3))
    return clips, torch.tensor(entry["labels"], dtype=torch.int64), len(entry["skipped"])


class ClipDataset(Dataset):
    """Items are (uint8 clip (T, crop, crop, C), label); with `crop_size` None, the whole stored frames (for
    multi-view testing, which crops on the device).

    Training crops and flips are drawn from a generator seeded by (seed, epoch, index), so an epoch's augmentation
    is the same however many loader workers run, and a resumed run sees exactly the crops it would have seen.
    """

    def __init__(self, clips_dir: Path, set_name: str, crop_size: int | None, train: bool, flip: bool,
                 seed: int) -> None:
        self.clips, labels, self.missing = load_set(clips_dir, set_name)  # uint8 (N, T, H, W, C)
        self.labels = labels.tolist()
        if crop_size is not None and crop_size > self.clips.shape[2]:
            raise UserError(
                f"crop size {crop_size} is larger than the stored frame size {self.clips.shape[2]}; "
                "lower train.crop_size or raise preprocess.frame_size"
            )
        self.crop_size, self.train, self.flip, self.seed = crop_size, train, flip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[index]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            clip = random_crop(clip, self.crop_size, rng)
            if self.flip and rng.random() < 0.5:
                clip = hflip(clip)
        elif self.crop_size is not None:
            clip = center_crop(clip, self.crop_size)
        # a copy where needed: the memory-mapped shard is read-only, and torch wants writable, contiguous arrays
        return torch.from_numpy(np.require(clip, requirements=("C", "W"))), self.labels[index]
