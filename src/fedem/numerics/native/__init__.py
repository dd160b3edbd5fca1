"""C++ kernels for CPU training (`training.kernels: native`), built on first use with
torch.utils.cpp_extension and cached by torch (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions).

Why C++: the batched torch path runs all clients in lockstep, so every step streams the Adam
state of every active client's rows through memory and pays per-op dispatch. Client by client,
a client's rows and moments stay in cache. Clients are independent within a round, so this is
the same computation in another order (tests/test_engine_reference.py checks it against the
per-client reference). Each kernel is a module `x.py` next to its source `x.cpp`; both, and the
shared headers, count as training code (fedem.engine.results hashes them)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path

from fedem.errors import ConfigError

log = logging.getLogger(__name__)
_DIR = Path(__file__).parent
# -fno-math-errno lets the compiler vectorise sqrt (Adam). No -ffast-math and no FMA contraction:
# the float arithmetic must stay as written, as torch's kernels compute it.
CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c++17"]
# the instruction set torch's own CPU kernels use here (ATen picks it at run time): the build is
# made for it, and cached per instruction set, so a home directory shared by different CPUs is safe
# a build takes about a minute; a lock this old was left by a build that was killed
STALE_LOCK_S = 600
_ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
              "AVX2": ["-mavx2", "-mfma"]}


def _isa() -> str:
    import platform

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    capability = torch.backends.cpu.get_cpu_capability()
    return capability if capability in _ISA_FLAGS else "default"


@functools.cache
def load(name: str):
    """The compiled module `name` (built from name.cpp and the headers here; rebuilt when they change)."""
    from torch.utils import cpp_extension

    try:  # the pinned ninja wheel; torch looks for `ninja` on PATH, which a venv's python need not have
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    sources = [_DIR / f"{name}.cpp"]
    inputs = sources + sorted(_DIR.glob("*.h"))
    isa = _isa()
    flags = CFLAGS + _ISA_FLAGS.get(isa, [])
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in inputs) + " ".join(flags).encode()).hexdigest()[:12]
    module = f"fedem_{name}_{isa.lower()}_{digest}"
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    build_dir = Path(root) / module
    build_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(build_dir / "lock")
    log.info("loading native kernel %s (its first use on a machine compiles it, about a minute)", name)
    try:
        return cpp_extension.load(name=module, sources=[str(p) for p in sources], extra_cflags=flags,
                                  extra_include_paths=[str(_DIR)], build_directory=str(build_dir), verbose=False)
    except (RuntimeError, OSError, ImportError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"training.kernels=native: building the C++ kernel {name}.cpp failed ({detail}). It needs a C++ "
            f"compiler (g++ or clang++) and ninja: install them (e.g. `apt install g++ ninja-build`), or set "
            f"training.kernels=compiled (or eager), which compute the same numbers up to float rounding"
        ) from exc


def _clear_stale_lock(lock: Path) -> None:
    """torch waits, without end, while a build's lock file exists; a build killed mid-way (Ctrl-C,
    a killed job) leaves it behind. One older than any real build is removed, and said so."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        log.warning("removing %s, left %.0f s ago by a native build that did not finish", lock, age)
        lock.unlink(missing_ok=True)
