import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from slr.data.metadata import load_index
from slr.data.synthetic import (
    BACKGROUND, BODY, GLOVES, HANDSHAPES, MAX_PAIRS, PATHS, PLACES, SKIN, Sign, Signer, generate, render_clip, sign_of,
    trajectory,
)
from slr.data.video import read_frames
from slr.errors import UserError
from slr.params import SyntheticParams

SMALL = SyntheticParams(
    seed=3, pairs=2, signers=3, train_per_class=3, val_per_class=1, test_per_class=2, video_size=32, fps=25
)
WLASL_FIELDS = {"bbox", "fps", "frame_end", "frame_start", "instance_id", "signer_id", "source", "split", "url",
                "variation_id", "video_id"}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _set_digest(folder: Path) -> str:
    """One sha256 over every file's name and sha256: pins a whole generated set in one line."""
    return hashlib.sha256("".join(f"{name} {h}\n" for name, h in sorted(_digest(folder).items())).encode()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(SMALL, out)
    return out


def test_same_seed_same_bytes(dataset: Path, tmp_path: Path) -> None:
    generate(SMALL, tmp_path)
    assert _digest(tmp_path) == _digest(dataset)


# Recorded with the 6-pair generator (commit 24228a8), before the synthetic set grew to 1,000 pairs: the committed
# default (data/raw in dvc.lock) and any set of at most 6 pairs must keep these bytes for the results to reproduce.
DEFAULT = SyntheticParams(
    seed=0, pairs=5, signers=10, train_per_class=20, val_per_class=5, test_per_class=5, video_size=64, fps=25
)
RECORDED = [
    (DEFAULT, "db2b0a2f0182d1c4a7161434ea4aeca3a01f2bed686b588428f8d9f43604bde4"),
    (SyntheticParams(seed=7, pairs=6, signers=3, train_per_class=1, val_per_class=1, test_per_class=1, video_size=32, fps=25),
     "4dc28205bcdd77513648ef3a5cb185a5729971f9b2c284b7ce7d8a248fb2ede9"),
]


@pytest.mark.parametrize(("params", "digest"), RECORDED, ids=["default", "six_pairs"])
def test_first_six_pairs_keep_their_bytes(params: SyntheticParams, digest: str, tmp_path: Path) -> None:
    generate(params, tmp_path)
    assert _set_digest(tmp_path) == digest


def test_other_seed_other_videos(dataset: Path, tmp_path: Path) -> None:
    generate(SyntheticParams(**{**SMALL.__dict__, "seed": 4}), tmp_path)
    assert _digest(tmp_path)["00001.mp4"] != _digest(dataset)["00001.mp4"]


def test_wlasl_format(dataset: Path) -> None:
    entries = json.loads((dataset / "WLASL_v0.3.json").read_text())
    assert [e["gloss"] for e in entries] == ["up", "down", "come", "go"]
    for entry in entries:
        assert [i["split"] for i in entry["instances"]] == ["train"] * 3 + ["val"] + ["test"] * 2
        for inst in entry["instances"]:
            assert set(inst) == WLASL_FIELDS
            frames = read_frames(dataset / "videos" / f"{inst['video_id']}.mp4")
            assert frames.shape[1:] == (32, 32, 3)
            assert 1 <= inst["frame_start"] <= len(frames)
            assert inst["frame_end"] == -1 or inst["frame_start"] < inst["frame_end"] <= len(frames)
            x1, y1, x2, y2 = inst["bbox"]
            assert 0 <= x1 < x2 < 32 and 0 <= y1 < y2 < 32
    index = load_index(dataset / "WLASL_v0.3.json")
    assert len(index.instances) == 24 and len({i.video_id for i in index.instances}) == 24


def test_same_seed_same_bytes_beyond_the_first_six_pairs(tmp_path: Path) -> None:
    params = SyntheticParams(seed=5, pairs=14, signers=2, train_per_class=1, val_per_class=1, test_per_class=1,
                             video_size=32, fps=25)
    generate(params, tmp_path / "a")
    generate(params, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    entries = json.loads((tmp_path / "a" / "WLASL_v0.3.json").read_text())
    assert [e["gloss"] for e in entries[12:14]] == ["come-fist-left-red", "go-fist-left-red"]
    assert len(entries) == 28


def test_glosses_are_the_original_twelve_then_unique_names() -> None:
    glosses = [g for pair in range(MAX_PAIRS) for g in sign_of(pair).glosses]
    assert glosses[:12] == [
        "up", "down", "come", "go", "open", "close", "push", "pull", "give", "take", "arrive", "leave"
    ]
    assert len(set(glosses)) == 2 * MAX_PAIRS
    assert sign_of(999).glosses == ("come-flat-left-magenta", "go-flat-left-magenta")


def test_every_pair_is_a_distinct_sign() -> None:
    signs = [sign_of(pair) for pair in range(MAX_PAIRS)]
    assert [(s.handshape, s.path, s.place, s.glove) for s in signs[:6]] == [(k, k, 0, 0) for k in range(6)]
    assert len({(s.handshape, s.path, s.place, s.glove) for s in signs}) == MAX_PAIRS
    # Every factor takes all its values within asl100's 50 pairs.
    for factor, table in (("handshape", HANDSHAPES), ("path", PATHS), ("place", PLACES), ("glove", GLOVES)):
        assert {getattr(s, factor) for s in signs[:50]} == set(range(len(table)))


def test_no_hand_path_looks_like_another_or_a_reversed_one() -> None:
    """Glosses sharing handshape, place and glove differ in their trajectory, played either way, by >= 0.25 units
    (the signer's size unit: 4 px in a 64 px video), and no trajectory is its own reverse (pairs would be equal)."""
    paths = {(p, l): np.array(trajectory(Sign(("a", "b"), 0, p, l, 0), 24))
             for p in range(len(PATHS)) for l in range(len(PLACES))}
    for a, b in itertools.product(paths, paths):
        assert np.abs(paths[a] - paths[b][::-1]).max() >= 0.25, (a, b)
        if a != b:
            assert np.abs(paths[a] - paths[b]).max() >= 0.25, (a, b)


def test_gloves_stand_out_from_every_signer_and_from_each_other() -> None:
    def distance(colour: tuple[int, int, int], low: int, high: int) -> int:  # to the nearest colour of the range
        return max(max(low - c, c - (high - 1), 0) for c in colour)

    gloves = [colour for _, colour in GLOVES[1:]]
    for colour in gloves:
        assert min(distance(colour, *bounds) for bounds in (BACKGROUND, BODY, SKIN)) >= 75, colour
    for a, b in itertools.combinations(gloves, 2):
        assert max(abs(x - y) for x, y in zip(a, b)) >= 150, (a, b)


def _plain_signer(offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> Signer:
    return Signer(background=(10, 20, 30), body=(90, 90, 90), skin=(220, 180, 150), offset=offset, scale=scale,
                  speed=1.0, noise=0.0)


def _sign_frames(frames: np.ndarray, meta: dict) -> np.ndarray:
    return frames[meta["frame_start"] - 1 : len(frames) if meta["frame_end"] == -1 else meta["frame_end"]]


@pytest.mark.parametrize("pair", [1, 999])
def test_pair_glosses_are_the_same_frames_in_reverse(pair: int) -> None:
    forward, meta = render_clip(sign_of(pair), False, _plain_signer(), 48, np.random.default_rng(0))
    backward, meta_back = render_clip(sign_of(pair), True, _plain_signer(), 48, np.random.default_rng(0))
    assert meta == meta_back
    assert np.array_equal(_sign_frames(forward, meta)[::-1], _sign_frames(backward, meta))
    assert not np.array_equal(_sign_frames(forward, meta), _sign_frames(backward, meta))  # order: the only difference


@pytest.mark.parametrize("size", [32, 64])
def test_the_palm_stays_in_the_frame_at_every_place(size: int) -> None:
    """A red fist (the palm of every handshape) never touches the frame's edge during a sign, on the signers placed
    furthest off centre at the largest scale the generator draws."""
    for path, place, dx, dy in itertools.product(range(len(PATHS)), range(len(PLACES)), (-0.08, 0.08), (-0.05, 0.05)):
        signer = _plain_signer(offset=(dx, dy), scale=1.15)
        frames, meta = render_clip(Sign(("a", "b"), 0, path, place, 1), False, signer, size, np.random.default_rng(0))
        red = np.all(_sign_frames(frames, meta) == GLOVES[1][1], axis=-1)
        assert red.any(axis=(1, 2)).all()
        edge = red[:, 0, :].any() or red[:, -1, :].any() or red[:, :, 0].any() or red[:, :, -1].any()
        assert not edge, (PATHS[path][0], PLACES[place][0], dx, dy)


def test_bad_params_are_rejected(tmp_path: Path) -> None:
    for pairs in (0, MAX_PAIRS + 1):
        with pytest.raises(UserError, match="data.synthetic.pairs must be 1..1000, got"):
            generate(SyntheticParams(**{**SMALL.__dict__, "pairs": pairs}), tmp_path)
    with pytest.raises(UserError, match="data.synthetic.test_per_class must be at least 1"):
        generate(SyntheticParams(**{**SMALL.__dict__, "test_per_class": 0}), tmp_path)
