import json
from pathlib import Path

import numpy as np
import pytest

from slr.data.dataset import ClipDataset
from slr.data.metadata import load_index
from slr.data.preprocess import preprocess, resize_square, sample_indices, trim
from slr.data.synthetic import generate
from slr.params import SyntheticParams


def test_sampling_spans_the_whole_clip() -> None:
    idx = sample_indices(64, 16)
    assert len(idx) == 16 and np.all(np.diff(idx) > 0)
    assert idx[0] <= 2 and idx[-1] >= 61  # first and last segments are represented
    assert np.array_equal(sample_indices(16, 16), np.arange(16))


def test_short_clips_repeat_frames_evenly() -> None:
    idx = sample_indices(5, 16)
    assert np.all(np.diff(idx) >= 0) and set(idx) == set(range(5))
    assert np.bincount(idx).max() - np.bincount(idx).min() <= 1


def test_trim_is_one_based_inclusive_and_clamped() -> None:
    frames = np.arange(10)[:, None, None, None]
    assert trim(frames, 1, -1).ravel().tolist() == list(range(10))
    assert trim(frames, 3, 5).ravel().tolist() == [2, 3, 4]
    assert trim(frames, 8, 50).ravel().tolist() == [7, 8, 9]  # end past the video: clamped
    assert trim(frames, 40, -1).ravel().tolist() == [9]  # start past the video: its last frame
    assert trim(frames, 0, 2).ravel().tolist() == [0, 1]


def test_resize_keeps_aspect_and_centres() -> None:
    frames = np.zeros((2, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a bright centre band
    out = resize_square(frames, 20)
    assert out.shape == (2, 20, 20, 3)
    assert out[0, 10, 10].min() == 255 and out[0, 10, 0].max() == 0


@pytest.fixture(scope="module")
def broken_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set with one video deleted and one truncated to garbage."""
    raw = tmp_path_factory.mktemp("raw")
    generate(SyntheticParams(seed=1, pairs=1, signers=2, train_per_class=3, val_per_class=1, test_per_class=1,
                             size=32, fps=25), raw)
    (raw / "videos" / "00002.mp4").unlink()
    (raw / "videos" / "00003.mp4").write_bytes((raw / "videos" / "00003.mp4").read_bytes()[:40])
    return raw


def test_preprocess_skips_and_reports_bad_videos(broken_set: Path, tmp_path: Path) -> None:
    index = load_index(broken_set / "WLASL_v0.3.json").subset("asl100")
    report = preprocess(index, broken_set / "videos", tmp_path / "clips", num_frames=8, frame_size=16, workers=2)
    assert report["train"] == {"listed": 6, "present": 5, "readable": 4, "short": 0}
    assert report["test"] == {"listed": 2, "present": 2, "readable": 2, "short": 0}
    manifest = json.loads((tmp_path / "clips" / "manifest.json").read_text())
    train = manifest["sets"]["train"]
    assert train["missing"] == ["00002"] and train["unreadable"] == ["00003"]
    assert train["video_ids"] == ["00001", "00006", "00007", "00008"]
    assert train["labels"] == [0, 1, 1, 1]
    clips = np.load(tmp_path / "clips" / "train.npy")
    assert clips.shape == (4, 8, 16, 16, 3) and clips.dtype == np.uint8
    assert clips.reshape(4, -1).std(axis=1).min() > 0  # every stored row holds a real clip
    stored = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert stored == ["manifest.json", "test.npy", "train.npy", "val.npy"]
    dataset = ClipDataset(tmp_path / "clips", "train", 12, train=True, flip=False, seed=0)
    clip, label = dataset[3]
    assert tuple(clip.shape) == (8, 12, 12, 3) and label == 1
