"""Tiny WLASL-shaped files for the download and source tests: an index, split files, videos, release archives."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

GLOSSES = ["book", "drink", "computer"]


def video_ids(glosses: list[str] = GLOSSES) -> list[str]:
    """Two instances per gloss, ids in WLASL's five-digit style."""
    return [f"{label:03d}{k:02d}" for label in range(len(glosses)) for k in range(2)]


def index_entries(glosses: list[str] = GLOSSES) -> list[dict]:
    """A WLASL_v0.3.json-format list: gloss `label` holds videos `label`00 and `label`01 (train, test)."""
    return [
        {
            "gloss": gloss,
            "instances": [
                {"video_id": f"{label:03d}{k:02d}", "split": ("train", "test")[k], "frame_start": 1, "frame_end": -1,
                 "bbox": [0, 0, 255, 255], "signer_id": k, "fps": 25, "instance_id": k, "source": "test",
                 "url": f"https://example.invalid/{label}/{k}", "variation_id": 0}
                for k in range(2)
            ],
        }
        for label, gloss in enumerate(glosses)
    ]


def video_bytes(video_id: str) -> bytes:
    # The sources never decode videos, so any distinct content will do.
    return b"\x00\x00\x00\x18ftypmp42" + video_id.encode() * 64


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def release_archives(folder: Path, skip: int = 1) -> tuple[Path, Path]:
    """splits.zip (splits/asl2.json, splits/asl3.json) and WLASL2000.zip (WLASL2000/<id>.mp4, the last `skip`
    videos left out as in the real release, where dead links left gaps)."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = write_zip(folder / "splits.zip", {
        f"splits/asl{n}.json": json.dumps(index_entries(GLOSSES[:n])).encode() for n in (2, len(GLOSSES))
    })
    ids = video_ids()[: len(video_ids()) - skip]
    videos = write_zip(folder / "WLASL2000.zip", {f"WLASL2000/{i}.mp4": video_bytes(i) for i in ids})
    return splits, videos
