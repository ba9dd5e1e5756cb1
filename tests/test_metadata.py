import json
from pathlib import Path

import pytest

from slr.data.metadata import (
    compare_nslt,
    cross_split_copies,
    duplicate_groups,
    load_index,
    load_nslt,
    read_precut,
    read_resized,
)
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


NSLT_ABSENT = {  # ids the nslt files list that WLASL_v0.3.json lacks
    "asl100": [],
    "asl300": ["20065"],
    "asl1000": ["13422", "16096", "20065", "20138", "39347", "48251"],
    "asl2000": ["09500", "12209", "13422", "16096", "20065", "20138", "39347", "47639", "48251", "51153", "57839",
                "60721"],
}


@pytest.mark.parametrize("split", list(EXPECTED))
def test_real_nslt_matches_the_index_but_for_its_extra_ids(wlasl_dir: Path, split: str) -> None:
    index = load_index(wlasl_dir / "WLASL_v0.3.json").subset(split)
    nslt = load_nslt(wlasl_dir / f"nslt_{split[3:]}.json")
    comparison = compare_nslt(index, nslt)
    assert tuple(comparison.matched.values()) == EXPECTED[split]
    assert comparison.absent_from_index == NSLT_ABSENT[split]
    assert comparison.disagreeing == []
    assert len(nslt) == sum(EXPECTED[split]) + len(NSLT_ABSENT[split])


def test_real_duplicate_clips(wlasl_dir: Path) -> None:
    groups = duplicate_groups(load_index(wlasl_dir / "WLASL_v0.3.json"))
    assert len(groups) == 897
    assert sum(len({i.label for i in g}) > 1 for g in groups) == 804  # the same clip under two or more glosses
    assert sum(len({i.split for i in g}) > 1 for g in groups) == 442  # ... in two or more sets
    dropped = cross_split_copies(groups)
    assert len(dropped) == 468 and len(set(dropped)) == 468
    by_id = {i.video_id: i for g in groups for i in g}
    assert all(by_id[v].split != "train" for v in dropped)  # the training copy always stays


def _instance(video_id: str, split: str, url: str) -> dict:
    return {"video_id": video_id, "split": split, "frame_start": 1, "frame_end": -1, "bbox": [0, 0, 5, 5],
            "signer_id": 0, "url": url}


def test_cross_split_copies_keep_the_earliest_set(tmp_path: Path) -> None:
    path = tmp_path / "WLASL_v0.3.json"
    path.write_text(json.dumps([
        {"gloss": "a", "instances": [_instance("1", "test", "u1"), _instance("2", "val", "u2"),
                                     _instance("5", "test", "")]},
        {"gloss": "b", "instances": [_instance("3", "train", "u1"), _instance("4", "test", "u2"),
                                     _instance("6", "test", "")]},
    ]))
    index = load_index(path)
    groups = duplicate_groups(index)
    assert [[i.video_id for i in g] for g in groups] == [["1", "3"], ["2", "4"]]  # no url: never a duplicate
    assert cross_split_copies(groups) == ["1", "4"]  # train beats test; val beats test
    assert [i.video_id for i in index.without({"1", "4"}).instances] == ["2", "5", "3", "6"]


def test_nslt_against_a_small_index(tmp_path: Path) -> None:
    path = tmp_path / "WLASL_v0.3.json"
    instances = [_instance("1", "train", "u"), _instance("2", "val", "v")]
    path.write_text(json.dumps([{"gloss": "a", "instances": instances}]))
    nslt_path = tmp_path / "nslt_100.json"
    nslt_path.write_text(json.dumps({"1": {"subset": "train", "action": [0, 1, 40]},
                                     "2": {"subset": "test", "action": [0, 1, 40]},
                                     "9": {"subset": "val", "action": [0, 1, 40]}}))
    comparison = compare_nslt(load_index(path), load_nslt(nslt_path))
    assert comparison.matched == {"train": 1, "val": 0, "test": 1}
    assert comparison.absent_from_index == ["9"] and comparison.disagreeing == ["2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1]", "not in nslt format"), ('{"1": {"subset": "dev", "action": [0]}}', "not in nslt format"),
     ("{", "not valid JSON")],
)
def test_malformed_nslt(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "nslt_100.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_nslt(path)


def test_precut_flag(tmp_path: Path) -> None:
    assert read_precut(tmp_path) is False  # no source.json: the synthetic source, trimmed
    (tmp_path / "source.json").write_text('{"source": "release", "precut": true}')
    assert read_precut(tmp_path) is True
    (tmp_path / "source.json").write_text('{"source": "local", "precut": "yes"}')
    with pytest.raises(UserError, match="precut must be true or false"):
        read_precut(tmp_path)


def test_resized_flag(tmp_path: Path) -> None:
    assert read_resized(tmp_path) is False  # no source.json: the synthetic source, boxes at the videos' size
    (tmp_path / "source.json").write_text('{"source": "release", "precut": true, "resized": true}')
    assert read_resized(tmp_path) is True
    (tmp_path / "source.json").write_text('{"source": "local", "precut": true, "resized": 1}')
    with pytest.raises(UserError, match="resized must be true or false, got 1; re-run the download stage"):
        read_resized(tmp_path)


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
        ('[{"gloss": "a"}]', "gloss #0 \\('a'\\): instances must be a list"),
        ('[{"gloss": 7, "instances": []}]', "gloss #0 is not a {gloss, instances} object with a text gloss"),
        ('[{"gloss": "a", "instances": [{"video_id": "1", "split": "dev"}]}]', "instance #0: frame_start must be an"),
        ('[{"gloss": "a", "instances": [{"video_id": "1", "split": "dev", "frame_start": 1, "frame_end": -1, '
         '"signer_id": 0, "bbox": [0, 0, 1, 1]}]}]', "instance #0: split must be one of train, val, test, got 'dev'"),
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
