"""The fingerprint of a WLASL copy: the md5 DVC computes for a folder, so that every result names the exact set of
files it came from, and a copy in data/wlasl can be compared with what data.dvc records for it.

DVC's folder md5 (DVC 3, `hash: md5`) is the md5 of a JSON listing, sorted by path, of each file's md5 and its
relative path, with ".dir" appended. Computing it here, rather than trusting a folder's name, is what lets
results from two machines be compared: the same md5 means the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from slr.errors import UserError

CHUNK = 1 << 20
# The project's own files in data/wlasl, which .dvcignore hides from DVC: they are not part of anyone's copy.
PLACEHOLDERS = frozenset({"README.md", ".gitignore"})


@dataclass(frozen=True)
class Fingerprint:
    md5: str  # as DVC records it for a folder: "<hex>.dir"
    files: int
    bytes: int

    def as_dict(self) -> dict:
        return {"md5": self.md5, "files": self.files, "bytes": self.bytes}


def folder_md5(root: Path, skip_placeholders: bool = True) -> Fingerprint:
    """DVC's md5 of the folder `root` (symbolic links followed, as DVC does), with a progress bar over the bytes."""
    return files_md5({
        path.relative_to(root).as_posix(): path
        for path in copy_files(root)
        if not (skip_placeholders and path.parent == root and path.name in PLACEHOLDERS)
    }, str(root))


def files_md5(files: dict[str, Path], what: str) -> Fingerprint:
    """DVC's md5 of a folder that would hold `files` ({relative path: file}), e.g. the two release archives."""
    total = sum(path.stat().st_size for path in files.values())
    entries = []
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"md5 of {what}", leave=False,
              disable=total < 256 * CHUNK) as bar:
        for relpath in sorted(files):
            entries.append({"md5": _file_md5(files[relpath], bar), "relpath": relpath})
    listing = json.dumps(entries, sort_keys=True).encode()
    return Fingerprint(hashlib.md5(listing).hexdigest() + ".dir", len(entries), total)


def copy_files(root: Path) -> list[Path]:
    """Every file below `root`, following symbolic links that stay inside it; a link that leads out of the copy
    (to /etc/passwd, to another dataset) is refused before anything behind it is read."""
    inside = root.resolve()
    found = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        for name in [*dirs, *names]:
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                raise UserError(f"{path} is a link to {path.resolve()}, outside the copy {root}; copy the file "
                                "into the copy instead of linking it")
        found += [Path(folder) / name for name in names]
    return found


def _file_md5(path: Path, bar: tqdm) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()
