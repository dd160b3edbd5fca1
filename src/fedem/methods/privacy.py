"""Local differential privacy on uploads (Table 4): i.i.d. Laplace noise, drawn from an explicit
generator. There is no clipping and no privacy accounting (as in the sibling papers' code): the
embeddings are unbounded, so the scale is a noise level, not a formal epsilon."""

from __future__ import annotations

import torch


def laplace_noise(shape: torch.Size | tuple[int, ...], scale: float, gen: torch.Generator) -> torch.Tensor:
    """Laplace(0, scale) entries (float32, CPU): scale * (E1 - E2) with E1, E2 ~ Exp(1) i.i.d., the
    difference of two exponentials being Laplace-distributed (torch.distributions draws from the
    global generator, which this package never uses)."""
    e1 = torch.empty(shape).exponential_(generator=gen)
    e2 = torch.empty(shape).exponential_(generator=gen)
    return scale * (e1 - e2)
