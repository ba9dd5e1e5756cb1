"""params.yaml as frozen, typed dataclasses, validated once with one-line errors.

Every stage loads the whole file through :func:`load_params`, so a typo anywhere (an unknown key, a value of the
wrong type) stops the pipeline at its first stage instead of after an hour of training.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from slr.errors import UserError

SPLITS: dict[str, int] = {"asl100": 100, "asl300": 300, "asl1000": 1000, "asl2000": 2000}
SOURCES: tuple[str, ...] = ("synthetic",)
CROPS: tuple[str, ...] = ("bbox", "center", "none")

# YAML 1.2 (what DVC's `-S` writes and reads) parses 1e-3 as a float; PyYAML (YAML 1.1) returns a string.
_YAML12_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class SyntheticParams:
    """The embedded synthetic WLASL: `pairs` pairs of signs that differ only in frame order."""

    seed: int
    pairs: int
    signers: int
    train_per_class: int
    val_per_class: int
    test_per_class: int
    size: int  # frame width and height in pixels
    fps: int

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "data.synthetic.seed", "zero or positive", self.seed)


@dataclass(frozen=True)
class DataParams:
    source: str
    split: str
    synthetic: SyntheticParams

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UserError(f"params.yaml: unknown data.source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.split not in SPLITS:
            raise UserError(f"params.yaml: unknown data.split {self.split!r}; valid: {', '.join(SPLITS)}")


@dataclass(frozen=True)
class PreprocessParams:
    num_frames: int
    frame_size: int  # stored clips are frame_size x frame_size
    crop: str  # one of CROPS: the signer's box (plus bbox_margin), the centre square, or the whole frame padded
    bbox_margin: float  # fraction of the box's size added on each side
    drop_cross_split_duplicates: bool  # leave out val/test copies of clips that also stand in an earlier set
    max_missing: float  # the stage fails if more than this fraction of a set is missing or unreadable

    def __post_init__(self) -> None:
        _require(self.num_frames >= 2, "preprocess.num_frames", "at least 2 (frame order needs two)", self.num_frames)
        _require(self.frame_size >= 8, "preprocess.frame_size", "at least 8", self.frame_size)
        _require(self.crop in CROPS, "preprocess.crop", f"one of {', '.join(CROPS)}", self.crop)
        _require(self.bbox_margin >= 0, "preprocess.bbox_margin", "zero or positive", self.bbox_margin)
        _require(0 <= self.max_missing <= 1, "preprocess.max_missing", "in [0, 1]", self.max_missing)


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    dropout: float
    crop_size: int  # random crop (train) / centre crop (eval) taken from the stored frame_size
    hflip: bool  # a flip mirrors the signing hand: off by default

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "at least 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", "at least 1", self.batch_size)
        _require(self.lr > 0, "train.lr", "positive", self.lr)
        _require(self.weight_decay >= 0, "train.weight_decay", "zero or positive", self.weight_decay)
        _require(0 <= self.dropout < 1, "train.dropout", "in [0, 1)", self.dropout)
        _require(self.crop_size >= 1, "train.crop_size", "at least 1", self.crop_size)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int
    shuffle_seed: int  # seeds the one frame permutation of the shuffled test
    sweep_count: int  # permutations in the order study, from barely to fully shuffled
    sweep_seed: int

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "evaluate.batch_size", "at least 1", self.batch_size)
        _require(self.shuffle_seed >= 0, "evaluate.shuffle_seed", "zero or positive", self.shuffle_seed)
        _require(self.sweep_seed >= 0, "evaluate.sweep_seed", "zero or positive", self.sweep_seed)
        _require(self.sweep_count >= 1, "evaluate.sweep_count", "at least 1", self.sweep_count)


@dataclass(frozen=True)
class Params:
    seed: int
    model: str
    data: DataParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "seed", "zero or positive", self.seed)


T = TypeVar("T")


def _require(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise UserError(f"params.yaml: {key} must be {rule}, got {value!r}")


def load_params(path: str | Path) -> Params:
    """Read and validate params.yaml; raise UserError naming the bad key and the fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_dict(Params, raw, prefix="")


def from_dict(cls: type[T], raw: Any, prefix: str) -> T:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: {where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"params.yaml: unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(fields)}")
    missing = [name for name in fields if name not in raw]
    if missing:
        raise UserError(f"params.yaml: missing key {prefix}{missing[0]}; add it (see README, params reference)")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], raw[name], prefix + name) for name in fields}
    return cls(**values)


def _coerce(kind: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, key + ".")
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, str) and _YAML12_FLOAT.match(value):
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a new field type must be added here
        raise TypeError(f"unsupported params field type {kind!r} for {key}")
    if not ok:
        raise UserError(f"params.yaml: {key} must be {_NAMES[kind]}, got {value!r} ({type(value).__name__})")
    return value


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
