"""crop: person: the detector's weights through the offline-safe hub path, and the signer's box (union of people,
square, margin, centre where nobody is found) in the stored clips and the report. No network: the weights file is
generated here, and the detector's answers are faked where the test is about what is done with them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import slr.hub
from slr.data import person
from slr.data.clip import crop_window
from slr.data.dataset import load_set
from slr.data.preprocess import prepare_clips
from slr.data.video import write_frames
from slr.errors import UserError

HEIGHT, WIDTH = 32, 48
DOG = person.WEIGHTS.meta["categories"].index("dog")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    person.detector.cache_clear()
    yield tmp_path / "torch"
    person.detector.cache_clear()  # the next test must not get this test's detector


def test_detector_weights_load_from_the_hub_cache(torch_home: Path) -> None:
    torch.manual_seed(0)
    generated = person.architecture()  # stands in for the real file: same names and shapes
    path = slr.hub.cache_path(person.WEIGHTS.url)
    assert path.parent == torch_home / "hub" / "checkpoints" and path.name.startswith("ssdlite320_mobilenet_v3_large")
    path.parent.mkdir(parents=True)
    torch.save(generated.state_dict(), path)
    detector = person.detector()
    assert not detector.training and person.detector() is detector  # one per process
    for name, tensor in generated.state_dict().items():
        assert torch.equal(detector.state_dict()[name], tensor), name
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)
    assert person.find_person([frame]) is None  # untrained weights: nobody at MIN_SCORE, the run goes through


def test_detector_weights_offline_fail_in_seconds(torch_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  offline_server: str) -> None:
    url = f"{offline_server}/{slr.hub.cache_path(person.WEIGHTS.url).name}"
    monkeypatch.setattr(person, "WEIGHTS", SimpleNamespace(url=url, meta=person.WEIGHTS.meta))
    monkeypatch.setattr(slr.hub, "DOWNLOAD_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(UserError) as error:
        person.detector()
    assert time.monotonic() - start < 5
    path = slr.hub.cache_path(url)
    message = str(error.value)
    assert message.startswith("cannot download the person detector's COCO weights (preprocess.crop: person)")
    assert f"fetch {url} by hand and put it at {path}" in message and "TORCH_HOME" in message
    assert message.endswith("or set preprocess.crop to center") and "\n" not in message
    assert not path.exists()


def test_union_box_holds_every_box_in_whole_pixels() -> None:
    assert person.union_box([]) is None
    assert person.union_box([[10.2, 20.7, 30.1, 40.0], [5.9, 25.0, 12.0, 60.5]]) == (5, 20, 31, 61)


def test_person_window_is_a_square_around_the_people_with_the_margin() -> None:
    # A 20x40 (w x h) person, 0.25 margin: a 60-pixel square centred on the box, shifted into the 100x100 frame.
    assert crop_window(100, 100, (10, 50, 30, 90), "person", 0.25) == ((40, 0, 60, 60), False)
    assert crop_window(100, 100, (40, 40, 60, 50), "person", 0.5) == ((25, 30, 40, 40), False)
    assert crop_window(100, 200, None, "person", 0.2) == ((0, 50, 100, 100), True)  # nobody: centre, reported


class FakeDetector:
    """torchvision's detection interface: RGB float images in, per image {boxes, labels, scores} out. It finds a
    person where the image is bright (none in a dark video), plus a dog and a doubtful person to be ignored."""

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            assert image.dtype == torch.float32 and image.shape == (3, HEIGHT, WIDTH) and image.max() <= 1
            ys, xs = torch.nonzero(image.mean(0) > 0.3, as_tuple=True)
            boxes = [[0.0, 0.0, 48.0, 32.0], [0.0, 0.0, 10.0, 10.0]]  # the dog, the doubtful person
            labels, scores = [DOG, person.PERSON], [0.99, person.MIN_SCORE - 0.01]
            if len(xs):
                boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0])
                labels.append(person.PERSON)
                scores.append(0.9)
            out.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "scores": torch.tensor(scores)})
        return out


def _raw(root: Path, resized: bool) -> Path:
    """A pre-cut copy of two train videos: "lit" (a bright signer in columns 32-47, black elsewhere) and "dark"
    (nobody); boxes that lie inside the frame, as 419 of asl100's boxes do inside the release's 256x256 clips."""
    frames = np.zeros((12, HEIGHT, WIDTH, 3), np.uint8)
    lit = frames.copy()
    lit[:, 8:24, 32:48] = 200
    lit[:, :, 16:20] = 60  # a grey post left of the signer, dimmer than a person
    write_frames(root / "videos" / "lit.mp4", lit, fps=25)
    write_frames(root / "videos" / "dark.mp4", frames, fps=25)
    entries = [{"gloss": "g0", "instances": [
        {"video_id": v, "split": "train", "frame_start": start, "frame_end": end, "bbox": [0, 0, 16, 16],
         "signer_id": 0, "url": f"https://example.org/{v}", "fps": 25}
        for v, start, end in (("lit", 3, 10), ("dark", 1, -1))]}]
    (root / "WLASL_v0.3.json").write_text(json.dumps(entries))
    (root / "source.json").write_text(json.dumps({"source": "release", "precut": True, "resized": resized}))
    return root


def _prepare(raw: Path, out: Path, crop: str) -> dict:
    return prepare_clips(raw, out, "asl100", num_frames=4, frame_size=16, crop=crop, bbox_margin=0.0,
                         drop_cross_split_duplicates=False, max_missing=1.0)


def test_person_crop_keeps_the_signer_and_reports_who_was_not_found(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(person, "detector", FakeDetector)  # workers fork: they inherit the fake
    raw = _raw(tmp_path / "raw", resized=True)
    quality = _prepare(raw, tmp_path / "clips", "person")
    assert quality["resized"] is True and quality["train"]["person_fallback"] == ["dark"]
    assert quality["train"]["bbox_fallback"] == [] and quality["train"]["range_applied"] == ["lit"]
    clips, _, _ = load_set(tmp_path / "clips", "train")
    lit = np.asarray(clips[0])
    # The 16x16 person square (rows 8-23, columns 32-47), whole: bright everywhere, neither the post nor black.
    assert lit.min() > 150
    centre = _prepare(raw, tmp_path / "centre", "center")
    assert centre["train"]["person_fallback"] == []
    assert np.asarray(load_set(tmp_path / "centre", "train")[0][0]).min() < 20  # the black around the signer


def test_bbox_crop_is_refused_on_a_resized_copy(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw", resized=True)
    with pytest.raises(UserError, match=r"^preprocess.crop: bbox cannot crop .*resized.*set preprocess.crop to "
                                        r"person \(detect the signer\) or center$"):
        _prepare(raw, tmp_path / "clips", "bbox")
    assert not list(tmp_path.glob(".clips-work-*"))  # refused before any work
    raw = _raw(tmp_path / "start_kit", resized=False)  # a folder of clips at the source's resolution: boxes fit
    assert _prepare(raw, tmp_path / "clips", "bbox")["train"]["bbox_fallback"] == []
