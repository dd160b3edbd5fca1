"""The result file: the contract between training, tables, figures and CI (ARCHITECTURE.md).

The result JSON is a pure function of (code, config, data, seed): no timings, no host names, so
the same seed gives a bit-identical file on CPU. Timings go to a sidecar `<name>.timing.json`."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from pathlib import Path

import fedem
from fedem.data.dataset import atomic_write_bytes

# 2: every result and probe file carries `content_digest`, the sha256 of its own canonical content
RESULT_SCHEMA_VERSION = 2
DIGEST_KEY = "content_digest"
_PACKAGE_DIR = Path(fedem.__file__).resolve().parent
# what determines a run's numbers; the report code, the CLI and the method registry do not
_TRAINING_CODE_EXCLUDE = ("report", "cli.py", "data/availability.py", "methods/__init__.py", "__init__.py")
_RUN_ENTRY = "engine/federation.py"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n"


def config_hash(run_config: dict) -> str:
    return hashlib.sha256(json.dumps(run_config, sort_keys=True).encode()).hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for candidate in (_PACKAGE_DIR / rel.with_suffix(".py"), _PACKAGE_DIR / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _fedem_imports(path: Path) -> set[Path]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fedem":
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "fedem"]
        found.update(f for f in map(_module_file, names) if f is not None)
    return found


def _source_closure(entries: list[Path]) -> list[Path]:
    """The package files reachable from `entries` by `fedem` imports (static, via ast)."""
    seen: set[Path] = set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        rel = path.relative_to(_PACKAGE_DIR).as_posix()
        if path in seen or rel.startswith(_TRAINING_CODE_EXCLUDE):
            continue
        seen.add(path)
        todo.extend(_fedem_imports(path))
        if path.with_suffix(".cpp").is_file():  # a native kernel's module: its source and headers too
            seen.update([path.with_suffix(".cpp"), *path.parent.glob("*.h")])
    return sorted(seen)


def _closure_of(methods: list[str]) -> list[Path]:
    """The training code of `methods`: the engine's entry point and their modules, with all they import."""
    from fedem.methods import module_file

    return _source_closure([_PACKAGE_DIR / _RUN_ENTRY] + [module_file(k) for k in methods])


def training_code_hash(method: str | None = None) -> str:
    """sha256 over the sources that determine a run's numbers: the engine and everything it and the
    method's module import (statically, without importing anything: no torch). `method` is a base
    method (a config variant runs its base's code). Adding another method, or editing the report code,
    leaves it unchanged; method=None hashes every method's closure (the whole training code)."""
    from fedem.methods import METHODS

    h = hashlib.sha256()
    for path in _closure_of(sorted(METHODS) if method is None else [method]):
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def native_kernels(method: str) -> list[str]:
    """The C++ kernels (fedem.numerics.native.<name>, built on first use) that `method`'s training
    code imports, by the same static closure as training_code_hash."""
    return [p.stem for p in _closure_of([method]) if p.suffix == ".cpp"]


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=_PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=60,  # git refreshes its index first: seconds on a loaded machine (10 s timed out in grid jobs)
            check=True,
        )
        return f"{fedem.__version__}+git.{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return fedem.__version__


def provenance(
    protocol: str, dataset: str, method: str, seed: int, run_config: dict, data_hash: str, code_hash: str
) -> dict:
    """code_hash: training_code_hash() taken when the run started (the code that made the numbers)."""
    import torch

    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "protocol": protocol,
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "config": run_config,
        "config_hash": config_hash(run_config),
        "data_hash": data_hash,
        "code_hash": code_hash,
        "code_version": fedem.__version__,
        "torch_version": torch.__version__,
    }


def content_digest(document: dict) -> str:
    """sha256 of a result or probe file's canonical JSON without its own digest. Written at training time;
    any later edit of the file (a number, a block) no longer matches it."""
    body = {k: v for k, v in document.items() if k != DIGEST_KEY}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def sealed(document: dict) -> dict:
    return {**{k: v for k, v in document.items() if k != DIGEST_KEY}, DIGEST_KEY: content_digest(document)}


def digest_problem(document: dict) -> str | None:
    """Why a loaded file's content is not what training wrote, or None."""
    if DIGEST_KEY not in document:
        return "it carries no content digest (not written by `fedem train`, or by older code)"
    if document[DIGEST_KEY] != content_digest(document):
        return (
            "its content does not match its content digest: the file was edited after training; "
            "rerun the run to restore it"
        )
    return None


def timing_path(result_path: Path) -> Path:
    return Path(result_path).with_suffix(".timing.json")


def write_result(path: Path, result: dict, timing: dict | None = None) -> None:
    """Atomic: a reader (or a killed run) never sees a partial file."""
    path = Path(path)
    if timing is not None:
        atomic_write_bytes(timing_path(path), canonical_json(timing).encode())
    atomic_write_bytes(path, canonical_json(sealed(result)).encode())


def divergence_path(result_path: Path) -> Path:
    """seed0.json -> seed0.diverged.json: the record a run that diverged leaves instead of its result."""
    return Path(result_path).with_suffix(".diverged.json")


def write_divergence(result_path: Path, record: dict) -> None:
    """Atomic, sealed like a result file; the result file itself is never written for such a run."""
    atomic_write_bytes(divergence_path(result_path), canonical_json(sealed(record)).encode())


def write_probe(path: Path, probe: dict) -> None:
    """Probe files hold ~100 records per round: compact JSON, still deterministic."""
    text = json.dumps(sealed(probe), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
    atomic_write_bytes(Path(path), text.encode())


def read_result(path: Path) -> dict:
    return json.loads(Path(path).read_text())
