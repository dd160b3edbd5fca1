"""Which datasets the workflow can obtain: processed, cache, mirror, URL (HEAD), or none, and why."""

from __future__ import annotations

import copy
import functools
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fedem.config import load_config
from fedem.data.availability import check_dataset, url_answers
from fedem.data.pipeline import artifact_path, stats_path
from fedem.data.registry import DATASETS

from conftest import REPO


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("FEDEM_DATA_MIRROR", raising=False)
    cfg = copy.deepcopy(load_config(REPO / "config" / "config.yaml"))
    cfg["data"].update(
        raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), mirror=None, allow_download=False
    )
    return cfg


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.zip").write_bytes(b"zip")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_nothing_available_says_why_and_how(config):
    a = check_dataset(config, "ml-1m")
    assert not a.available and a.source == "none"
    assert "no offline mirror is set" in a.detail and "downloads are off" in a.detail
    how = a.how_to_supply(config["data"]["raw_dir"])
    assert f"at {config['data']['raw_dir']}/ml-1m/ratings.dat" in how and "FEDEM_DATA_MIRROR" in how
    assert a.as_dict(config["data"]["raw_dir"])["how_to_supply"] == how


def test_mirror_then_cache_then_processed(config, mirror, monkeypatch):
    monkeypatch.setenv("FEDEM_DATA_MIRROR", str(mirror))
    assert check_dataset(config, "filmtrust").source == "mirror"
    spec = DATASETS["filmtrust"]
    cached = Path(config["data"]["raw_dir"]) / spec.key / spec.filename
    cached.parent.mkdir(parents=True)
    shutil.copyfile(mirror / spec.key / spec.filename, cached)
    assert check_dataset(config, "filmtrust").source == "cache"
    cached.write_bytes(b"corrupt")
    monkeypatch.setenv("FEDEM_DATA_MIRROR", "")
    a = check_dataset(config, "filmtrust")
    assert not a.available and "fails its checksum" in a.detail
    for dedupe in (False, True):
        art = artifact_path(config, "filmtrust", dedupe)
        art.parent.mkdir(parents=True, exist_ok=True)
        art.write_bytes(b"x")
        stats_path(art).write_text("{}")
    assert check_dataset(config, "filmtrust", (False, True)).source == "processed"


def test_head_request(http_dir):
    assert url_answers(f"{http_dir}/data.zip", 3.0)[0]
    ok, why = url_answers(f"{http_dir}/missing.zip", 3.0)
    assert not ok and "404" in why


def test_unreachable_url_fails_fast():
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    ok, why = url_answers(f"http://127.0.0.1:{port}/x.zip", 3.0)
    assert not ok and "did not answer" in why and time.perf_counter() - start < 3.5


def test_download_allowed_uses_head(config, monkeypatch):
    import fedem.data.availability as av

    config["data"]["allow_download"] = True
    monkeypatch.setattr(av, "url_answers", lambda url, timeout: (True, f"{url} answered HTTP 200"))
    assert check_dataset(config, "amazon-video").source == "url"
