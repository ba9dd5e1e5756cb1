"""Atomic file writes: a reader (or a killed run) never sees a half-written file where a complete one belongs.

A write goes to `.<name>.<pid>.<random>.tmp` beside its target and is renamed onto it when complete. A run killed
mid-write (SIGKILL, out of memory) leaves that temporary file behind; the next write to the same target removes
every one whose process is gone, so a 258 MB half-checkpoint does not stay for ever. Git and DVC ignore the pattern
(.gitignore, .dvcignore), so a leftover is never committed nor taken for an output.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files (or folders) of earlier writes to `path` whose process no longer runs."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    `durable`: flush the data to disk before the rename (see sync_file); files that are cheap to make again and are
    written by the thousand (generated videos) skip it, and only a machine crash could then lose one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o644)  # mkstemp makes 0600; outputs are ordinary files
        if durable:
            sync_file(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def sync_file(path: str | Path) -> None:
    """Flush `path`'s data to disk. Before a rename that declares a file complete: after a crash or power loss
    (unlike a kill, which leaves the page cache to the kernel) the name could otherwise point at unwritten blocks."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes 0700; outputs are ordinary folders
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Rename the complete folder `src` onto `dst` (same filesystem: instant, no copy).

    The previous `dst` is moved aside first and deleted only once `src` is in place, so `dst` is never a mix of
    old and new files.
    """
    src, dst = Path(src), Path(dst)
    old = dst.with_name(f".{dst.name}.old.tmp")  # a kill between the renames leaves it; the next call removes it
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically, with a trailing newline (stable diffs in git)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
