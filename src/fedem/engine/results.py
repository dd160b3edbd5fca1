"""The result file: the contract between training, tables, figures and CI (ARCHITECTURE.md).

The result JSON is a pure function of (code, config, data, seed): no timings, no host names, so
the same seed gives a bit-identical file on CPU. Timings go to a sidecar `<name>.timing.json`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import torch

import fedem
from fedem.data.dataset import atomic_write_bytes

RESULT_SCHEMA_VERSION = 1
_PACKAGE_DIR = Path(fedem.__file__).resolve().parent
# what determines a run's numbers; the report code does not
_TRAINING_CODE_EXCLUDE = ("report", "cli.py")


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n"


def config_hash(run_config: dict) -> str:
    return hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:16]


def training_code_hash() -> str:
    """sha256 over the package sources that determine a run's numbers (not the report code)."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        rel = path.relative_to(_PACKAGE_DIR).as_posix()
        if path.suffix not in (".py", ".yaml") or rel.startswith(_TRAINING_CODE_EXCLUDE):
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True,
        )
        return f"{fedem.__version__}+git.{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return fedem.__version__


def provenance(protocol: str, dataset: str, method: str, seed: int, run_config: dict, data_hash: str) -> dict:
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "protocol": protocol,
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "config": run_config,
        "config_hash": config_hash(run_config),
        "data_hash": data_hash,
        "code_hash": training_code_hash(),
        "code_version": fedem.__version__,
        "torch_version": torch.__version__,
    }


def timing_path(result_path: Path) -> Path:
    return Path(result_path).with_suffix(".timing.json")


def write_result(path: Path, result: dict, timing: dict | None = None) -> None:
    """Atomic: a reader (or a killed run) never sees a partial file."""
    path = Path(path)
    if timing is not None:
        atomic_write_bytes(timing_path(path), canonical_json(timing).encode())
    atomic_write_bytes(path, canonical_json(result).encode())


def write_probe(path: Path, probe: dict) -> None:
    """Probe files hold ~100 records per round: compact JSON, still deterministic."""
    text = json.dumps(probe, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    atomic_write_bytes(Path(path), text.encode())


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())
