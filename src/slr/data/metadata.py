"""The WLASL_v0.3.json index: glosses, instances, and the aslN subsets.

Format (Li et al., WACV 2020): a list of `{gloss, instances: [...]}`; a gloss's label is its index in the list, and
aslN is the first N glosses. Each instance names its video (`<video_id>.mp4`), its split, and the sign's frame range:
`frame_start` is 1-based, `frame_end` is inclusive and -1 means "to the end of the video".

The original project's I3D code reads the same subsets from `nslt_{100,300,1000,2000}.json` instead (keyed by
video id: `{"subset": train/val/test, "action": [label, start, end]}`); those files list a few ids that
WLASL_v0.3.json lacks, which :func:`compare_nslt` reports rather than inventing metadata for them. WLASL also holds
the same clip (same url and frame range) more than once, often under different glosses or in different splits:
:func:`duplicate_groups` finds them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from slr.errors import UserError
from slr.params import SPLITS

SETS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Instance:
    video_id: str
    label: int
    split: str  # one of SETS
    frame_start: int  # 1-based
    frame_end: int  # inclusive; -1 = to the end
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 in source pixels
    signer_id: int
    url: str = ""  # the source video; "" where the index has none (never counted as a duplicate)


@dataclass(frozen=True)
class Index:
    glosses: tuple[str, ...]  # label -> gloss
    instances: tuple[Instance, ...]

    def subset(self, split: str) -> Index:
        """The aslN subset: the first N glosses and their instances (all glosses if the index has fewer)."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return self.first(SPLITS[split])

    def first(self, num: int) -> Index:
        """The first `num` glosses (or all, if fewer) and their instances."""
        num = min(num, len(self.glosses))
        return Index(self.glosses[:num], tuple(i for i in self.instances if i.label < num))

    def of_set(self, name: str) -> list[Instance]:
        """The instances of one set (train/val/test), in index order."""
        return [i for i in self.instances if i.split == name]

    def without(self, video_ids: set[str]) -> Index:
        """The same glosses without the instances of `video_ids`."""
        return Index(self.glosses, tuple(i for i in self.instances if i.video_id not in video_ids))


@dataclass(frozen=True)
class NsltComparison:
    """An nslt_N.json split file against the index's aslN subset."""

    matched: dict[str, int]  # ids per set (train/val/test) that the index lists too
    absent_from_index: list[str]  # ids the nslt file lists but WLASL_v0.3.json does not
    disagreeing: list[str]  # ids in both whose label or set differ


def read_precut(raw_dir: str | Path) -> bool:
    """Whether the raw videos are meant to be cut to their instances already (`precut` in the download stage's
    source.json): the release archive and local copies say so, the synthetic source does not (no source.json: the
    synthetic source). What a copy says, for the report: a real copy mixes cut clips and source videos, so each
    clip decides from its own length whether its frame range applies (clip.sign_span).
    """
    return _source_flag(raw_dir, "precut")


def read_resized(raw_dir: str | Path) -> bool:
    """Whether the raw videos were resized from their source videos (`resized` in the download stage's source.json).

    The release archives' clips are 256x256 whatever the source's size, so WLASL's boxes (in source pixels) do not
    fit them, even where a box happens to lie inside the frame. No source.json means the synthetic source (False).
    """
    return _source_flag(raw_dir, "resized")


def read_copy(raw_dir: str | Path) -> dict | None:
    """The fingerprint of the WLASL copy the raw videos came from (`copy` in source.json: md5, files, bytes), which
    every result names; None where the raw data predates it."""
    value = _source(raw_dir).get("copy")
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("md5"), str)):
        raise UserError(f"{Path(raw_dir) / 'source.json'}: copy must be the copy's fingerprint, got {value!r}; "
                        "re-run the download stage (dvc repro -f download)")
    return value


def _source_flag(raw_dir: str | Path, key: str) -> bool:
    """A true/false fact of source.json; False where the file or the key is absent; UserError if malformed."""
    value = _source(raw_dir).get(key, False)
    if not isinstance(value, bool):
        raise UserError(f"{Path(raw_dir) / 'source.json'}: {key} must be true or false, got {value!r}; re-run the "
                        "download stage")
    return value


def _source(raw_dir: str | Path) -> dict:
    """The download stage's source.json ({} where there is none: raw data made before it existed)."""
    path = Path(raw_dir) / "source.json"
    if not path.is_file():
        return {}
    try:
        source = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        source = None
    if not isinstance(source, dict):
        raise UserError(f"{path}: not a JSON object; re-run the download stage (dvc repro -f download)")
    return source


def load_nslt(path: str | Path) -> dict[str, tuple[str, int]]:
    """Parse an nslt_N.json split file into {video_id: (set, label)}; UserError naming the entry at fault."""
    path = Path(path)
    entries = parse_json(path, "an nslt split file")
    try:
        return {str(vid): (_set_name(e["subset"], vid), int(e["action"][0])) for vid, e in entries.items()}
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise UserError(f"{path}: not in nslt format ({{video_id: {{subset, action}}}}): {exc!r}") from None


def compare_nslt(index: Index, nslt: dict[str, tuple[str, int]]) -> NsltComparison:
    """Compare an nslt split (from :func:`load_nslt`) with the index subset of the same size."""
    known = {i.video_id: (i.split, i.label) for i in index.instances}
    matched = {name: sum(s == name for v, (s, _) in nslt.items() if v in known) for name in SETS}
    absent = sorted(v for v in nslt if v not in known)
    disagreeing = sorted(v for v, entry in nslt.items() if v in known and known[v] != entry)
    return NsltComparison(matched, absent, disagreeing)


def duplicate_groups(index: Index) -> list[list[Instance]]:
    """Groups of two or more instances that are the same clip (same url and frame range), in index order."""
    groups: dict[tuple[str, int, int], list[Instance]] = defaultdict(list)
    for instance in index.instances:
        if instance.url:
            groups[(instance.url, instance.frame_start, instance.frame_end)].append(instance)
    return [group for group in groups.values() if len(group) > 1]


def cross_split_copies(groups: list[list[Instance]]) -> list[str]:
    """Ids of the evaluation copies of clips that also stand in an earlier set (order train, val, test).

    A clip in train and test keeps its train copy: dropping it from the evaluation set stops a test score from
    rewarding memorised training clips, and leaves the training data as published. A clip in val and test keeps
    its val copy, for the same reason (val chooses the checkpoint).
    """
    dropped = []
    for group in groups:
        first = min(SETS.index(i.split) for i in group)
        dropped += [i.video_id for i in group if SETS.index(i.split) > first]
    return sorted(dropped)


def parse_json(path: str | Path, what: str) -> object:
    """The JSON content of `path`; UserError naming the file, line and column where it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: not found ({what})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({what}: not UTF-8 text at byte {exc.start}); replace the file "
                        "with an intact copy") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({what}): {exc.msg} at line {exc.lineno} column {exc.colno}; "
                        "replace the file with an intact copy") from None


def load_index(path: str | Path) -> Index:
    """Parse a WLASL_v0.3.json file; raise UserError naming the entry and field at fault if it is not in that format.

    Video ids become file names (`videos/<video_id>.mp4`), so an id that could name a file outside the copy (a path
    separator, `..`, an absolute path) is refused here, where the index is read, once for every stage.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: WLASL index not found; run the download stage (dvc repro download)")
    entries = parse_json(path, "the WLASL index")
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a list of glosses (WLASL_v0.3.json format), got {type(entries).__name__}")
    glosses: list[str] = []
    instances: list[Instance] = []
    for label, entry in enumerate(entries):
        where = f"{path}: gloss #{label}"
        if not isinstance(entry, dict) or not isinstance(entry.get("gloss"), str):
            raise UserError(f"{where} is not a {{gloss, instances}} object with a text gloss (WLASL_v0.3.json format)")
        if not isinstance(entry.get("instances"), list):
            raise UserError(f"{where} ({entry['gloss']!r}): instances must be a list")
        glosses.append(entry["gloss"])
        instances.extend(_instance(raw, label, f"{where} ({entry['gloss']!r}), instance #{k}")
                         for k, raw in enumerate(entry["instances"]))
    return Index(tuple(glosses), tuple(instances))


VIDEO_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # a plain file name: no separator, no "..", no leading "."
_FIELDS = {"video_id": str, "split": str, "frame_start": int, "frame_end": int, "signer_id": int}


def _set_name(name: str, video_id: str) -> str:
    if name not in SETS:
        raise ValueError(f"video {video_id}: split {name!r} is not one of {SETS}")
    return name


def _instance(raw: object, label: int, where: str) -> Instance:
    """One instance of the index, its fields checked for type (bool is not an int, "12" is not a number)."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} is not an object")
    for field, kind in _FIELDS.items():
        value = raw.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{where}: {field} must be {'text' if kind is str else 'an integer'}, got {value!r}")
    video_id = raw["video_id"]
    if not VIDEO_ID.match(video_id) or ".." in video_id:
        raise UserError(f"{where}: video_id {video_id!r} is not a plain file name (letters, digits, '_', '-', '.'; "
                        "no path): the index may not name files outside the copy")
    if raw["split"] not in SETS:
        raise UserError(f"{where}: split must be one of {', '.join(SETS)}, got {raw['split']!r}")
    bbox = raw.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        raise UserError(f"{where}: bbox must be four numbers [x1, y1, x2, y2], got {bbox!r}")
    url = raw.get("url", "")
    return Instance(
        video_id=video_id,
        label=label,
        split=raw["split"],
        frame_start=raw["frame_start"],
        frame_end=raw["frame_end"],
        bbox=tuple(int(v) for v in bbox),  # type: ignore[arg-type]
        signer_id=raw["signer_id"],
        url=url if isinstance(url, str) else "",
    )
