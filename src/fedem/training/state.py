"""Stacked client state: every client's copy of each named parameter, with a leading client axis,
and the gather/scatter between it and the layout a round's training uses (`trainer`)."""

from __future__ import annotations

import torch

from fedem.training.backbone import Backbone
from fedem.training.schedule import RoundPlan
from fedem.training.trainer import POOL


class ClientState:
    """tensors[name]: [U, *shape] for every client. Every client starts from one template (the
    released codes initialise one model and copy it to every client)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    @classmethod
    def from_template(cls, template: dict[str, torch.Tensor], num_clients: int, device) -> ClientState:
        return cls({name: t.to(device).expand((num_clients,) + tuple(t.shape)).clone() for name, t in template.items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def for_plan(self, plan: RoundPlan, backbone: Backbone, rows: str = POOL, names=None) -> dict[str, torch.Tensor]:
        """Copies of the plan's clients' tensors in rank order: item rows as pool rows [R, d] (rows=pool)
        or whole tables [C, I, d] (rows=dense), the rest [C, ...]."""
        ranked = plan.clients.to(self._device)
        out = {}
        for spec in backbone.specs:
            if spec.name not in self.tensors or (names is not None and spec.name not in names):
                continue
            whole = self.tensors[spec.name]
            if spec.item_rows and rows == POOL:
                out[spec.name] = whole.reshape(-1, whole.shape[-1]).index_select(0, self._flat_rows(plan, whole))
            else:
                out[spec.name] = whole.index_select(0, ranked)
        return out

    def write_back(
        self, plan: RoundPlan, backbone: Backbone, trained: dict[str, torch.Tensor], rows: str = POOL
    ) -> None:
        ranked = plan.clients.to(self._device)
        for name, value in trained.items():
            if name not in self.tensors or backbone.spec(name).lr_group is None:
                continue
            whole = self.tensors[name]
            if backbone.spec(name).item_rows and rows == POOL:
                whole.view(-1, whole.shape[-1]).index_copy_(0, self._flat_rows(plan, whole), value)
            else:
                whole.index_copy_(0, ranked, value)

    @property
    def _device(self):
        return next(iter(self.tensors.values())).device

    @staticmethod
    def _flat_rows(plan: RoundPlan, whole: torch.Tensor) -> torch.Tensor:
        """Row of each pool row in whole.view(-1, d): client * num_items + item."""
        device = whole.device
        owners = plan.clients.to(device)[plan.pool_client.to(device)]
        return owners * whole.shape[1] + plan.pool_items.to(device)
