"""Downloading the release archives, against a real HTTP server on loopback that can drop, ignore Range or
answer with a Google-Drive-style web page."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
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

DRIVE_PAGE = b"<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>"


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv, name = self.server, self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        if name in srv.html:
            return self._send(200, DRIVE_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        body = srv.files.get(name)
        if body is None:
            return self._send(404, b"not found", {})
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match is None or name in srv.ignore_range:
            return self._send(200, body, {"Content-Type": srv.content_type}, name)
        start = int(match.group(1))
        if start >= len(body):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        headers = {"Content-Type": srv.content_type, "Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
        return self._send(206, body[start:], headers, name)

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
        self.requests: list[tuple[str, str | None]] = []  # (file, Range header) per request
        self.drop: set[str] = set()  # files whose next response stops half-way
        self.html: set[str] = set()  # files answered by a Drive confirmation page
        self.ignore_range: set[str] = set()  # files served whole even when a Range is asked for
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
    return ReleaseParams(srv.url("splits.zip"), splits_sha256, srv.url("WLASL2000.zip"), videos_sha256)


def _archives(folder: Path) -> list[str]:
    """The files in a downloads folder, but for the `.url` notes of where each came from."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".url")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    assert json.loads((raw / "source.json").read_text()) == {"source": "release", "precut": True, "resized": True}
    assert not (raw / ".unpacked").exists()
    assert report["archives"]["videos"] == {
        "url": server.url("WLASL2000.zip"), "file": "WLASL2000.zip", "bytes": len(server.files["WLASL2000.zip"]),
        "sha256": shas["WLASL2000.zip"], "pinned": True,
    }
    assert (report["glosses"], report["instances"], report["videos"], report["instances_without_video"]) == (
        len(GLOSSES), 2 * len(GLOSSES), len(ids), 1)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [
        "WLASL2000.zip", "WLASL2000.zip.url", "splits.zip", "splits.zip.url"]
    # A rerun reuses the verified archives (no request) and writes the same report.
    before = len(server.requests)
    assert from_release(release, raw, tmp_path / "downloads", Path("data/wlasl")) == report
    assert len(server.requests) == before


def test_empty_sha256_is_computed_printed_and_reported(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = from_release(_release(server), tmp_path / "raw", tmp_path / "downloads", Path("data/wlasl"))
    sha = _sha(server.files["splits.zip"])
    assert report["archives"]["splits"]["sha256"] == sha and report["archives"]["splits"]["pinned"] is False
    assert f"set data.release.splits_sha256: {sha}" in capsys.readouterr().out


def test_killed_transfer_resumes_with_a_range_request(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    dest = tmp_path / "WLASL2000.zip"
    server.drop.add("WLASL2000.zip")
    with pytest.raises(UserError, match="rerun to resume"):
        fetch(server.url("WLASL2000.zip"), dest, _sha(body), retries=0)
    part = dest.with_name("WLASL2000.zip.part")
    assert not dest.exists() and part.stat().st_size == len(body) // 2
    got = fetch(server.url("WLASL2000.zip"), dest, _sha(body), retries=0)
    assert server.requests[-1] == ("WLASL2000.zip", f"bytes={len(body) // 2}-")
    assert dest.read_bytes() == body and got.sha256 == _sha(body) and not part.exists()


def test_dropped_connection_is_retried_within_one_run(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    server.drop.add("WLASL2000.zip")
    fetch(server.url("WLASL2000.zip"), tmp_path / "v.zip", _sha(body), retries=1, backoff_s=0)
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]


def test_server_ignoring_range_restarts_from_zero(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]
    (tmp_path / "v.zip.part").write_bytes(body[:100])
    server.ignore_range.add("WLASL2000.zip")
    fetch(server.url("WLASL2000.zip"), tmp_path / "v.zip", _sha(body))
    assert (tmp_path / "v.zip").read_bytes() == body


def test_complete_part_answered_416_is_used(server: LoopbackServer, tmp_path: Path) -> None:
    body = server.files["WLASL2000.zip"]  # a run killed between the last byte and the rename
    (tmp_path / "v.zip.part").write_bytes(body)
    got = fetch(server.url("WLASL2000.zip"), tmp_path / "v.zip", _sha(body))
    assert got.bytes == len(body) and server.requests == [("WLASL2000.zip", f"bytes={len(body)}-")]


def test_sha256_mismatch_unpacks_nothing(server: LoopbackServer, tmp_path: Path) -> None:
    actual = _sha(server.files["WLASL2000.zip"])
    with pytest.raises(UserError) as exc:
        from_release(_release(server, videos_sha256="ab" * 32), tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    message = str(exc.value)
    assert f"sha256 {actual} but data.release.videos_sha256 expects {'ab' * 32}" in message
    assert f"set data.release.videos_sha256: {actual}" in message and "\n" not in message
    assert not (tmp_path / "raw").exists()
    assert _archives(tmp_path / "dl") == ["WLASL2000.zip.bad", "splits.zip"]


@pytest.mark.parametrize(("html", "content_type", "message"), [
    (True, "", "answered with a web page, not the zip (Google Drive asks to confirm"),
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


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("base", [f"http://127.0.0.1:{_closed_port()}", "http://wlasl-archives.invalid"])
def test_offline_fails_fast_with_hand_download_instructions(base: str, tmp_path: Path) -> None:
    release = ReleaseParams(f"{base}/splits.zip", "", f"{base}/WLASL2000.zip", "")
    start = time.monotonic()
    with pytest.raises(UserError) as exc:
        from_release(release, tmp_path / "raw", tmp_path / "dl", Path("data/wlasl"))
    assert time.monotonic() - start < 5
    message = str(exc.value)
    assert message.startswith(f"cannot reach {base}/splits.zip")
    assert (f"download by hand {base}/splits.zip to data/wlasl/splits.zip and {base}/WLASL2000.zip to "
            "data/wlasl/WLASL2000.zip, then set data.source: local") in message
    assert not (tmp_path / "raw").exists()


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (the kernel's backlog) but never replies
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        start = time.monotonic()
        with pytest.raises(ManualDownload, match="cannot reach .*timed out"):
            fetch(f"http://127.0.0.1:{sock.getsockname()[1]}/x.zip", tmp_path / "x.zip", timeout_s=0.5)
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
    params["data"].update(source="release", release={"splits_url": server.url("splits.zip"), "splits_sha256": "",
                                                      "videos_url": server.url("WLASL2000.zip"), "videos_sha256": ""})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, str(REPO / "stages/download.py"), "raw", "download.json", "--downloads", "dl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {server.url('splits.zip')} answered with a web page")
    assert "download by hand" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "download.json").exists()


def test_a_changed_url_is_downloaded_again(server: LoopbackServer, tmp_path: Path) -> None:
    server.files["other.zip"] = server.files["splits.zip"] + b"another release"  # not a valid zip: content only
    dest = tmp_path / "splits.zip"
    first = fetch(server.url("splits.zip"), dest)
    second = fetch(server.url("other.zip"), dest)  # same file name, another URL, no sha256 pinned
    assert first.sha256 == _sha(server.files["splits.zip"]) and second.sha256 == _sha(server.files["other.zip"])
    assert dest.read_bytes() == server.files["other.zip"]
    assert (tmp_path / "splits.zip.url").read_text() == server.url("other.zip")
