"""Obtaining verified raw files: cache, offline mirror, and a real download from a local HTTP server."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import shutil
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedem.data.fetch import ensure_raw, git_blob_of, resolve_mirror, sha256_of, verify
from fedem.data.registry import DATASETS, DatasetSpec
from fedem.errors import ChecksumError, DataError, DatasetUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("FEDEM_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "datasets")
TIMEOUT_S = 5.0

RAW = b"1::1193::5::978300760\r\n1::661::3::978302109\r\n2::1193::4::978300000"  # CRLF, no final newline


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if not p.is_dir()) if path.exists() else []


def require_mirror() -> Path:
    if not MIRROR.is_dir():
        pytest.skip(f"offline mirror {MIRROR} is absent (set FEDEM_DATA_MIRROR to run this test)")
    return MIRROR


def mirror_state() -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(MIRROR)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(MIRROR.rglob("*"))
    }


@pytest.fixture(autouse=True)
def mirror_untouched() -> Iterator[None]:
    """Every test in this file must leave the read-only mirror exactly as it was."""
    before = mirror_state() if MIRROR.is_dir() else None
    yield
    if before is not None:
        assert mirror_state() == before, "the offline mirror was modified"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _TruncatingHandler(_QuietHandler):
    """Promises more bytes than it sends, like a connection dropped mid-download."""

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"PK\x03\x04 only the start of a zip")
        self.close_connection = True


class LocalServer:
    """A real HTTP server on 127.0.0.1, serving one folder, on a background thread."""

    def __init__(self, root: Path, handler_class: type[SimpleHTTPRequestHandler] = _QuietHandler) -> None:
        self.root = root
        handler = functools.partial(handler_class, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval: shutdown() waits up to one interval, and every test stops a server.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def publish(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"

    def stop(self) -> None:
        self.httpd.shutdown()  # a no-op the second time
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = LocalServer(root)
    try:
        yield srv
    finally:
        srv.stop()


def tiny_spec(url: str, archive: bytes | None, member: str | None = "pkg/ratings.dat", raw: bytes = RAW) -> DatasetSpec:
    """An ml-1m-like spec for the tiny test dataset, with the true checksums of `archive` and `raw`."""
    return dataclasses.replace(
        DATASETS["ml-1m"],
        key="tiny",
        url=url,
        archive_sha256=sha256(archive) if archive is not None else None,
        member=member,
        filename="ratings.dat",
        sha256=sha256(raw),
        git_blob=hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest(),
    )


# ------------------------------------------------------------------------------------------ hashes


def test_hashes(tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello\n")
    assert git_blob_of(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`
    assert sha256_of(path) == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"


def test_verify_git_blob_only(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_bytes(RAW)
    spec = dataclasses.replace(tiny_spec("http://x/y.zip", None), sha256=None)
    verify(path, spec)
    path.write_bytes(RAW + b"\n")
    with pytest.raises(ChecksumError) as info:
        verify(path, spec)
    message = str(info.value)
    assert str(path) in message and spec.git_blob in message and git_blob_of(path) in message


# ------------------------------------------------------------------------------- the online path


def test_download_extract_verify_then_cache(tmp_path: Path, server: LocalServer) -> None:
    archive = make_zip({"pkg/ratings.dat": RAW, "pkg/README": b"tiny"})
    spec = tiny_spec(server.publish("tiny.zip", archive), archive)
    raw_dir = tmp_path / "raw"

    path = ensure_raw(spec, raw_dir, mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert path == raw_dir / "tiny" / "ratings.dat"
    assert path.read_bytes() == RAW
    assert files_under(raw_dir) == [path]  # the archive and the temp files are gone
    assert spec.parser(path)["item"].tolist() == ["1193", "661", "1193"]

    server.stop()  # from now on any network access would fail
    assert ensure_raw(spec, raw_dir, mirror=None, allow_download=True, timeout_s=TIMEOUT_S) == path
    assert ensure_raw(spec, raw_dir, mirror=None, allow_download=False, timeout_s=TIMEOUT_S) == path
    assert files_under(raw_dir) == [path]


def test_download_raw_file_without_archive(tmp_path: Path, server: LocalServer) -> None:
    spec = tiny_spec(server.publish("ratings.dat", RAW), archive=None, member=None)
    path = ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert path.read_bytes() == RAW and files_under(tmp_path / "raw") == [path]


def test_download_member_in_other_top_folder(tmp_path: Path, server: LocalServer) -> None:
    """A zip laid out differently is still accepted when its file has the right checksum."""
    archive = make_zip({"other/ratings.dat": RAW})
    spec = tiny_spec(server.publish("tiny.zip", archive), archive)
    path = ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert path.read_bytes() == RAW


def test_tampered_archive(tmp_path: Path, server: LocalServer) -> None:
    genuine = make_zip({"pkg/ratings.dat": RAW})
    spec = tiny_spec(f"{server.url}/tiny.zip", genuine)
    server.publish("tiny.zip", make_zip({"pkg/ratings.dat": RAW, "extra": b"x"}))
    raw_dir = tmp_path / "raw"
    with pytest.raises(ChecksumError) as info:
        ensure_raw(spec, raw_dir, mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert spec.url in str(info.value) and spec.archive_sha256 in str(info.value)
    assert files_under(raw_dir) == []


def test_tampered_member(tmp_path: Path, server: LocalServer) -> None:
    bad = make_zip({"pkg/ratings.dat": RAW.replace(b"::5::", b"::4::")})
    spec = dataclasses.replace(tiny_spec(server.publish("tiny.zip", bad), None), archive_sha256=None)
    raw_dir = tmp_path / "raw"
    with pytest.raises(ChecksumError) as info:
        ensure_raw(spec, raw_dir, mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert spec.sha256 in str(info.value) and spec.url in str(info.value)
    assert files_under(raw_dir) == []


def test_tampered_raw_file_without_archive(tmp_path: Path, server: LocalServer) -> None:
    spec = tiny_spec(server.publish("ratings.dat", RAW + b"\n"), archive=None, member=None)
    spec = dataclasses.replace(spec, sha256=sha256(RAW))
    with pytest.raises(ChecksumError):
        ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert files_under(tmp_path / "raw") == []


def test_archive_without_member(tmp_path: Path, server: LocalServer) -> None:
    archive = make_zip({"pkg/movies.dat": b"x", "pkg/users.dat": b"y"})
    spec = tiny_spec(server.publish("tiny.zip", archive), archive)
    with pytest.raises(DataError, match="no member 'pkg/ratings.dat'.*pkg/movies.dat"):
        ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert files_under(tmp_path / "raw") == []


def test_download_not_a_zip(tmp_path: Path, server: LocalServer) -> None:
    page = b"<html>not found, but with status 200</html>"
    spec = tiny_spec(server.publish("tiny.zip", page), page)
    with pytest.raises(DataError, match="not a valid zip"):
        ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert files_under(tmp_path / "raw") == []


def test_http_404(tmp_path: Path, server: LocalServer) -> None:
    spec = tiny_spec(f"{server.url}/missing.zip", None)
    with pytest.raises(DatasetUnavailableError) as info:
        ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    assert "404" in str(info.value) and spec.url in str(info.value)
    assert files_under(tmp_path / "raw") == [] and not (tmp_path / "raw" / "tiny").exists()


def test_truncated_download(tmp_path: Path) -> None:
    srv = LocalServer(tmp_path, _TruncatingHandler)
    try:
        spec = tiny_spec(f"{srv.url}/tiny.zip", None)
        with pytest.raises(DatasetUnavailableError, match="IncompleteRead"):
            ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    finally:
        srv.stop()
    assert files_under(tmp_path / "raw") == []


def test_unreachable_url(tmp_path: Path) -> None:
    spec = tiny_spec("http://127.0.0.1:9/x.zip", None)  # port 9 (discard): nothing listens
    with pytest.raises(DatasetUnavailableError) as info:
        ensure_raw(spec, tmp_path / "raw", mirror=None, allow_download=True, timeout_s=TIMEOUT_S)
    message = str(info.value)
    assert "http://127.0.0.1:9/x.zip" in message and "FEDEM_DATA_MIRROR" in message
    assert files_under(tmp_path / "raw") == []


# ------------------------------------------------------------------------- offline: unavailable


def test_offline_without_mirror(tmp_path: Path) -> None:
    spec = DATASETS["ml-100k"]
    raw_dir = tmp_path / "raw"
    with pytest.raises(DatasetUnavailableError) as info:
        ensure_raw(spec, raw_dir, mirror=None, allow_download=False, timeout_s=TIMEOUT_S)
    message = str(info.value)
    for needed in (
        "ml-100k",
        spec.url,
        "u.data",
        spec.sha256,
        "FEDEM_DATA_MIRROR",
        str(raw_dir / "ml-100k" / "u.data"),
    ):
        assert needed in message
    assert not raw_dir.exists()


def test_ml1m_offline_with_real_mirror(tmp_path: Path) -> None:
    mirror = require_mirror()
    if (mirror / "ml-1m" / "ratings.dat").exists():
        pytest.skip("this mirror has ml-1m; the test is about a mirror without it")
    spec = DATASETS["ml-1m"]
    with pytest.raises(DatasetUnavailableError) as info:
        ensure_raw(spec, tmp_path / "raw", mirror=mirror, allow_download=False, timeout_s=TIMEOUT_S)
    message = str(info.value)
    for needed in ("ml-1m", spec.url, "ratings.dat", spec.git_blob, "FEDEM_DATA_MIRROR", "ml-1m/ratings.dat"):
        assert needed in message
    assert files_under(tmp_path / "raw") == []


# --------------------------------------------------------------------------- mirror and cache


@pytest.mark.parametrize("key", ["ml-100k", "filmtrust", "lastfm-2k", "amazon-video"])
def test_copy_from_real_mirror(tmp_path: Path, key: str) -> None:
    mirror = require_mirror()
    spec = DATASETS[key]
    source = mirror / key / spec.filename
    if not source.is_file():
        pytest.skip(f"the mirror has no {key}/{spec.filename}")
    raw_dir = tmp_path / "raw"
    path = ensure_raw(spec, raw_dir, mirror=mirror, allow_download=False, timeout_s=TIMEOUT_S)
    assert path == raw_dir / key / spec.filename
    assert path.read_bytes() == source.read_bytes()
    assert files_under(raw_dir) == [path]
    assert os.access(path, os.W_OK)  # the cache copy does not inherit the mirror's read-only mode


def test_corrupted_mirror(tmp_path: Path) -> None:
    source = require_mirror() / "filmtrust" / "ratings.txt"
    if not source.is_file():
        pytest.skip("the mirror has no filmtrust/ratings.txt")
    bad_mirror = tmp_path / "mirror"
    bad = bad_mirror / "filmtrust" / "ratings.txt"
    bad.parent.mkdir(parents=True)
    data = bytearray(source.read_bytes())
    data[1000] ^= 0x01
    bad.write_bytes(bytes(data))
    raw_dir = tmp_path / "raw"
    with pytest.raises(ChecksumError) as info:
        ensure_raw(DATASETS["filmtrust"], raw_dir, mirror=bad_mirror, allow_download=True, timeout_s=TIMEOUT_S)
    assert str(bad) in str(info.value) and DATASETS["filmtrust"].sha256 in str(info.value)
    assert files_under(raw_dir) == []
    assert bad.read_bytes() == bytes(data)


def test_corrupted_cache_is_refetched_from_mirror(tmp_path: Path) -> None:
    mirror = require_mirror()
    if not (mirror / "filmtrust" / "ratings.txt").is_file():
        pytest.skip("the mirror has no filmtrust/ratings.txt")
    cached = tmp_path / "raw" / "filmtrust" / "ratings.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"1 1 2\n")  # e.g. a truncated earlier copy
    path = ensure_raw(DATASETS["filmtrust"], tmp_path / "raw", mirror=mirror, allow_download=False, timeout_s=TIMEOUT_S)
    assert path == cached and sha256_of(path) == DATASETS["filmtrust"].sha256


def test_corrupted_cache_offline_is_deleted(tmp_path: Path) -> None:
    cached = tmp_path / "raw" / "ml-100k" / "u.data"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"1\t2\t3\t4\n")
    with pytest.raises(DatasetUnavailableError):
        ensure_raw(DATASETS["ml-100k"], tmp_path / "raw", mirror=None, allow_download=False, timeout_s=TIMEOUT_S)
    assert not cached.exists()


def test_cache_wins_over_mirror(tmp_path: Path) -> None:
    """A verified cached copy is used as is: the (here corrupted) mirror is not even read."""
    mirror = require_mirror()
    source = mirror / "filmtrust" / "ratings.txt"
    if not source.is_file():
        pytest.skip("the mirror has no filmtrust/ratings.txt")
    cached = tmp_path / "raw" / "filmtrust" / "ratings.txt"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(source, cached)
    bad_mirror = tmp_path / "mirror" / "filmtrust"
    bad_mirror.mkdir(parents=True)
    (bad_mirror / "ratings.txt").write_bytes(b"garbage")
    path = ensure_raw(
        DATASETS["filmtrust"], tmp_path / "raw", mirror=tmp_path / "mirror", allow_download=False, timeout_s=TIMEOUT_S
    )
    assert path == cached


def test_mirror_without_file_falls_back_to_download(tmp_path: Path, server: LocalServer) -> None:
    archive = make_zip({"pkg/ratings.dat": RAW})
    spec = tiny_spec(server.publish("tiny.zip", archive), archive)
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    path = ensure_raw(spec, tmp_path / "raw", mirror=empty_mirror, allow_download=True, timeout_s=TIMEOUT_S)
    assert path.read_bytes() == RAW and list(empty_mirror.iterdir()) == []


# --------------------------------------------------------------------------------- resolve_mirror


def test_resolve_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEDEM_DATA_MIRROR", raising=False)
    assert resolve_mirror(None) is None
    assert resolve_mirror("") is None
    assert resolve_mirror("some/dir") == Path("some/dir")
    monkeypatch.setenv("FEDEM_DATA_MIRROR", str(tmp_path))
    assert resolve_mirror(None) == tmp_path
    assert resolve_mirror("some/dir") == tmp_path  # the environment wins
    monkeypatch.setenv("FEDEM_DATA_MIRROR", "")
    assert resolve_mirror("some/dir") is None  # set but empty: no mirror
