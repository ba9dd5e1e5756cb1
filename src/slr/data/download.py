"""Fetching one archive over HTTP(S) from the first of its URLs that serves it: resumable, sha256-verified before
use, and safe to unpack.

A WLASL archive is gigabytes on servers that drop connections, redirect (GitHub's release assets), and sometimes
answer with a web page (Google Drive's "can't scan this file for viruses" form, which is submitted once). So the
transfer goes to `<name>.part`, which survives a killed run and is resumed with an HTTP Range request made
conditional (If-Range) on the validator the server gave when the transfer began, so that two versions of the file
are never joined; it becomes `<name>` only after its sha256 is checked; a copy that fails its pinned sha256 is kept
as `<name>.bad` until a corrected pin reuses it or a good copy replaces it; and anything that is not a zip is
refused before a byte of it is unpacked. Each file has a record beside it, `<file>.json`: the URL it came from and
the validator, which moves with it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from slr.errors import UserError
from slr.files import read_json, write_json

CHUNK = 1 << 20
TIMEOUT_S = 15.0  # per connect and per read: offline fails in seconds, a slow but live server still gets through
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local file header, or the end record of an empty zip
PAGE_LIMIT = 1 << 20  # Drive's confirmation page is a few kB; read no more of a web page than this
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class ManualDownload(UserError):
    """This code cannot fetch the file (offline, refused, or a web page instead of it): a person must."""


class _Dropped(Exception):
    """The transfer stopped early; what arrived is kept in the .part file and the next attempt resumes it."""


class _Restart(_Dropped):
    """The .part file cannot be continued (another version of the file, a bad resume): the next attempt starts over."""


@dataclass(frozen=True)
class Origin:
    """Where a downloaded file came from: the record `<file>.json` beside it."""

    url: str  # the URL as listed in params (not a redirect's target: GitHub's signed URLs expire)
    validator: str = ""  # the server's strong ETag, else its Last-Modified: sent as If-Range to resume
    size: int | None = None  # the whole file's size as the server announced it
    sha256: str = ""  # known once the file is complete; lets a corrected pin find its .bad copy


@dataclass(frozen=True)
class Fetched:
    url: str  # the URL that served the file
    path: Path
    bytes: int
    sha256: str
    pinned: bool  # True: matched the sha256 given in params; False: computed here because none was given


def fetch(
    urls: Sequence[str],
    dest: Path,
    sha256: str = "",
    sha256_param: str = "the sha256 param",
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = TIMEOUT_S,
) -> Fetched:
    """Make `dest` a complete, verified copy of the file at `urls` (tried in order), downloading (or resuming
    `dest.part`) only when needed.

    Args:
        sha256: expected hex digest; empty means "compute it and report it" (first download of an unpinned file).
        sha256_param: the params key holding `sha256`, named in the mismatch message.
        retries: further attempts after a dropped connection, waiting backoff_s, 2*backoff_s, ... between them.
    """
    part, bad = _beside(dest, ".part"), _beside(dest, ".bad")
    for path in (dest, part, bad):
        _forget_unlisted(path, urls)
    if not dest.is_file():
        _reuse_bad(bad, dest, sha256.lower())
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _download(urls, part, retries, backoff_s, timeout_s)
    source = dest if dest.is_file() else part
    origin = _origin(source)
    assert origin is not None  # _forget_unlisted removed any file without its record
    digest = sha256_file(source)
    if sha256 and digest != sha256.lower():
        _move(source, bad, replace(origin, sha256=digest))  # never where the next run would take it for verified
        raise UserError(
            f"{origin.url}: sha256 {digest} but {sha256_param} expects {sha256.lower()}; moved the file to {bad}. If "
            f"the archive changed upstream and you trust it, set {sha256_param}: {digest} and rerun (the file is "
            "reused, not downloaded again); otherwise rerun to download it again (the .bad file is then deleted)"
        )
    _move(source, dest, replace(origin, sha256=digest))
    if bad.is_file():
        _delete(bad)
        print(f"download: deleted {bad} (the copy that failed its sha256), now that {dest} is good", file=sys.stderr)
    return Fetched(origin.url, dest, dest.stat().st_size, digest, pinned=bool(sha256))


def _forget_unlisted(path: Path, urls: Sequence[str]) -> None:
    """Files are named by archive, not by URL: a copy (complete, partial or bad) from a URL no longer listed may not
    be reused, since an unpinned sha256 would not catch it; nor may one whose record is lost."""
    origin = _origin(path)
    if path.is_file() and (origin is None or origin.url not in urls):
        came = f"came from {origin.url}, which is no longer listed" if origin else "has no record of its URL"
        print(f"download: {path} {came}; deleting it", file=sys.stderr)
        _delete(path)


def _reuse_bad(bad: Path, dest: Path, sha256: str) -> None:
    """After a wrong pin is corrected, the copy it rejected is the right one: gigabytes not to download again."""
    origin = _origin(bad)
    if sha256 and origin is not None and origin.sha256 == sha256:  # fetch hashes it again before it is used
        print(f"download: {bad} has the pinned sha256; using it instead of downloading again", file=sys.stderr)
        _move(bad, dest, origin)


def _download(urls: Sequence[str], part: Path, retries: int, backoff_s: float, timeout_s: float) -> None:
    """Complete `part` from the first URL that serves the file. The URL a partial transfer came from goes first,
    so that it is resumed rather than restarted from another server (whose validator could not vouch for it)."""
    started = _origin(part)
    order = sorted(urls, key=lambda url: started is None or url != started.url)  # stable: params order otherwise
    failures = []
    for k, url in enumerate(order):
        try:
            _download_from(url, part, retries, backoff_s, timeout_s)
            return
        except ManualDownload as exc:
            failures.append(str(exc))
            if k + 1 < len(order):
                print(f"download: {exc}; trying {order[k + 1]}", file=sys.stderr)
    raise ManualDownload("; ".join(failures))


def _download_from(url: str, part: Path, retries: int, backoff_s: float, timeout_s: float) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout_s)
            return
        except _Dropped as exc:
            if isinstance(exc, _Restart):
                _delete(part)
            if attempt == retries:
                raise UserError(
                    f"{url}: {exc}, gave up after {retries + 1} attempt(s); the {_size(part)} bytes received are "
                    f"kept in {part}: rerun to resume"
                ) from None
            wait = backoff_s * 2**attempt
            print(f"download: {url}: {exc}; retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)


def _transfer(url: str, part: Path, timeout_s: float) -> None:
    """One HTTP request appending to `part` from where it ends; raises _Dropped if the body stops short."""
    started = _origin(part)
    if started is None or started.url != url:
        started, offset = Origin(url), 0  # nothing of this URL's to resume (a part from another is kept until then)
    else:
        offset = _size(part)
    headers = {"User-Agent": "slr-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if started.validator:  # the server sends the whole (new) file instead if it is no longer this version
            headers["If-Range"] = started.validator
    try:
        response = _open(url, headers, timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left after `offset`: complete if the server's size agrees
            match = _CONTENT_RANGE.fullmatch(exc.headers.get("Content-Range", ""))
            if match and match.group(2) == str(offset):
                return
            raise _Restart("the server refused to resume (HTTP 416), starting over") from None
        raise ManualDownload(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # DNS failure, refused, timeout, reset, bad status line
        raise ManualDownload(f"cannot reach {url} ({getattr(exc, 'reason', exc)})") from None
    with response:
        offset, total = _body_offset(response, url, offset, started)
        _stream(response, part, offset, total, Origin(url, _validator(response.headers), total))


def _body_offset(response: http.client.HTTPResponse, url: str, offset: int, started: Origin) -> tuple[int, int | None]:
    """Where the response's body goes in the part (`offset`, or 0 for the whole file) and the file's whole size.

    Raises _Restart when a 206 does not continue the part: wrong offset, or another version of the
    file, which a server that ignores If-Range still shows in its validator or size.
    """
    validator = _validator(response.headers)
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        total = int(match.group(2)) if match and match.group(2) != "*" else None
        if not match or match.group(1) != str(offset):
            raise _Restart(f"the server resumed at the wrong offset ({match and match.group(1)}), starting over")
        if (validator and started.validator and validator != started.validator) or (
            total and started.size and total != started.size
        ):
            raise _Restart("the file changed on the server since the transfer began, starting over")
        return offset, total
    if offset:  # a 200 to a Range request: the whole file, either changed (If-Range failed) or from a plain server
        why = "changed on the server since the transfer began" if validator != started.validator else (
            "ignored the Range request")
        print(f"download: {url} {why}; starting over", file=sys.stderr)
    length = response.headers.get("Content-Length")
    return 0, int(length) if length is not None else None


def _open(url: str, headers: dict[str, str], timeout_s: float) -> http.client.HTTPResponse:
    """GET `url` (following redirects with the same headers); Google Drive's confirmation page for large files is
    answered by submitting its form, as a browser's "Download anyway" does."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # Drive may set a cookie to confirm
    response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    if response.headers.get_content_type() != "text/html":
        return response
    with response:
        confirmed = _drive_confirmation(response.read(PAGE_LIMIT).decode("utf-8", "replace"), response.url)
    if confirmed is None:
        raise ManualDownload(f"{url} answered with a web page, not the zip, and no download form to follow in it "
                             "(open it in a browser: Google Drive may be over its download quota)")
    response = opener.open(urllib.request.Request(confirmed, headers=headers), timeout=timeout_s)
    if response.headers.get_content_type() == "text/html":
        response.close()
        raise ManualDownload(f"{url} answered with a web page again after its download form was submitted")
    return response


class _DriveForm(HTMLParser):
    """Drive's page: `<form id="download-form" action=".../download">` with hidden id, export, confirm, uuid.

    gdown (6.5.1) follows this page too, but resuming a killed run it takes If-Range's validator from the new run's
    first response, so it cannot tell that the file changed in between; it keeps randomly named partial files and
    brings requests and beautifulsoup4. The form is this much.
    """

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: list[tuple[str, str]] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {key: value or "" for key, value in attrs}
        if tag == "form" and attr.get("id") == "download-form":
            self.action, self._inside = attr.get("action", ""), True
        elif tag == "input" and self._inside and attr.get("type") == "hidden" and attr.get("name"):
            self.fields.append((attr["name"], attr.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        self._inside = self._inside and tag != "form"


def _drive_confirmation(page: str, base: str) -> str | None:
    """The URL Drive's "Download anyway" button requests (its form's action with the hidden fields), or None."""
    form = _DriveForm()
    form.feed(page)
    if form.action is None:
        return None
    action = urllib.parse.urlsplit(urllib.parse.urljoin(base, form.action))
    query = urllib.parse.parse_qsl(action.query) + form.fields
    return urllib.parse.urlunsplit(action._replace(query=urllib.parse.urlencode(query)))


def _validator(headers: Message) -> str:
    """What identifies this version of the file: a strong ETag (If-Range refuses weak ones), else Last-Modified."""
    etag = headers.get("ETag", "")
    return etag if etag and not etag.startswith("W/") else headers.get("Last-Modified", "")


def _stream(response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, origin: Origin) -> None:
    """Append the body to `part` at `offset`; from zero, the old part and its record are replaced, never mixed."""
    chunk, written = _read(response, offset), offset
    if offset == 0:
        if not chunk.startswith(ZIP_MAGIC):
            raise ManualDownload(f"{origin.url} sent something that is not a zip archive (it starts {chunk[:16]!r})")
        _delete(part)  # before the new record: a crash in between leaves nothing to resume, not a mix
        write_json(_record(part), asdict(origin))
    with open(part, "ab") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.stem, leave=False
    ) as bar:
        while chunk:
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
            chunk = _read(response, written)
    if total is not None and written < total:
        raise _Dropped(f"connection closed at {written} of {total} bytes")


def _read(response: http.client.HTTPResponse, written: int) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
        raise _Dropped(f"connection lost after {written} bytes ({exc!r})") from None


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _record(path: Path) -> Path:
    return _beside(path, ".json")


def _origin(path: Path) -> Origin | None:
    """The record of `path`, if both exist (a record alone, left by a crash, describes nothing)."""
    record = _record(path)
    if not (path.is_file() and record.is_file()):
        return None
    try:
        return Origin(**read_json(record))
    except (ValueError, TypeError):  # not JSON, or not this record's fields
        return None


def _move(src: Path, dst: Path, origin: Origin) -> None:
    """Rename a file and its record together. The new record goes first: a crash in between leaves `dst` with a
    record that fetch's own sha256 check still verifies, or `src` whose record is gone and is then downloaded again.
    """
    write_json(_record(dst), asdict(origin))
    if src != dst:
        os.replace(src, dst)
        _record(src).unlink(missing_ok=True)


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)
    _record(path).unlink(missing_ok=True)


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
