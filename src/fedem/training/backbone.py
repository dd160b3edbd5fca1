"""The client model interface of the training layer.

A backbone declares its parameters by name (`ParamSpec`: private or shared, item rows or dense, and
the learning-rate group that trains it, or none for a fixed input such as FedEM's global rows),
computes the logits of a stacked batch, may add a loss term, and scores candidate items. The local
trainer (`fedem.training.trainer`) gets its gradients by autograd over the stacked batch: clients are
independent, so each client's slice of the gradient of the summed loss is its own gradient."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamSpec:
    name: str
    item_rows: bool = False  # leading dim indexes items (the client's item table); else a dense tensor
    shared: bool = False  # uploaded to the server; False: private, never leaves the client
    lr_group: str | None = "embedding"  # key of the method's optimizer.lr; None: a fixed input, never trained


# A fast path trains a group of clients exactly as the autograd path would (tested equal), in place:
# fast(plan, tensors, optimizer, threshold) -> each client's running loss [C] (float64).
FastPath = Callable[..., torch.Tensor]


def closed_form_covers(optimizer, rows: str, step_groups, steps: tuple[tuple[str, ...], ...]) -> bool:
    """Whether a hand-written fast path that takes plain Adam steps on the pool rows, sub-steps
    `steps`, applies: no weight decay, no learning-rate schedule, the pool layout."""
    return (
        optimizer.name == "adam"
        and rows == "pool"
        and not any(optimizer.weight_decay.values())
        and optimizer.step_decay == 1.0
        and tuple(step_groups) == tuple(steps)
    )


class Backbone(ABC):
    specs: tuple[ParamSpec, ...]

    @property
    def trainable(self) -> tuple[ParamSpec, ...]:
        return tuple(s for s in self.specs if s.lr_group is not None)

    def spec(self, name: str) -> ParamSpec:
        return next(s for s in self.specs if s.name == name)

    @abstractmethod
    def logits(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """p: every parameter, per client: item-row parameters gathered at the batch's items
        ([C, B, d]), dense ones stacked ([C, ...]). Returns logits [C, B]."""

    def extra_loss(self, p: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """An additional per-client loss term [C] (added to the batch-mean BCE), or None. `p` holds the
        dense parameters and, in dense row mode, the whole item tables [C, I, d] under their names."""
        return None

    def scores(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores [n, K] of candidates whose item rows are gathered in p (as `logits`)."""
        return torch.sigmoid(self.logits(p))

    def fast_path(
        self, kernels: str, device: torch.device, optimizer, rows: str, step_groups: tuple[tuple[str, ...], ...]
    ) -> FastPath | None:
        """A closed-form or native implementation for this configuration, or None (autograd)."""
        return None
