import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from slr.errors import UserError
from slr.params import load_params


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_repository_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.model == "R3D_18"
    assert params.data.source == "synthetic"
    assert isinstance(params.train.head_lr, float) and params.train.scheduler.name == "none"


def test_yaml12_float_spelling_is_a_float(tmp_path: Path) -> None:
    # `dvc exp run -S train.head_lr=1e-3` writes 1e-3, which PyYAML reads as a string.
    path = _write(tmp_path, lambda raw: raw["train"].update(head_lr="1e-3"))
    assert load_params(path).train.head_lr == 0.001


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["train"].update(epochs="four"), "train.epochs must be an integer, got 'four'"),
        (lambda raw: raw["train"].update(epochs=2.5), "train.epochs must be an integer"),
        (lambda raw: raw["train"].update(hflip="yes"), "train.hflip must be true or false"),
        (lambda raw: raw["train"].update(lrr=0.1), "unknown key train.lrr"),
        (lambda raw: raw["evaluate"].pop("batch_size"), "missing key evaluate.batch_size"),
        (lambda raw: raw["data"].update(split="asl50"), "unknown data.split 'asl50'; valid: asl100, asl300"),
        (lambda raw: raw["data"].update(source="ftp"), "unknown data.source 'ftp'"),
        (lambda raw: raw.update(train=[1, 2]), "train must be a mapping"),
        (lambda raw: raw["train"].update(epochs=0), "train.epochs must be at least 1, got 0"),
        (lambda raw: raw["train"].update(dropout=1.0), "train.dropout must be in [0, 1), got 1.0"),
        (lambda raw: raw["train"].update(backbone_lr=0), "train.backbone_lr must be positive"),
        (lambda raw: raw["train"]["scheduler"].update(name="step"),
         "unknown train.scheduler.name 'step'; valid: none, cosine, warm_restarts, plateau"),
        (lambda raw: raw["train"]["scheduler"].update(t0=0), "train.scheduler.t0 must be at least 1"),
        (lambda raw: raw["train"]["early_stopping"].update(patience=-1), "train.early_stopping.patience must be zero"),
        (lambda raw: raw["train"].update(amp="fp8"), "unknown train.amp 'fp8'; valid: bf16, fp16, off"),
        (lambda raw: raw["train"].update(accumulate=0), "train.accumulate must be at least 1"),
        (lambda raw: raw["train"].update(pretrained=""), "train.pretrained must be none, kinetics or a weights"),
        (lambda raw: raw["evaluate"].update(sweep_count=0), "evaluate.sweep_count must be at least 1"),
        (lambda raw: raw.update(seed=-1), "seed must be zero or positive, got -1"),
        (lambda raw: raw["data"]["synthetic"].update(seed=-3), "data.synthetic.seed must be zero or positive"),
        (lambda raw: raw["preprocess"].update(num_frames=1), "preprocess.num_frames must be at least 2"),
        (lambda raw: raw["preprocess"].update(crop="box"), "preprocess.crop must be one of bbox, person, center, none"),
        (lambda raw: raw["preprocess"].update(max_missing=1.5), "preprocess.max_missing must be in [0, 1], got 1.5"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        load_params(_write(tmp_path, edit))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data.update(source="release"), None),
        (lambda data: data["release"]["splits_urls"].append("x.zip"),
         "data.release.splits_urls[2] must be an http(s) URL, got 'x.zip'"),
        (lambda data: data["release"].update(videos_urls="https://a/v.zip"), "data.release.videos_urls must be a list"),
        (lambda data: data["release"].update(videos_urls=[]), "data.release.videos_urls must be a list of one or more"),
        (lambda data: data["release"].update(videos_urls=["https://a/v.zip"] * 2),
         "data.release.videos_urls must be a list of distinct URLs"),
        (lambda data: data["release"].update(videos_sha256="abc"), "data.release.videos_sha256 must be empty"),
        (lambda data: data["release"].update(splits_sha256="AB" * 32), None),
        (lambda data: data["local"].update(path=""), "data.local.path must be a folder (e.g. data/wlasl), got ''"),
        (lambda data: data.pop("local"), "missing key data.local"),
    ],
)
def test_release_and_local_params(tmp_path: Path, edit, message: str | None) -> None:
    path = _write(tmp_path, lambda raw: edit(raw["data"]))
    if message is None:
        load_params(path)
    else:
        with pytest.raises(UserError, match=re.escape(message)):
            load_params(path)


def _keys(tree: object, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return []
    return [key for name, value in tree.items() for key in [f"{prefix}{name}", *_keys(value, f"{prefix}{name}.")]]


def test_no_param_is_named_size_or_nfiles() -> None:
    """DVC drops every key named `size` or `nfiles`, at any depth, from the stage hash of its run cache (DVC bug
    treeverse/dvc#10296, open): a change to such a param would restore the previous run's outputs, silently."""
    files = [REPO / "params.yaml", *sorted((REPO / "conf").rglob("*.yaml"))]
    named = [f"{path.relative_to(REPO)}: {key}" for path in files for key in _keys(yaml.safe_load(path.read_text()))
             if key.rsplit(".", 1)[-1] in ("size", "nfiles")]
    assert not named, f"rename these params (DVC's run cache ignores them, treeverse/dvc#10296): {named}"
