"""Fetching one archive over HTTP(S): resumable, sha256-verified before use, and safe to unpack.

A WLASL archive is gigabytes on a server that drops connections and sometimes answers with a web page (Google
Drive's "can't scan this file for viruses" confirmation). So the transfer goes to `<name>.part`, which survives a
killed run and is resumed with an HTTP Range request; it becomes `<name>` only after its sha256 is checked; and
anything that is not a zip is refused before a byte of it is unpacked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from slr.errors import UserError
from slr.files import atomic_path

CHUNK = 1 << 20
TIMEOUT_S = 15.0  # per connect and per read: offline fails in seconds, a slow but live server still gets through
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local file header, or the end record of an empty zip
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class ManualDownload(UserError):
    """This code cannot fetch the file (offline, refused, or a web page instead of it): a person must."""


class _Dropped(Exception):
    """The transfer stopped early; what arrived is kept in the .part file and the next attempt resumes it."""


@dataclass(frozen=True)
class Fetched:
    url: str
    path: Path
    bytes: int
    sha256: str
    pinned: bool  # True: matched the sha256 given in params; False: computed here because none was given


def fetch(
    url: str,
    dest: Path,
    sha256: str = "",
    sha256_param: str = "the sha256 param",
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = TIMEOUT_S,
) -> Fetched:
    """Make `dest` a complete, verified copy of `url`, downloading (or resuming `dest.part`) only when needed.

    Args:
        sha256: expected hex digest; empty means "compute it and report it" (first download of an unpinned file).
        sha256_param: the params key holding `sha256`, named in the mismatch message.
        retries: further attempts after a dropped connection, waiting backoff_s, 2*backoff_s, ... between them.
    """
    part = dest.with_name(dest.name + ".part")
    _forget_other_url(url, dest, part)
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(retries + 1):
            try:
                _transfer(url, part, timeout_s)
                break
            except _Dropped as exc:
                if attempt == retries:
                    raise UserError(
                        f"{url}: {exc}, gave up after {retries + 1} attempt(s); the {_size(part)} bytes received "
                        f"are kept in {part}: rerun to resume"
                    ) from None
                wait = backoff_s * 2**attempt
                print(f"download: {exc}; resuming in {wait:.0f} s", file=sys.stderr)
                time.sleep(wait)
    source = dest if dest.is_file() else part
    digest = sha256_file(source)
    if sha256 and digest != sha256.lower():
        bad = dest.with_name(dest.name + ".bad")
        os.replace(source, bad)  # never leave it where the next run would take it for the verified file
        raise UserError(
            f"{url}: sha256 {digest} but {sha256_param} expects {sha256.lower()}; moved the file to {bad}. Rerun to "
            f"download again, or if the archive changed upstream and you trust it, set {sha256_param}: {digest}"
        )
    os.replace(source, dest)
    return Fetched(url, dest, dest.stat().st_size, digest, pinned=bool(sha256))


def _forget_other_url(url: str, dest: Path, part: Path) -> None:
    """Files are named by archive, not by URL: when the URL param changes, neither a complete copy nor a partial
    one of the old URL may be reused (an unpinned sha256 would not catch it), so `<name>.url` records whose they are.
    """
    source = dest.with_name(dest.name + ".url")
    if source.is_file() and source.read_text() != url:
        print(f"download: {dest.name} came from {source.read_text()}, not {url}; downloading it again", file=sys.stderr)
        dest.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if not source.is_file() or source.read_text() != url:
        with atomic_path(source) as tmp:
            tmp.write_text(url)


def _transfer(url: str, part: Path, timeout_s: float) -> None:
    """One HTTP request appending to `part` from where it ends; raises _Dropped if the body stops short."""
    offset = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "slr-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left after `offset`: complete if the server's size agrees
            match = _CONTENT_RANGE.fullmatch(exc.headers.get("Content-Range", ""))
            if match and match.group(2) == str(offset):
                return
            part.unlink()
            raise _Dropped("the server refused to resume (HTTP 416), starting over") from None
        raise ManualDownload(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except OSError as exc:  # DNS failure, connection refused, timeout: URLError or the bare socket error
        raise ManualDownload(f"cannot reach {url} ({getattr(exc, 'reason', exc)})") from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise ManualDownload(f"{url} answered with a web page, not the zip (Google Drive asks to confirm large "
                                 "downloads in a browser)")
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if not match or match.group(1) != str(offset):
                part.unlink()
                raise _Dropped(f"the server resumed at the wrong offset ({match and match.group(1)}), starting over")
            total = int(match.group(2)) if match.group(2) != "*" else None
        elif offset:
            print(f"download: {url} ignored the Range request; starting over", file=sys.stderr)
            offset = 0
        _stream(response, part, offset, total, url)


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, url: str) -> None:
    written = offset
    with open(part, "ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.stem, leave=False
    ) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                raise _Dropped(f"connection lost after {written} bytes ({exc!r})") from None
            if not chunk:
                break
            if written == 0 and not chunk.startswith(ZIP_MAGIC):
                out.close()
                part.unlink()
                raise ManualDownload(f"{url} sent something that is not a zip archive (it starts {chunk[:16]!r})")
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    if total is not None and written < total:
        raise _Dropped(f"connection closed at {written} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def extract_zip(archive: Path, dest: Path) -> None:
    """Unpack `archive` into `dest`, refusing the whole archive if any member would land outside `dest`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                member = PurePosixPath(name.replace("\\", "/"))
                if member.is_absolute() or ".." in member.parts or ":" in name.split("/")[0]:  # or a drive (C:)
                    raise UserError(f"{archive}: unsafe member {name!r} (absolute or '..' path); not unpacking it")
            zf.extractall(dest)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{archive}: not a valid zip archive ({exc}); delete it and download it again") from None
