"""params.yaml as frozen, typed dataclasses, validated once with one-line errors.

Every stage loads the whole file through :func:`load_params`, so a typo anywhere (an unknown key, a value of the
wrong type) stops the pipeline at its first stage instead of after an hour of training.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from slr.errors import UserError

SPLITS: dict[str, int] = {"asl100": 100, "asl300": 300, "asl1000": 1000, "asl2000": 2000}
SOURCES: tuple[str, ...] = ("synthetic", "release", "local")
CROPS: tuple[str, ...] = ("bbox", "person", "center", "none")

# YAML 1.2 (what DVC's `-S` writes and reads) parses 1e-3 as a float; PyYAML (YAML 1.1) returns a string.
_YAML12_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class SyntheticParams:
    """The embedded synthetic WLASL: `pairs` pairs of signs that differ only in frame order."""

    seed: int
    pairs: int  # 1..1000 (slr.data.synthetic.MAX_PAIRS): asl100 to asl2000 take the first 50 to 1,000 pairs
    signers: int
    train_per_class: int
    val_per_class: int
    test_per_class: int
    video_size: int  # frame width and height in pixels (not `size`: DVC leaves keys named size out of its run cache)
    fps: int

    def __post_init__(self) -> None:
        _require(self.seed >= 0, "data.synthetic.seed", "zero or positive", self.seed)


@dataclass(frozen=True)
class ReleaseParams:
    """The original project's prepared archives, each with URLs tried in order (its GitHub release first, then the
    Google Drive links); an empty sha256 is computed on first download and reported."""

    splits_urls: tuple[str, ...]  # zip of per-split JSON files in WLASL_v0.3 format (asl100.json ... asl2000.json)
    splits_sha256: str
    videos_urls: tuple[str, ...]  # zip of pre-cut <video_id>.mp4 clips (WLASL2000.zip)
    videos_sha256: str

    def __post_init__(self) -> None:
        for name in ("splits", "videos"):
            urls, sha256 = getattr(self, f"{name}_urls"), getattr(self, f"{name}_sha256")
            key = f"data.release.{name}_urls"
            _require(len(urls) > 0, key, "a list of one or more http(s) URLs, tried in order", list(urls))
            for k, url in enumerate(urls):
                _require(url.startswith(("http://", "https://")), f"{key}[{k}]", "an http(s) URL", url)
            _require(len(set(urls)) == len(urls), key, "a list of distinct URLs", list(urls))
            _require(
                sha256 == "" or _SHA256.match(sha256) is not None,
                f"data.release.{name}_sha256",
                "empty (computed on first download) or 64 hex digits",
                sha256,
            )


@dataclass(frozen=True)
class LocalParams:
    """A WLASL copy already on disk: videos + WLASL_v0.3.json, or the release archives placed there by hand."""

    path: str

    def __post_init__(self) -> None:
        _require(self.path.strip() != "", "data.local.path", "a folder (e.g. data/wlasl)", self.path)


@dataclass(frozen=True)
class DataParams:
    source: str
    split: str
    synthetic: SyntheticParams
    release: ReleaseParams
    local: LocalParams

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UserError(f"params.yaml: unknown data.source {self.source!r}; valid: {', '.join(SOURCES)}")
        if self.split not in SPLITS:
            raise UserError(f"params.yaml: unknown data.split {self.split!r}; valid: {', '.join(SPLITS)}")


@dataclass(frozen=True)
class PreprocessParams:
    num_frames: int
    frame_size: int  # stored clips are frame_size x frame_size
    crop: str  # one of CROPS: the signer's box from the index or found by a person detector (plus bbox_margin),
    # the centre square, or the whole frame padded
    bbox_margin: float  # fraction of the box's size added on each side (crop bbox or person)
    drop_cross_split_duplicates: bool  # leave out val/test copies of clips that also stand in an earlier set
    max_missing: float  # the stage fails if more than this fraction of a set is missing or unreadable

    def __post_init__(self) -> None:
        _require(self.num_frames >= 2, "preprocess.num_frames", "at least 2 (frame order needs two)", self.num_frames)
        _require(self.frame_size >= 8, "preprocess.frame_size", "at least 8", self.frame_size)
        _require(self.crop in CROPS, "preprocess.crop", f"one of {', '.join(CROPS)}", self.crop)
        _require(self.bbox_margin >= 0, "preprocess.bbox_margin", "zero or positive", self.bbox_margin)
        _require(0 <= self.max_missing <= 1, "preprocess.max_missing", "in [0, 1]", self.max_missing)


SCHEDULERS: tuple[str, ...] = ("none", "cosine", "warm_restarts", "plateau")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
AMP_MODES: tuple[str, ...] = ("bf16", "fp16", "off")


@dataclass(frozen=True)
class SchedulerParams:
    """Learning-rate schedule, stepped once per epoch after an optional linear warm-up."""

    name: str  # one of SCHEDULERS
    warmup_epochs: int  # linear warm-up from lr/(warmup_epochs+1) to lr; 0 = none
    t0: int  # warm_restarts: epochs in the first cosine cycle
    factor: float  # plateau: lr multiplier when val loss stops improving
    patience: int  # plateau: epochs without improvement before the lr is cut

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise UserError(
                f"params.yaml: unknown train.scheduler.name {self.name!r}; valid: {', '.join(SCHEDULERS)}"
            )
        _require(self.warmup_epochs >= 0, "train.scheduler.warmup_epochs", "zero or positive", self.warmup_epochs)
        _require(self.t0 >= 1, "train.scheduler.t0", "at least 1", self.t0)
        _require(0 < self.factor < 1, "train.scheduler.factor", "in (0, 1)", self.factor)
        _require(self.patience >= 0, "train.scheduler.patience", "zero or positive", self.patience)


@dataclass(frozen=True)
class EarlyStoppingParams:
    """Stop when val loss has not improved by more than `min_delta` for `patience` epochs (patience 0 = off)."""

    patience: int
    min_delta: float

    def __post_init__(self) -> None:
        _require(self.patience >= 0, "train.early_stopping.patience", "zero (off) or positive", self.patience)
        _require(self.min_delta >= 0, "train.early_stopping.min_delta", "zero or positive", self.min_delta)


@dataclass(frozen=True)
class TrainParams:
    pretrained: str  # "none", "kinetics" (torchvision's Kinetics-400 weights) or a path to a weights file
    epochs: int  # the most epochs; early stopping may end sooner
    batch_size: int  # clips per forward pass, per process
    accumulate: int  # forward passes per optimizer step: effective batch = batch_size x accumulate x processes
    backbone_lr: float
    head_lr: float  # the new head learns from scratch, so it may take a larger step than the backbone
    weight_decay: float
    eps: float  # AdamW epsilon
    dropout: float
    scheduler: SchedulerParams
    early_stopping: EarlyStoppingParams
    crop_size: int  # random crop (train) / centre crop (eval) taken from the stored frame_size
    hflip: bool  # a flip mirrors the signing hand: off by default
    amp: str  # CUDA autocast dtype: bf16, fp16 (with gradient scaling) or off; CPU always trains in fp32
    channels_last: bool  # CUDA only: channels-last 3D memory format for convolutions
    nproc_per_node: int  # > 1: the stage relaunches itself under torchrun with this many processes (DDP)
    device: str  # one of DEVICES: auto = the GPUs when the driver shows any (an unusable one is an error), else CPU
    threads: int  # torch threads per process: CPU results depend on it, so it is fixed, never the machine's load

    def __post_init__(self) -> None:
        _require(bool(self.pretrained), "train.pretrained", "none, kinetics or a weights file path", self.pretrained)
        _require(self.epochs >= 1, "train.epochs", "at least 1", self.epochs)
        _require(self.batch_size >= 1, "train.batch_size", "at least 1", self.batch_size)
        _require(self.accumulate >= 1, "train.accumulate", "at least 1", self.accumulate)
        _require(self.backbone_lr > 0, "train.backbone_lr", "positive", self.backbone_lr)
        _require(self.head_lr > 0, "train.head_lr", "positive", self.head_lr)
        _require(self.weight_decay >= 0, "train.weight_decay", "zero or positive", self.weight_decay)
        _require(self.eps > 0, "train.eps", "positive", self.eps)
        _require(0 <= self.dropout < 1, "train.dropout", "in [0, 1)", self.dropout)
        _require(self.crop_size >= 1, "train.crop_size", "at least 1", self.crop_size)
        if self.amp not in AMP_MODES:
            raise UserError(f"params.yaml: unknown train.amp {self.amp!r}; valid: {', '.join(AMP_MODES)}")
        _require(self.nproc_per_node >= 1, "train.nproc_per_node", "at least 1", self.nproc_per_node)
        if self.device not in DEVICES:
            raise UserError(f"params.yaml: unknown train.device {self.device!r}; valid: {', '.join(DEVICES)}")
        _require(self.threads >= 1, "train.threads", "at least 1", self.threads)


@dataclass(frozen=True)
class EvaluateParams:
    device: str  # one of DEVICES: auto = the GPU when there is one (as training), else the CPU; threads: training's
    batch_size: int
    shuffle_seed: int  # seeds the one frame permutation of the shuffled test
    sweep_count: int  # permutations in the order study, from barely to fully shuffled
    sweep_seed: int
    bootstrap_samples: int  # resamples of the test clips behind each 95% interval
    bootstrap_seed: int

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(f"params.yaml: unknown evaluate.device {self.device!r}; valid: {', '.join(DEVICES)}")
        _require(self.batch_size >= 1, "evaluate.batch_size", "at least 1", self.batch_size)
        _require(self.shuffle_seed >= 0, "evaluate.shuffle_seed", "zero or positive", self.shuffle_seed)
        _require(self.sweep_seed >= 0, "evaluate.sweep_seed", "zero or positive", self.sweep_seed)
        _require(self.sweep_count >= 1, "evaluate.sweep_count", "at least 1", self.sweep_count)
        _require(self.bootstrap_samples >= 100, "evaluate.bootstrap_samples", "at least 100", self.bootstrap_samples)
        _require(self.bootstrap_seed >= 0, "evaluate.bootstrap_seed", "zero or positive", self.bootstrap_seed)


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


# The params files this process has read, as read: `check_unchanged` compares them with the files at the end.
_LOADED: dict[Path, Any] = {}


def load_params(path: str | Path) -> Params:
    """Read and validate params.yaml; raise UserError naming the bad key and the fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    params = from_dict(Params, raw, prefix="")
    _LOADED[path.resolve()] = raw
    return params


def check_unchanged() -> None:
    """Under DVC, fail if a param this stage declares changed in params.yaml while the stage ran.

    DVC hashes a stage's params when the stage ends, to write dvc.lock. A `dvc exp run` started meanwhile rewrites
    params.yaml (its Hydra composition runs before DVC's lock stops it), so DVC would record params the outputs were
    not made with. Only the keys dvc.yaml declares for the stage count: an unrelated edit is no harm.
    """
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return
    keys = _declared(Path("dvc.yaml"), stage)  # DVC runs a stage in the repository root (or its wdir)
    for path, raw in _LOADED.items():
        try:
            now = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            now = None
        changed = [key for key in keys if _lookup(raw, key) != _lookup(now, key)]
        if changed:
            raise UserError(
                f"{path.name} changed while stage '{stage}' ran ({', '.join(k or 'params' for k in changed[:5])}), so "
                f"its outputs are not "
                f"what dvc.lock would record: run the stage again (dvc repro), or restore the values it ran with and "
                f"`dvc commit {stage}`; for concurrent experiments use `dvc exp run --queue` or a second clone"
            )


def _declared(dvc_yaml: Path, stage: str) -> list[str]:
    """The params keys dvc.yaml declares for `stage` (all of them where dvc.yaml or the stage is not found)."""
    try:
        entries = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]["params"]
        return [entry if isinstance(entry, str) else key for entry in entries
                for key in ([entry] if isinstance(entry, str) else entry)]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return [""]


def _lookup(raw: Any, key: str) -> Any:
    for part in filter(None, key.split(".")):
        raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


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
        raise UserError(f"params.yaml: missing key {prefix}{missing[0]}; add it (see docs/parameters.md)")
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
    elif kind == tuple[str, ...]:
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        value = tuple(value) if ok else value
    else:  # pragma: no cover - a new field type must be added here
        raise TypeError(f"unsupported params field type {kind!r} for {key}")
    if not ok:
        raise UserError(f"params.yaml: {key} must be {_NAMES[kind]}, got {value!r} ({type(value).__name__})")
    return value


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple[str, ...]: "a list of strings"}
