"""The method interface: what the engine calls, and nothing else.

A method owns its stacked client/server state. Per round the engine hands it the round's
training samples (positives + that round's negatives, with the batch order fixed) and then asks
it to score candidate items for evaluation. Adding a baseline = one module + one registry line."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from fedem.data.dataset import FederatedDataset
from fedem.training.optim import OptimizerSpec
from fedem.training.schedule import RoundSamples


@dataclass
class MethodContext:
    dataset: FederatedDataset
    config: dict  # the run config (fedem.config.run_config): training, adam, method, protocol
    seed: int
    device: torch.device

    @property
    def training(self) -> dict:
        return self.config["training"]

    @property
    def hparams(self) -> dict:
        return self.config["method"]

    @property
    def adam(self) -> dict:
        return self.config["adam"]

    @property
    def optimizer(self) -> OptimizerSpec:
        """The method's client optimizer (its `optimizer` block, with the config's Adam constants)."""
        return OptimizerSpec.from_config(self.hparams["optimizer"], self.adam) if "optimizer" in self.hparams else None


class Method(ABC):
    name: ClassVar[str]

    def __init__(self, ctx: MethodContext):
        self.ctx = ctx
        self.num_users = ctx.dataset.num_users
        self.num_items = ctx.dataset.num_items
        self.device = ctx.device
        self.optimizer = ctx.optimizer

    @abstractmethod
    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        """Local training of every client and the server step. Returns each client's training
        loss [U] (NaN where a method has none)."""

    def prefetch(self, round_index: int, samples: RoundSamples) -> None:
        """Runs on the prefetch thread, before round `round_index` starts and while the previous
        round trains: build the schedules train_round will ask `samples` for. It may read only
        what is fixed by (config, seed, round), never the training state."""
        samples.plan()

    @abstractmethod
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores [n, K] of items [n, K] for users [n] under each user's evaluation model."""

    @abstractmethod
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [n, I] of every item for users [n] (full ranking)."""

    def probe_round(self, round_index: int, probe_items: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
        """Per-client aggregation-bottleneck measurements (only methods that aggregate support it)."""
        raise NotImplementedError(f"method '{self.name}' has no aggregation probe")
