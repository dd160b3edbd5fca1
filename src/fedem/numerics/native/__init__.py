"""C++ kernels for CPU training (`training.kernels: native`), built on first use with
torch.utils.cpp_extension and cached under TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions).

Why C++: the batched torch path runs all clients in lockstep, so every step streams the Adam
state of every active client's rows through memory and pays per-op dispatch. Client by client,
a client's rows and moments stay in cache. Clients are independent within a round, so this is
the same computation in another order (tests/test_engine_reference.py checks it against the
per-client reference). Each kernel is a module `x.py` next to its source `x.cpp`; both, and the
shared headers, count as training code (fedem.engine.results hashes them), and so does this file,
because its compiler flags shape the float arithmetic."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch

from fedem.errors import ConfigError

log = logging.getLogger(__name__)
_DIR = Path(__file__).parent
# -fno-math-errno lets the compiler vectorise sqrt (Adam). No -ffast-math and no FMA contraction:
# the float arithmetic must stay as written, as torch's kernels compute it.
CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c++17"]
# the instruction set torch's own CPU kernels use here (ATen picks it at run time): the build is
# made for it, and cached per instruction set, so a home directory shared by different CPUs is safe
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}
_BUILT_MARK = "built"  # written last, once the library is whole: a build killed mid-way leaves none


def check_losses(losses: torch.Tensor) -> torch.Tensor:
    """The kernels' per-client running losses, refused when any is not finite (the run diverged)."""
    if not torch.isfinite(losses).all():
        raise FloatingPointError("non-finite training loss in local training")
    return losses


def _isa() -> str:
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _ISA_FLAGS else "default"


def _build_root() -> Path:
    from torch.utils import cpp_extension

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root())


@functools.cache
def load(name: str):
    """The compiled module `name` (from name.cpp and the headers here). Its build folder is named by
    a digest of those sources and the flags, so an edit builds anew and a rebuild is never needed."""
    sources = [_DIR / f"{name}.cpp", *sorted(_DIR.glob("*.h"))]
    isa = _isa()
    flags = CFLAGS + _ISA_FLAGS.get(isa, [])
    content = b"".join(p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in sources)
    digest = hashlib.sha256(content + " ".join(flags).encode()).hexdigest()[:12]
    module = f"fedem_{name}_{isa.lower()}_{digest}"
    build_dir = _build_root() / module
    library = build_dir / f"{module}.so"
    if not _is_built(build_dir, library):
        # torch's own build lock is a plain file, which a killed build leaves behind and every later
        # build then waits on forever; a flock is released by the kernel when its holder dies
        with _exclusive(build_dir.parent / f"{module}.lock", name):
            if not _is_built(build_dir, library):
                return _build(name, module, sources, flags, build_dir)
    return _import(module, library)


def _is_built(build_dir: Path, library: Path) -> bool:
    return (build_dir / _BUILT_MARK).is_file() and library.is_file()


@contextlib.contextmanager
def _exclusive(lock_path: Path, name: str):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is building the native kernel %s", name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(name: str, module: str, sources: list[Path], flags: list[str], build_dir: Path):
    from torch.utils import cpp_extension

    try:  # the pinned ninja wheel; torch looks for `ninja` on PATH, which a venv's python need not have
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    log.info("building native kernel %s (once per machine and source version, about a minute)", name)
    build_dir.mkdir(parents=True, exist_ok=True)
    # build from copies inside the build folder: its build.ninja then names the same files from every
    # checkout (a CI clone, a test's copy of the tree), which would otherwise rebuild each other's
    for path in sources:
        shutil.copyfile(path, build_dir / path.name)
    # we hold the build's flock, so a torch lock file here was left by a build that was killed
    (build_dir / "lock").unlink(missing_ok=True)
    (build_dir / _BUILT_MARK).unlink(missing_ok=True)
    try:
        compiled = cpp_extension.load(
            name=module,
            sources=[str(build_dir / sources[0].name)],
            extra_cflags=flags,
            extra_include_paths=[str(build_dir)],
            build_directory=str(build_dir),
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"training.kernels=native: building the C++ kernel {name}.cpp failed ({detail}). It needs a C++ "
            f"compiler (g++ or clang++) and ninja: install them (e.g. `apt install g++ ninja-build`), or set "
            f"training.kernels=compiled (or eager), which compute the same numbers up to float rounding"
        ) from exc
    mark = build_dir / f"{_BUILT_MARK}.tmp"
    mark.write_text(module + "\n")
    os.replace(mark, build_dir / _BUILT_MARK)
    return compiled


def _import(module: str, library: Path):
    """A finished build, imported directly: no build step, so no lock and no ninja run."""
    spec = importlib.util.spec_from_file_location(module, library)
    compiled = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compiled)
    return compiled
