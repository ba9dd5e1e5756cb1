from pathlib import Path

import pytest

from slr.data.metadata import load_index
from slr.errors import UserError

EXPECTED = {  # train/val/test counts from WLASL_v0.3.json
    "asl100": (1442, 338, 258),
    "asl300": (3549, 900, 668),
    "asl1000": (8974, 2318, 1876),
    "asl2000": (14289, 3916, 2878),
}


@pytest.mark.parametrize("split", list(EXPECTED))
def test_real_wlasl_subset_counts(wlasl_dir: Path, split: str) -> None:
    index = load_index(wlasl_dir / "WLASL_v0.3.json").subset(split)
    assert len(index.glosses) == int(split[3:])
    assert tuple(len(index.of_set(s)) for s in ("train", "val", "test")) == EXPECTED[split]


def test_real_wlasl_fields(wlasl_dir: Path) -> None:
    index = load_index(wlasl_dir / "WLASL_v0.3.json")
    assert len(index.glosses) == 2000 and len(index.instances) == 21083
    first = index.instances[0]
    assert first.label == 0 and index.glosses[0] == "book"
    assert first.frame_start >= 1 and len(first.bbox) == 4
    assert any(i.frame_end == -1 for i in index.instances) and any(i.frame_end > 0 for i in index.instances)


def test_unknown_split(wlasl_dir: Path) -> None:
    with pytest.raises(UserError, match="unknown split 'asl10'; valid: asl100, asl300, asl1000, asl2000"):
        load_index(wlasl_dir / "WLASL_v0.3.json").subset("asl10")


def test_small_index_keeps_all_its_glosses(tmp_path: Path) -> None:
    path = tmp_path / "WLASL_v0.3.json"
    inst = {"video_id": "1", "split": "test", "frame_start": 1, "frame_end": -1, "bbox": [0, 0, 5, 5], "signer_id": 0}
    path.write_text(f'[{{"gloss": "a", "instances": [{str(inst).replace(chr(39), chr(34))}]}}]')
    index = load_index(path).subset("asl100")
    assert index.glosses == ("a",) and [i.video_id for i in index.of_set("test")] == ["1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"gloss": "a"}', "expected a list of glosses"),
        ('[{"gloss": "a"}]', "gloss #0 is not in WLASL_v0.3.json format"),
        ('[{"gloss": "a", "instances": [{"video_id": "1", "split": "dev"}]}]', "gloss #0 is not in WLASL_v0.3.json"),
    ],
)
def test_malformed_index(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "WLASL_v0.3.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_index(path)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run the download stage"):
        load_index(tmp_path / "WLASL_v0.3.json")
