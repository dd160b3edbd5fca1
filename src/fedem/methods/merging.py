"""Where a merged client's rho comes from: the rungs of the ablation ladder (Table 2).

A merged row is L[i] + rho (G[i] - L[i]). FedEM's `elastic` rule computes rho per row with the
client's adapter MLP; the ablations keep everything else of FedEM and change only this:
- `dynamic`: one rho per client, sigmoid of a logit the client learns (started at 0, so rho = 0.5),
  trained by the adapter's step; it adapts to the client and over rounds, but not to the row.
- `static`: one fixed rho for every client, row and round (`static_rho`).
(`replace`, the client taking G outright, has no rho: FedEM handles it without merging.)
Each rule's parameters are per-client tensors trained in the `adapter` learning-rate group."""

from __future__ import annotations

import torch

from fedem.errors import ConfigError
from fedem.methods.adapter import adapter_names, adapter_rho, init_adapter


class MergeRule:
    kind: str
    names: tuple[str, ...] = ()  # per-client parameters, trained in the `adapter` lr group

    def templates(self, seed: int) -> list[torch.Tensor]:
        """Every client's starting value of each parameter in `names`."""
        return []

    def rho(self, params: list[torch.Tensor], local: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """params stacked [C, ...]; local, delta [C, N, d] -> rho [C, N, 1]."""
        raise NotImplementedError


class ElasticRule(MergeRule):
    kind = "elastic"

    def __init__(self, layers: list[int]):
        self.layers = layers
        self.names = adapter_names(layers)

    def templates(self, seed):
        return init_adapter(self.layers, seed)

    def rho(self, params, local, delta):
        return adapter_rho(params, local, delta)


class DynamicRule(MergeRule):
    kind = "dynamic"
    names = ("merge.logit",)

    def templates(self, seed):
        return [torch.zeros(1)]

    def rho(self, params, local, delta):
        return torch.sigmoid(params[0]).view(-1, 1, 1).expand(local.shape[0], local.shape[1], 1)


class StaticRule(MergeRule):
    kind = "static"

    def __init__(self, value: float):
        self.value = float(value)

    def rho(self, params, local, delta):
        return torch.full((local.shape[0], local.shape[1], 1), self.value, dtype=local.dtype, device=local.device)


def make_rule(hparams: dict) -> MergeRule | None:
    """The rule of a fedem config (`merge`), or None for `replace`."""
    kind = hparams["merge"]
    if kind == "elastic":
        return ElasticRule(hparams["adapter_layers"])
    if kind == "dynamic":
        return DynamicRule()
    if kind == "static":
        return StaticRule(hparams["static_rho"])
    if kind == "replace":
        return None
    raise ConfigError(f"methods.fedem.merge='{kind}' is not one of elastic, dynamic, static, replace")


def merge_rows(
    rule: MergeRule, params: list[torch.Tensor], local: torch.Tensor, global_: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merged rows and rho: local + rho (global - local)."""
    delta = global_ - local
    rho = rule.rho(params, local, delta)
    return local + rho * delta, rho
