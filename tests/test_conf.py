"""The Hydra presets in conf/: params.yaml is their composition, and every model composes, under every recipe,
into params that the model can take (what `dvc exp run -S model=... -S recipe=...` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slr.models import MODELS, check_input
from slr.params import Params, load_params

from conftest import REPO, compose_params

RECIPES = sorted(p.stem for p in (REPO / "conf/recipe").glob("*.yaml"))


def compose(tmp_path: Path, *overrides: str) -> Path:
    return compose_params(REPO / "conf", tmp_path / "params.yaml", *overrides)


def test_hydra_is_enabled_for_dvc_exp_run() -> None:
    assert "[hydra]\n    enabled = true" in (REPO / ".dvc/config").read_text()


def test_committed_params_are_the_default_composition(tmp_path: Path) -> None:
    assert compose(tmp_path).read_text() == (REPO / "params.yaml").read_text()


def test_every_model_has_a_preset_and_every_preset_a_model() -> None:
    assert sorted(p.stem for p in (REPO / "conf/model").glob("*.yaml")) == sorted(MODELS)
    assert RECIPES == ["cpu", "original"]


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("model", list(MODELS))
def test_each_model_composes_to_a_clip_it_can_take(tmp_path: Path, model: str, recipe: str) -> None:
    params: Params = load_params(compose(tmp_path, f"model='{model}'", f"recipe={recipe}", "data.split=asl300"))
    assert (params.model, params.data.split) == (model, "asl300")
    p = params.preprocess
    check_input(model, p.num_frames, params.train.crop_size)
    assert params.train.crop_size <= p.frame_size
    if model == "S3D" or recipe == "original" or model.startswith("MViT"):
        assert (p.num_frames, params.train.crop_size) == (32 if model == "S3D" else 16, 224)
    else:
        assert (p.num_frames, p.frame_size, params.train.crop_size) == (16, 28, 24)


def test_the_original_recipe(tmp_path: Path) -> None:
    t = load_params(compose(tmp_path, "recipe=original")).train
    assert (t.pretrained, t.backbone_lr, t.head_lr, t.weight_decay, t.eps, t.dropout) == (
        "kinetics", 1e-4, 1e-3, 1e-3, 1e-5, 0.5)
    assert t.batch_size * t.accumulate == 8 and t.scheduler.name == "cosine"


def test_overrides_apply_after_the_presets(tmp_path: Path) -> None:
    params = load_params(compose(tmp_path, "model=MViTv2_S", "train.batch_size=2", "train.accumulate=4"))
    assert (params.train.batch_size, params.train.accumulate, params.train.crop_size) == (2, 4, 224)


def test_training_doc_states_the_original_recipe_as_its_preset_sets_it() -> None:
    """One source of truth: docs/training.md's paragraph on the original recipe says what conf/recipe/original.yaml sets."""
    import yaml

    recipe = yaml.safe_load((REPO / "conf/recipe/original.yaml").read_text())
    t, s, p = recipe["train"], recipe["train"]["scheduler"], recipe["preprocess"]
    doc = (REPO / "docs/training.md").read_text()
    paragraph = " ".join(doc[doc.index("**The original recipe.**"):doc.index("**Resume.**")].split())

    def num(x: float) -> str:  # as the docs write them: 1e-4, 0.5
        return f"{x:.0e}".replace("e-0", "e-") if x < 0.01 else f"{x:g}"

    for phrase in (
        f"{p['num_frames']} frames stored at {p['frame_size']} x {p['frame_size']} and randomly cropped to "
        f"{t['crop_size']}",
        f"backbone lr {num(t['backbone_lr'])} and head lr {num(t['head_lr'])}",
        f"weight decay {num(t['weight_decay'])}", f"eps {num(t['eps'])}", f"dropout {num(t['dropout'])}",
        f"effective batch of {t['batch_size'] * t['accumulate']} ({t['batch_size']} x {t['accumulate']})",
        {"cosine": "cosine annealing"}[s["name"]],
        f"up to {t['epochs']} epochs with early stopping after {t['early_stopping']['patience']} epochs",
        "Kinetics-400" if t["pretrained"] == "kinetics" else t["pretrained"],
    ):
        assert phrase in paragraph, phrase
