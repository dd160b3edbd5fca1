"""Explicit random generators derived from (seed, purpose, round): no global RNG state anywhere."""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed that depends only on (seed, purpose, keys)."""
    entropy = [int(seed), zlib.crc32(purpose.encode()), *[int(k) for k in keys]]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(seed, purpose, *keys)))


def torch_gen(seed: int, purpose: str, *keys: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(derive_seed(seed, purpose, *keys))
    return gen
