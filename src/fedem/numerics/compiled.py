"""Optional torch.compile of the engine's small memory-bound kernels.

Eager torch runs each elementwise op as its own pass over memory, and its CPU index_add_ is slow
for short rows (~90 ns a 16-float row; Inductor's generated loop takes ~11). Compiling fuses
them into single loops with the same arithmetic up to float rounding. `dynamic=True`: the
lockstep schedule shrinks every step, and one symbolic-shape graph serves all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)
_compiled: dict[Callable, Callable] = {}


def maybe_compiled(fn: F, compiled: bool) -> F:
    """`fn` itself, or its (process-wide cached) compiled version."""
    if not compiled:
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=True)
    return _compiled[fn]  # type: ignore[return-value]


def index_add_rows(out: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> None:
    """out[rows[i]] += src[i] (rows may repeat), the scatter of per-sample row gradients."""
    out.index_add_(0, rows, src)
