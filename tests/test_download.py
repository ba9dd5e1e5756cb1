"""Downloading the release archives, against a real HTTP server on loopback that behaves like each host: GitHub's
release assets (a redirect to storage that serves Range and ETag), Google Drive (a redirect, then a "can't scan this
file" page whose form must be submitted), and a plain server that can drop, ignore Range or change its file."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from slr.data.download import ManualDownload, extract_zip, fetch
from slr.data.sources import from_release
from slr.errors import UserError
from slr.params import ReleaseParams
from wlasl_files import GLOSSES, index_entries, release_archives, video_bytes, video_ids, write_zip

DRIVE_PAGE = b"<!DOCTYPE html><html><title>Google Drive - Too many users have viewed this file</title></html>"
# Drive's page for a file too large to scan, as drive.usercontent.google.com serves it (one line, trimmed).
DRIVE_FORM = (
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body><div class="uc-main">'
    '<p class="uc-warning-caption">Google Drive can&#39;t scan this file for viruses.</p><form id="download-form" '
    'action="{action}" method="get"><input type="submit" id="uc-download-link" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">'
    '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form></div>'
    "</body></html>"
)


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv, url = self.server, urllib.parse.urlsplit(self.path)
        name, query = url.path.lstrip("/"), dict(urllib.parse.parse_qsl(url.query))
        srv.requests.append((name, self.headers.get("Range"), self.headers.get("If-Range")))
        if name in srv.redirects:  # GitHub: the release asset URL redirects to a signed storage URL
            return self._send(302, b"", {"Location": f"/{srv.redirects[name]}?sig={uuid.uuid4().hex}"})
        if name == "uc":  # Drive: drive.google.com/uc?export=download&id=... -> drive.usercontent.google.com
            return self._send(303, b"", {"Location": f"/download?id={query['id']}&export=download"})
        if name == "download":  # the file only with the confirm and uuid of a page it served
            if query.get("confirm") != "t" or query.get("uuid") not in srv.uuids:
                token = uuid.uuid4().hex
                srv.uuids.add(token)
                page = DRIVE_FORM.format(action=srv.url("download"), id=query["id"], uuid=token)
                return self._send(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})
            name = srv.drive[query["id"]]
        if name in srv.html:
            return self._send(200, DRIVE_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        body = srv.files.get(name)
        if body is None:
            return self._send(404, b"not found", {})
        headers = {"Content-Type": srv.content_type, "ETag": f'"{_sha(body)[:16]}"'}
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        current = if_range in (None, headers["ETag"]) or name in srv.ignore_if_range
        if match is None or name in srv.ignore_range or not current:
            return self._send(200, body, headers, name)
        start = int(match.group(1))
        if start >= len(body):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        return self._send(206, body[start:], {**headers, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"},
                          name)

    def _send(self, status: int, payload: bytes, headers: dict[str, str], name: str = "") -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if name in self.server.drop:  # promise the whole body, send half, hang up: a dropped connection
            self.server.drop.discard(name)
            payload = payload[: len(payload) // 2]
            self.close_connection = True
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []  # (path, Range, If-Range) per request
        self.drop: set[str] = set()  # files whose next response stops half-way
        self.html: set[str] = set()  # files answered by a Drive page without a form (quota exceeded)
        self.ignore_range: set[str] = set()  # files served whole even when a Range is asked for
        self.ignore_if_range: set[str] = set()  # files served from the Range even when If-Range no longer matches
        self.redirects: dict[str, str] = {}  # path -> the path it redirects to (GitHub's release assets)
        self.drive: dict[str, str] = {}  # Drive file id -> the file it serves once confirmed
        self.uuids: set[str] = set()  # the uuids of the confirmation pages served
        self.content_type = "application/zip"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    for archive in release_archives(tmp_path / "served"):
        srv.files[archive.name] = archive.read_bytes()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _release(srv: LoopbackServer, splits_sha256: str = "", videos_sha256: str = "") -> ReleaseParams:
    return ReleaseParams((srv.url("splits.zip"),), splits_sha256, (srv.url("WLASL2000.zip"),), videos_sha256)


def _archives(folder: Path) -> list[str]:
    """The files in a downloads folder, but for the `.json` records of where each came from."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".json")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_full_download_unpacks_the_raw_contract(server: LoopbackServer, tmp_path: Path) -> None:
    shas = {name: _sha(body) for name, body in server.files.items()}
    release = _release(server, shas["splits.zip"], shas["WLASL2000.zip"])
    report = from_release(release, tmp_path / "raw", tmp_path / "downloads", Path("data/wlasl"))
    raw = tmp_path / "raw"
    assert json.loads((raw / "WLASL_v0.3.json").read_text()) == index_entries()  # the split with most glosses
    assert sorted(p.name for p in (raw / "splits").iterdir()) == ["asl2.json", "asl3.json"]
    ids = video_ids()[:-1]
    assert sorted(p.stem for p in (raw / "videos").iterdir()) == ids
    assert all((raw / "videos" / f"{i}.mp4").read_bytes() == video_bytes(i) for i in ids)
    source = json.loads((raw / "source.json").read_text())
    assert (source["source"], source["precut"], source["resized"], source["copy"]["files"]) == (
        "release", True, True, 2)  # the copy: the two archives
    assert not (raw / ".unpacked").exists()
    assert report["archives"]["videos"] == {
        "url": server.url("WLASL2000.zip"), "file": "WLASL2000.zip", "bytes": len(server.files["WLASL2000.zip"]),
        "sha256": shas["WLASL2000.zip"], "pinned": True,
    }
    assert (report["glosses"], report["instances"], report["videos"], report["instances_without_video"]) == (
        len(GLOSSES), 2 * len(GLOSSES), len(ids), 1)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [
        "WLASL2000.zip", "WLASL2000.zip.json", "splits.zip", "splits.zip.json"]
    # A rerun reuses the verified archives (no request) and writes the same report.
    before = len(server.requests)
    assert from_release(release, raw, tmp_path / "downloads", Path("data/wlasl")) == report
    assert len(server.requests) == before


def test_repository_params_point_release_at_the_github_release_first() -> None:
    release = yaml.safe_load((REPO / "params.yaml").read_text())["data"]["release"]
    github = "https://github.com/0p3nTheSauce/SLR/releases/download/v1.0/"
    assert release["splits_urls"][0] == github + "splits.zip" and release["videos_urls"][0] == github + "WLASL2000.zip"
    assert all(urls[1].startswith("https://drive.google.com/uc?export=download&id=")
               for urls in (release["splits_urls"], release["videos_urls"]))


def test_empty_sha256_is_computed_printed_and_reported(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = from_release(_release(server), tmp_path / "raw", tmp_path / "downloads", Path("data/wlasl"))
    sha = _sha(server.files["splits.zip"])
    assert report["archives"]["splits"]["sha256"] == sha and report["archives"]["splits"]["pinned"] is False
    assert f"set data.release.splits_sha256: {sha}" in capsys.readouterr().out


def test_killed_transfer_resumes_with_a_conditional_range_request(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    dest = tmp_path / "WLASL2000.zip"
    server.drop.add("WLASL2000.zip")
    with pytest.raises(UserError, match="rerun to resume"):
        fetch([server.url("WLASL2000.zip")], dest, _sha(body), retries=0)
    part = dest.with_name("WLASL2000.zip.part")
    assert not dest.exists() and part.stat().st_size == len(body) // 2
    got = fetch([server.url("WLASL2000.zip")], dest, _sha(body), retries=0)
    assert server.requests[-1] == ("WLASL2000.zip", f"bytes={len(body) // 2}-", f'"{_sha(body)[:16]}"')
    assert dest.read_bytes() == body and got.sha256 == _sha(body) and not part.exists()


def test_dropped_connection_is_retried_within_one_run(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    server.drop.add("WLASL2000.zip")
    fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", _sha(body), retries=1, backoff_s=0)
    assert [r for _, r, _ in server.requests] == [None, f"bytes={len(body) // 2}-"]


@pytest.mark.parametrize("honours_if_range", [True, False])
def test_a_file_changed_on_the_server_is_restarted_not_joined(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], honours_if_range: bool
) -> None:
    old = server.files["WLASL2000.zip"]
    new = write_zip(tmp_path / "new.zip", {"WLASL2000/00000.mp4": b"re-encoded" * 300}).read_bytes()
    server.drop.add("WLASL2000.zip")
    with pytest.raises(UserError, match="rerun to resume"):
        fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", retries=0)
    server.files["WLASL2000.zip"] = new  # replaced upstream between the killed run and its rerun
    if not honours_if_range:  # it answers the Range from the new file: only the changed ETag tells
        server.ignore_if_range.add("WLASL2000.zip")
    got = fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", retries=1, backoff_s=0)
    assert (tmp_path / "v.zip").read_bytes() == new and got.sha256 == _sha(new)
    assert server.requests[1] == ("WLASL2000.zip", f"bytes={len(old) // 2}-", f'"{_sha(old)[:16]}"')
    # Honoured, the conditional request itself brings the whole new file; ignored, one more request from zero.
    assert server.requests[2:] == ([] if honours_if_range else [("WLASL2000.zip", None, None)])
    lines = capsys.readouterr().err.splitlines()
    assert sum("changed on the server since the transfer began" in line for line in lines) == 1


def test_server_ignoring_range_restarts_from_zero(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    server.drop.add("WLASL2000.zip")
    with pytest.raises(UserError, match="rerun to resume"):
        fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", retries=0)
    server.ignore_range.add("WLASL2000.zip")
    fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", _sha(body))
    assert (tmp_path / "v.zip").read_bytes() == body


def test_complete_part_answered_416_is_used(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]  # a run killed between the last byte and the rename
    server.drop.add("WLASL2000.zip")
    with pytest.raises(UserError, match="rerun to resume"):
        fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", retries=0)
    (tmp_path / "v.zip.part").write_bytes(body)
    got = fetch([server.url("WLASL2000.zip")], tmp_path / "v.zip", _sha(body))
    assert got.bytes == len(body) and server.requests[-1][:2] == ("WLASL2000.zip", f"bytes={len(body)}-")


def test_github_release_redirect_is_followed_with_range_and_if_range(server: LoopbackServer, tmp_path: Path) -> None:
    body, asset = server.files["WLASL2000.zip"], "0p3nTheSauce/SLR/releases/download/v1.0/WLASL2000.zip"
    server.redirects[asset] = "storage/WLASL2000.zip"
    server.files["storage/WLASL2000.zip"] = body
    server.drop.add("storage/WLASL2000.zip")
    got = fetch([server.url(asset)], tmp_path / "v.zip", _sha(body), retries=1, backoff_s=0)
    assert got.url == server.url(asset) and (tmp_path / "v.zip").read_bytes() == body  # the listed URL, not storage's
    resume = (f"bytes={len(body) // 2}-", f'"{_sha(body)[:16]}"')  # sent to the asset URL and kept on the redirect
    assert server.requests == [(asset, None, None), ("storage/WLASL2000.zip", None, None),
                               (asset, *resume), ("storage/WLASL2000.zip", *resume)]


def test_drive_confirmation_form_is_submitted(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    server.drive["1Rv_8ZE6VDQDaY8tbJUucx1E8mcdUp-xX"] = "WLASL2000.zip"
    url = server.url("uc?export=download&id=1Rv_8ZE6VDQDaY8tbJUucx1E8mcdUp-xX")
    server.drop.add("WLASL2000.zip")
    got = fetch([url], tmp_path / "v.zip", _sha(body), retries=1, backoff_s=0)
    assert got.url == url and (tmp_path / "v.zip").read_bytes() == body
    # Each attempt: uc -> download (the page) -> download?...&confirm=t&uuid=... (the file, resumed the second time)
    assert [path for path, _, _ in server.requests] == ["uc", "download", "download"] * 2
    assert server.requests[-1][1:] == (f"bytes={len(body) // 2}-", f'"{_sha(body)[:16]}"')


def test_unreachable_primary_falls_back_to_the_next_url(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/splits.zip"
    release = ReleaseParams((dead, server.url("splits.zip")), "", (server.url("nowhere.zip"),
                                                                   server.url("WLASL2000.zip")), "")
    report = from_release(release, tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    assert report["archives"]["splits"]["url"] == server.url("splits.zip")
    assert report["archives"]["videos"]["url"] == server.url("WLASL2000.zip")
    err = capsys.readouterr().err
    assert f"download: cannot reach {dead} (" in err and f"; trying {server.url('splits.zip')}" in err
    assert f"{server.url('nowhere.zip')} answered HTTP 404 Not Found; trying {server.url('WLASL2000.zip')}" in err


def test_a_partial_transfer_resumes_from_its_own_url_first(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    server.files["mirror.zip"] = body
    server.drop.add("mirror.zip")
    dead = f"http://127.0.0.1:{_closed_port()}/WLASL2000.zip"
    with pytest.raises(UserError, match="rerun to resume"):  # the primary was down: the mirror started the part
        fetch([dead, server.url("mirror.zip")], tmp_path / "v.zip", retries=0)
    got = fetch([server.url("WLASL2000.zip"), server.url("mirror.zip")], tmp_path / "v.zip", _sha(body))
    assert got.url == server.url("mirror.zip") and server.requests[-1][:2] == ("mirror.zip", f"bytes={len(body) // 2}-")


def test_sha256_mismatch_unpacks_nothing(server: LoopbackServer, tmp_path: Path) -> None:
    actual = _sha(server.files["WLASL2000.zip"])
    with pytest.raises(UserError) as exc:
        from_release(_release(server, videos_sha256="ab" * 32), tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    message = str(exc.value)
    assert f"sha256 {actual} but data.release.videos_sha256 expects {'ab' * 32}" in message
    assert f"set data.release.videos_sha256: {actual} and rerun (the file is reused" in message
    assert "\n" not in message and not (tmp_path / "raw").exists()
    assert _archives(tmp_path / "dl") == ["WLASL2000.zip.bad", "splits.zip"]


def test_a_corrected_pin_reuses_the_bad_copy(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    with pytest.raises(UserError, match="expects"):
        fetch([server.url("WLASL2000.zip")], tmp_path / "dl" / "v.zip", "ab" * 32)
    before = len(server.requests)
    got = fetch([server.url("WLASL2000.zip")], tmp_path / "dl" / "v.zip", _sha(body))
    assert len(server.requests) == before and got.url == server.url("WLASL2000.zip")
    assert (tmp_path / "dl" / "v.zip").read_bytes() == body and _archives(tmp_path / "dl") == ["v.zip"]


def test_the_bad_copy_is_deleted_once_a_good_one_arrives(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = server.files["WLASL2000.zip"]
    server.files["WLASL2000.zip"] = good[:-1] + bytes([good[-1] ^ 1])  # corrupt upstream, then fixed
    with pytest.raises(UserError, match="expects"):
        fetch([server.url("WLASL2000.zip")], tmp_path / "dl" / "v.zip", _sha(good))
    assert _archives(tmp_path / "dl") == ["v.zip.bad"]
    server.files["WLASL2000.zip"] = good
    fetch([server.url("WLASL2000.zip")], tmp_path / "dl" / "v.zip", _sha(good))
    assert (tmp_path / "dl" / "v.zip").read_bytes() == good and _archives(tmp_path / "dl") == ["v.zip"]
    assert f"deleted {tmp_path / 'dl' / 'v.zip.bad'} (the copy that failed its sha256)" in capsys.readouterr().err


@pytest.mark.parametrize(("html", "content_type", "message"), [
    (True, "", "answered with a web page, not the zip, and no download form to follow in it"),
    (False, "application/octet-stream", "sent something that is not a zip archive"),
])
def test_a_web_page_is_never_taken_for_the_archive(
    server: LoopbackServer, tmp_path: Path, html: bool, content_type: str, message: str
) -> None:
    if html:
        server.html.add("splits.zip")
    else:
        server.files["splits.zip"] = DRIVE_PAGE
        server.content_type = content_type
    with pytest.raises(UserError, match=re.escape(message)) as exc:
        from_release(_release(server), tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    assert "download by hand" in str(exc.value) and "data/wlasl/splits.zip" in str(exc.value)
    assert not (tmp_path / "raw").exists() and _archives(tmp_path / "dl") == []


def test_offline_fails_fast_naming_every_url_and_the_hand_download(tmp_path: Path) -> None:
    closed, invalid = f"http://127.0.0.1:{_closed_port()}", "http://wlasl-archives.invalid"
    release = ReleaseParams((f"{closed}/splits.zip", f"{invalid}/splits.zip"), "",
                            (f"{closed}/WLASL2000.zip", f"{invalid}/WLASL2000.zip"), "")
    start = time.monotonic()
    with pytest.raises(UserError) as exc:
        from_release(release, tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    assert time.monotonic() - start < 5
    message = str(exc.value)
    assert re.fullmatch(
        rf"could not download splits\.zip: cannot reach {closed}/splits\.zip \(.+\); cannot reach "
        rf"{invalid}/splits\.zip \(.+\); download by hand splits\.zip \({closed}/splits\.zip or {invalid}/splits\.zip\)"
        rf" to data/wlasl/splits\.zip and WLASL2000\.zip \({closed}/WLASL2000\.zip or {invalid}/WLASL2000\.zip\) to "
        r"data/wlasl/WLASL2000\.zip, then set data\.source: local", message)
    assert not (tmp_path / "raw").exists()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (the kernel's backlog) but never replies
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        start = time.monotonic()
        with pytest.raises(ManualDownload, match="cannot reach .*timed out"):
            fetch([f"http://127.0.0.1:{sock.getsockname()[1]}/x.zip"], tmp_path / "x.zip", timeout_s=0.5)
        assert time.monotonic() - start < 3


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "splits/../../evil.txt"])
def test_unsafe_zip_members_are_refused(tmp_path: Path, member: str) -> None:
    archive = write_zip(tmp_path / "bad.zip", {"ok.txt": b"fine", member: b"evil"})
    with pytest.raises(UserError, match="unsafe member"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_stage_prints_one_line_error(server: LoopbackServer, tmp_path: Path) -> None:
    server.html.add("splits.zip")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="release", release={
        "splits_urls": [server.url("splits.zip")], "splits_sha256": "",
        "videos_urls": [server.url("WLASL2000.zip")], "videos_sha256": "",
    })
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/download.py"), "raw", "download.json", "--downloads", "dl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith(f"error: could not download splits.zip: {server.url('splits.zip')} answered with a web")
    assert "download by hand" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "download.json").exists()


def test_a_changed_url_is_downloaded_again(server: LoopbackServer, tmp_path: Path) -> None:
    server.files["other.zip"] = server.files["splits.zip"] + b"another release"  # not a valid zip: content only
    dest = tmp_path / "splits.zip"
    first = fetch([server.url("splits.zip")], dest)
    second = fetch([server.url("other.zip")], dest)  # same file name, another URL, no sha256 pinned
    assert first.sha256 == _sha(server.files["splits.zip"]) and second.sha256 == _sha(server.files["other.zip"])
    assert dest.read_bytes() == server.files["other.zip"] and second.url == server.url("other.zip")
    assert json.loads((tmp_path / "splits.zip.json").read_text())["url"] == server.url("other.zip")
