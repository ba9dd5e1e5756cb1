"""The WLASL_v0.3.json index: glosses, instances, and the aslN subsets.

Format (Li et al., WACV 2020): a list of `{gloss, instances: [...]}`; a gloss's label is its index in the list, and
aslN is the first N glosses. Each instance names its video (`<video_id>.mp4`), its split, and the sign's frame range:
`frame_start` is 1-based, `frame_end` is inclusive and -1 means "to the end of the video".
"""

from __future__ import annotations

import json
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


def load_index(path: str | Path) -> Index:
    """Parse a WLASL_v0.3.json file; raise UserError with the entry at fault if it is not in that format."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: WLASL index not found; run the download stage (dvc repro download)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); re-download WLASL_v0.3.json") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a list of glosses (WLASL_v0.3.json format), got {type(entries).__name__}")
    glosses: list[str] = []
    instances: list[Instance] = []
    for label, entry in enumerate(entries):
        try:
            glosses.append(str(entry["gloss"]))
            instances.extend(_instance(raw, label) for raw in entry["instances"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: gloss #{label} is not in WLASL_v0.3.json format ({exc!r})") from None
    return Index(tuple(glosses), tuple(instances))


def _instance(raw: dict, label: int) -> Instance:
    split = raw["split"]
    if split not in SETS:
        raise ValueError(f"video {raw['video_id']}: split {split!r} is not one of {SETS}")
    x1, y1, x2, y2 = (int(v) for v in raw["bbox"])
    return Instance(
        video_id=str(raw["video_id"]),
        label=label,
        split=split,
        frame_start=int(raw["frame_start"]),
        frame_end=int(raw["frame_end"]),
        bbox=(x1, y1, x2, y2),
        signer_id=int(raw["signer_id"]),
    )
