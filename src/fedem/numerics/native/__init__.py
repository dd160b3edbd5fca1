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
from pathlib import Path

from fedem.errors import ConfigError

log = logging.getLogger(__name__)
_DIR = Path(__file__).parent
# -fno-math-errno lets the compiler vectorise sqrt (Adam). No -ffast-math and no FMA contraction:
# the float arithmetic must stay as written, as torch's kernels compute it.
CFLAGS = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c++17"]
# the instruction set torch's own CPU kernels use here (ATen picks it at run time): the build is
# made for it, and cached per instruction set, so a home directory shared by different CPUs is safe
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
    log.info("loading native kernel %s (its first use on a machine compiles it, about a minute)", name)
    try:
        return cpp_extension.load(name=f"fedem_{name}_{isa.lower()}_{digest}", sources=[str(p) for p in sources],
                                  extra_cflags=flags, extra_include_paths=[str(_DIR)], verbose=False)
    except (RuntimeError, OSError, ImportError) as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"training.kernels=native: building the C++ kernel {name}.cpp failed ({detail}). It needs a C++ "
            f"compiler (g++ or clang++) and ninja: install them (e.g. `apt install g++ ninja-build`), or set "
            f"training.kernels=compiled (or eager), which compute the same numbers up to float rounding"
        ) from exc
