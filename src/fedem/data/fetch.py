"""Obtaining a verified raw file: local cache, then offline mirror, then the canonical URL.

Nothing is ever trusted unverified, and nothing partial is ever left behind: every file is written
to a temporary name in its final directory and moved into place with ``os.replace`` only after its
checksum matched, so an interrupted or failed fetch leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from fedem.data.registry import DatasetSpec
from fedem.errors import ChecksumError, DataError, DatasetUnavailableError

MIRROR_ENV = "FEDEM_DATA_MIRROR"
_CHUNK = 1 << 20

log = logging.getLogger(__name__)


def _hash_file(path: Path, algo: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algo)
    h.update(prefix)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes."""
    return _hash_file(Path(path), "sha256")


def git_blob_of(path: Path) -> str:
    """What ``git hash-object FILE`` prints: SHA-1 of ``b"blob <size>\\0"`` + the bytes."""
    path = Path(path)
    return _hash_file(path, "sha1", f"blob {path.stat().st_size}\0".encode())


def verify(path: Path, spec: DatasetSpec, label: str | None = None) -> None:
    """Raise ChecksumError unless `path` matches every raw-file checksum the spec has.

    `label` names the file in the message when `path` is only a temporary name.
    """
    name = label or str(path)
    checks = (("sha256", spec.sha256, sha256_of), ("git blob", spec.git_blob, git_blob_of))
    for kind, expected, compute in checks:
        if expected is None:
            continue
        actual = compute(Path(path))
        if actual != expected.lower():
            raise ChecksumError(
                f"checksum mismatch for {name} ({spec.key} raw file '{spec.filename}'): "
                f"expected {kind} {expected}, got {actual}. The file is corrupted, truncated or a "
                f"different version; replace it with the original from {spec.url}"
            )


def resolve_mirror(config_mirror: str | None) -> Path | None:
    """The offline mirror folder: env FEDEM_DATA_MIRROR if set, else the config value.

    An environment variable set to the empty string turns the mirror off (it still wins over the
    config); an empty or null config value means no mirror.
    """
    env = os.environ.get(MIRROR_ENV)
    value = env if env is not None else config_mirror
    if value is None or not str(value).strip():
        return None
    return Path(str(value).strip()).expanduser()


def _temp_in(directory: Path, name: str) -> Path:
    # Same directory as the destination, so that os.replace is an atomic rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.close(fd)
    return Path(tmp)


def _install(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is ordinary shared data
    os.replace(tmp, dest)


def _unavailable(spec: DatasetSpec, raw_dir: Path, mirror: Path | None, reason: str) -> DatasetUnavailableError:
    checks = ", ".join(
        f"{kind} {value}" for kind, value in (("sha256", spec.sha256), ("git blob", spec.git_blob)) if value
    )
    if mirror is None:
        mirror_note = f"no offline mirror is set ({MIRROR_ENV} and data.mirror are empty)"
    else:
        mirror_note = f"the mirror {mirror} has no {spec.key}/{spec.filename}"
    source = f"the file itself at {spec.url}" if spec.member is None else f"member '{spec.member}' of {spec.url}"
    return DatasetUnavailableError(
        f"dataset '{spec.key}' is not available: {reason}; {mirror_note}. "
        f"The raw file is '{spec.filename}' ({checks}), {source}. "
        f"To supply it, put the file at {raw_dir / spec.key / spec.filename}, "
        f"or set {MIRROR_ENV} to a folder containing {spec.key}/{spec.filename}"
        + ("" if spec.member is None else f" (unzip '{spec.member}' from the archive)")
        + ", or allow downloads (data.allow_download: true) on a machine that can reach the URL."
    )


def _download(url: str, dest: Path, timeout_s: float, desc: str) -> str:
    """Stream `url` into `dest` with a progress bar; return the sha256 of what was received."""
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(dest, "wb") as out:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False) as bar:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return h.hexdigest()


def _zip_member(archive: zipfile.ZipFile, spec: DatasetSpec) -> str:
    names = archive.namelist()
    if spec.member in names:
        return spec.member
    # Tolerate a different top-level folder: the raw-file checksum still decides what is accepted.
    same_name = [n for n in names if n == spec.filename or n.endswith("/" + spec.filename)]
    if len(same_name) == 1:
        return same_name[0]
    raise DataError(
        f"the archive {spec.url} has no member '{spec.member}' (members: {', '.join(names[:20])}"
        + (", ..." if len(names) > 20 else "")
        + ")"
    )


def _fetch_url(spec: DatasetSpec, dest: Path, timeout_s: float) -> None:
    """Download, check, unpack and install the raw file at `dest`; leave nothing behind on failure."""
    temps: list[Path] = []
    try:
        download = _temp_in(dest.parent, spec.filename + ".download")
        temps.append(download)
        got = _download(spec.url, download, timeout_s, desc=f"{spec.key}")
        if spec.archive_sha256 is not None and got != spec.archive_sha256.lower():
            raise ChecksumError(
                f"checksum mismatch for the download of {spec.url} ({spec.key}): expected sha256 "
                f"{spec.archive_sha256}, got {got}. Nothing was kept; the server may serve a different "
                f"version, or the transfer was corrupted"
            )
        if spec.member is None:
            raw = download
        else:
            raw = _temp_in(dest.parent, spec.filename)
            temps.append(raw)
            try:
                with zipfile.ZipFile(download) as archive:
                    with archive.open(_zip_member(archive, spec)) as src, open(raw, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
            except zipfile.BadZipFile as exc:
                raise DataError(f"the download of {spec.url} ({spec.key}) is not a valid zip archive: {exc}") from exc
        verify(raw, spec, label=f"'{spec.member or spec.filename}' downloaded from {spec.url}")
        _install(raw, dest)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def ensure_raw(
    spec: DatasetSpec,
    raw_dir: Path,
    mirror: Path | None,
    allow_download: bool,
    timeout_s: float,
) -> Path:
    """Return `raw_dir/<key>/<filename>`, verified, getting it from the mirror or the URL if needed.

    Order: a cached copy that verifies; else the mirror copy (verified in place, then copied);
    else a download (if allowed); else DatasetUnavailableError saying how to supply the file.
    A cached copy that fails verification is deleted and fetched again; a mirror copy that fails
    raises ChecksumError (the mirror is read-only: it is never modified).
    """
    raw_dir = Path(raw_dir)
    mirror = Path(mirror) if mirror is not None else None
    target_dir = raw_dir / spec.key
    dest = target_dir / spec.filename

    if dest.is_file():
        try:
            verify(dest, spec)
            return dest
        except ChecksumError as exc:
            log.warning("deleting the cached copy, which fails verification: %s", exc)
            dest.unlink()

    source = mirror / spec.key / spec.filename if mirror is not None else None
    use_mirror = source is not None and source.is_file()
    if not use_mirror and not allow_download:
        raise _unavailable(spec, raw_dir, mirror, "no verified copy is cached and downloads are off")

    created = not target_dir.exists()
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        if use_mirror:
            assert source is not None
            verify(source, spec)  # before copying anything: a bad mirror must not poison the cache
            tmp = _temp_in(target_dir, spec.filename)
            try:
                shutil.copyfile(source, tmp)
                verify(tmp, spec, label=f"the copy of {source}")
                _install(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return dest
        try:
            _fetch_url(spec, dest, timeout_s)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
            raise _unavailable(spec, raw_dir, mirror, f"downloading {spec.url} failed ({exc})") from exc
        return dest
    except BaseException:
        if created:
            try:
                target_dir.rmdir()  # only succeeds if empty: never removes anything we did not create
            except OSError:
                pass
        raise
