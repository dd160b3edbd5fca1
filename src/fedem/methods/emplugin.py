"""`em-plugin`: FedEM's elastic merging (EM) plugged into another method (Table 3; docs/experiments.md).

The host method keeps everything of its own (its backbone, private parameters, optimizer, schedule and
server mean) except one step: where its client would start the round from the table the server sends,
the plugged client keeps its own table L_u and merges:
    L_u <- L_u + rho (G - L_u),   rho = adapter(L_u[i], G[i] - L_u[i]) per row (FedEM's adapter),
once in place at the start of the round, then again in every forward pass of its training, taking an
adapter step before each of the host's steps (FEDEM.md's two-step batch). A client with no table of its
own yet (round 0) takes G. The client uploads its whole L_u (no longer only the rows it touched: the
merge moves every row); the server takes the host's mean of the uploads; clients are evaluated with
merge(L_u, G) of the new G.

What a host declares, read from its code rather than copied: the table that is merged is its backbone's
one shared item-row parameter (`ParamSpec(item_rows=True, shared=True)`); the server's copy of it, its
mean and any other shared parameter are listed in HOSTS. FedMF's, FedNCF's and PFedRec's modules run
unchanged (their code hashes, and so their Table-1 results, are untouched by this plug-in).

Hosts with a local loop of their own (GPFedRec's pull toward r_u, FedRAP's two tables with weight decay)
run their own round instead, through a plug point: with `host.plug = self` the host starts each client
from `self.local[u]` (merged in place here first), calls `loop_merge(plan, pool_items)` for a
`LoopMerge` that takes the adapter's step and merges the rows inside its loop, and writes its trained
tables back into `self.local`; its own server step runs on them."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from fedem.errors import ConfigError
from fedem.methods import fedmf, fedncf, fedrap, gpfedrec, pfedrec
from fedem.methods.adapter import MergedFCF
from fedem.methods.aggregation import fedavg, sample_weights
from fedem.methods.base import Method, MethodContext
from fedem.methods.emplugin_loop import LoopMerge
from fedem.methods.merging import ElasticRule, merge_rows
from fedem.training.backbone import Backbone, ParamSpec
from fedem.training.backbones import FCF
from fedem.training.schedule import RoundSamples
from fedem.training.trainer import train_clients

_MERGE_CHUNK = 64  # clients per chunk of the whole-table merge (bounds peak memory)
PLUGIN_KEYS = ("host", "adapter_layers", "adapter_lr")


@dataclass(frozen=True)
class Host:
    cls: type  # the host's Method
    table: str  # the host's attribute holding the server's item table [I, d]
    mean: str  # the host server's mean over the uploads: "samples" (sample-weighted) | "uniform"
    shared_dense: str | None = None  # the host's attribute holding its other shared parameters (FedAvg)
    step_groups: tuple[tuple[str, ...], ...] | None = None  # the host's sub-steps per mini-batch (None: one)
    own_loop: bool = False  # the host trains through its plug point (its own round and server step)
    local_tables: str | None = None  # own_loop: the host's attribute already holding each client's table


HOSTS = {
    "fedmf": Host(fedmf.FedMF, "item_table", "samples"),
    "fedncf": Host(fedncf.FedNCF, "item_table", "samples", shared_dense="mlp"),
    "pfedrec": Host(pfedrec.PFedRec, "item_table", "uniform", step_groups=pfedrec.HEAD_THEN_ITEMS),
    "gpfedrec": Host(gpfedrec.GPFedRec, "global_table", "own", own_loop=True, local_tables="tables"),
    "fedrap": Host(fedrap.FedRAP, "common", "own", own_loop=True),
}


def shared_table(backbone: Backbone) -> str:
    """The host's declared table: its backbone's one shared item-row parameter."""
    shared = [s for s in backbone.specs if s.item_rows and s.shared]
    if len(shared) != 1:
        raise ConfigError(
            f"the EM plug-in needs exactly one shared item table in the host's backbone, found {len(shared)}"
        )
    return shared[0].name


def global_name(table: str) -> str:
    """The fixed input holding the server's rows of `table` (FedEM's MergedFCF: items -> global_items)."""
    return f"global_{table}"


class Merged(Backbone):
    """A host backbone scored on merged rows of its shared item table: the table's rows L (trained), the
    server's rows G (a fixed input, `global_<table>`), the adapter (lr group `adapter`)."""

    def __init__(self, inner: Backbone, rule: ElasticRule):
        self.inner, self.rule, self.table = inner, rule, shared_table(inner)
        self.global_name = global_name(self.table)
        self.specs = (
            *inner.specs,
            ParamSpec(self.global_name, item_rows=True, lr_group=None),
            *(ParamSpec(n, lr_group="adapter") for n in rule.names),
        )

    def logits(self, p):
        merged, _ = merge_rows(self.rule, [p[n] for n in self.rule.names], p[self.table], p[self.global_name])
        return self.inner.logits({**p, self.table: merged})


def host_context(ctx: MethodContext) -> MethodContext:
    """The host's own run config: the plug-in block without the plug-in's keys."""
    config = copy.deepcopy(ctx.config)
    config["method"] = {k: v for k, v in ctx.hparams.items() if k not in PLUGIN_KEYS}
    config["method"]["base"] = ctx.hparams["host"]
    return MethodContext(ctx.dataset, config, ctx.seed, ctx.device)


class EMPlugin(Method):
    name = "em-plugin"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        hp = ctx.hparams
        if hp["host"] not in HOSTS:
            raise ConfigError(
                f"methods.em-plugin.host='{hp['host']}': the plug-in attaches to {', '.join(sorted(HOSTS))}"
            )
        layers = hp["adapter_layers"]
        if layers[0] != 2 * ctx.training["latent_dim"] or layers[-1] != 1:
            raise ConfigError(
                f"methods.em-plugin.adapter_layers={layers}: first size must be 2*latent_dim="
                f"{2 * ctx.training['latent_dim']} and last must be 1"
            )
        if hp.get("upload_noise", 0) > 0:
            raise ConfigError(
                f"methods.{hp['host']}-em: upload_noise is not supported with the plug-in (its uploads are its own)"
            )
        self.spec = HOSTS[hp["host"]]
        self.host = self.spec.cls(host_context(ctx))
        self.rule = ElasticRule(layers)
        # the adapter takes the host's kind of optimizer step (one spec per run), at its own lr
        self.optimizer = dataclasses.replace(
            self.host.optimizer, lrs={**self.host.optimizer.lrs, "adapter": hp["adapter_lr"]}
        )
        if not self.spec.own_loop:
            # on FCF the merged backbone is FedEM's own, with its closed-form and native fast paths
            self.table = shared_table(self.host.backbone)
            self.global_name = global_name(self.table)
            fcf = isinstance(self.host.backbone, FCF)
            self.backbone = MergedFCF(self.rule) if fcf else Merged(self.host.backbone, self.rule)
            self.host_steps = self.spec.step_groups or (
                tuple(dict.fromkeys(s.lr_group for s in self.host.backbone.trainable)),
            )
            self.step_groups = (("adapter",), *self.host_steps)  # FedEM's batch: the adapter's step, then the host's
        g = self.global_table
        if self.spec.local_tables:  # the host already keeps every client's table
            self.local = getattr(self.host, self.spec.local_tables)
        else:
            self.local = g.expand((self.num_users,) + g.shape).clone()  # L_u: every client's own table
        if self.spec.own_loop:
            self.host.plug = self
        self.adapter = [
            t.to(self.device).expand((self.num_users,) + t.shape).clone() for t in self.rule.templates(ctx.seed)
        ]
        self.has_local = False  # round 0: no client has a table of its own yet
        # every client's merge(L_u, G) after a round: what it is evaluated with, and (the adapters and
        # G unchanged in between) the start of its next round, so each round merges the tables once
        self.merged = self.local.clone()  # before any round: G, the only table a client has

    @property
    def global_table(self) -> torch.Tensor:
        return getattr(self.host, self.spec.table)

    def _merge_tables(self) -> None:
        """self.merged <- merge(L_u, G) for every client, with the adapters and G of the round just run."""
        g = self.global_table
        with torch.no_grad():
            for lo in range(0, self.num_users, _MERGE_CHUNK):
                hi = min(lo + _MERGE_CHUNK, self.num_users)
                params = [p[lo:hi] for p in self.adapter]
                self.merged[lo:hi] = merge_rows(self.rule, params, self.local[lo:hi], g.expand(hi - lo, -1, -1))[0]

    def loop_merge(self, plan, pool_items: torch.Tensor) -> LoopMerge | None:
        """For an own-loop host: this round's merge inside its loop (None in round 0: no table of its own)."""
        if not self.has_local:
            return None
        ranked = plan.clients.to(self.device)
        self._round_adapter = (ranked, [p.index_select(0, ranked) for p in self.adapter])
        return LoopMerge(self.rule, self._round_adapter[1], self.global_table[pool_items], self.optimizer)

    def _train_own_loop(self, round_index, samples, negatives) -> torch.Tensor:
        self._round_adapter = None
        losses = self.host.train_round(round_index, samples, negatives)
        if self._round_adapter is not None:
            ranked, trained = self._round_adapter
            for p, t in zip(self.adapter, trained):
                p.index_copy_(0, ranked, t)
        self.has_local = True
        return losses

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        if self.has_local:  # the in-place merge at the start of the round
            self.local.copy_(self.merged)
        if self.spec.own_loop:
            losses = self._train_own_loop(round_index, samples, negatives)
        else:
            losses = self._train_through_layer(samples)
        self._merge_tables()
        return losses

    def _train_through_layer(self, samples: RoundSamples) -> torch.Tensor:
        plan = samples.plan()
        dev = self.device
        ranked = plan.clients.to(dev)
        pool_items = plan.pool_items.to(dev)
        owners = ranked[plan.pool_client.to(dev)]
        tensors = self.host.state.for_plan(plan, self.host.backbone)
        tensors[self.table] = self.local[owners, pool_items]
        tensors[self.global_name] = self.global_table[pool_items]
        tensors.update({n: p.index_select(0, ranked) for n, p in zip(self.rule.names, self.adapter)})
        towers = None
        if self.spec.shared_dense:
            shared = getattr(self.host, self.spec.shared_dense)
            towers = {n: t.expand((plan.num_clients,) + t.shape).clone() for n, t in shared.items()}
            tensors.update(towers)
        # round 0: no client has a table of its own, so each takes G and trains as the host does
        backbone, steps = (self.backbone, self.step_groups) if self.has_local else (self.host.backbone, self.host_steps)
        losses = train_clients(
            backbone,
            plan,
            tensors,
            self.optimizer,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
            step_groups=steps,
        )
        self.host.state.write_back(plan, self.host.backbone, tensors)
        self.local[owners, pool_items] = tensors[self.table]
        for n, p in zip(self.rule.names, self.adapter):
            p.index_copy_(0, ranked, tensors[n])
        self.has_local = True
        self._aggregate(plan, towers)
        out = torch.full((self.num_users,), float("nan"), dtype=torch.float64, device=dev)
        out[ranked] = losses
        return out

    def _aggregate(self, plan, towers) -> None:
        """The host's mean over the uploaded whole tables (every client trains every round)."""
        ranked = plan.clients.to(self.device)
        if self.spec.mean == "samples":
            weights = sample_weights(plan.sample_counts.to(self.device))
        else:
            weights = torch.full((plan.num_clients,), 1.0 / plan.num_clients, device=self.device)
        table = self.global_table
        table.copy_(torch.tensordot(weights.to(table.dtype), self.local.index_select(0, ranked), dims=1))
        if towers is not None:
            setattr(
                self.host, self.spec.shared_dense, fedavg(towers, sample_weights(plan.sample_counts.to(self.device)))
            )

    # ---- evaluation: merge(L_u, G) of the new G --------------------------------------------------
    def _inputs(self, users: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        p = {}
        shared = getattr(self.host, self.spec.shared_dense) if self.spec.shared_dense else {}
        for s in self.host.backbone.specs:
            if s.name == self.table:
                p[s.name] = rows
            elif s.name in shared:
                p[s.name] = shared[s.name].expand((users.numel(),) + shared[s.name].shape)
            else:
                p[s.name] = self.host.state[s.name][users]
        return p

    def _scores(self, users, items, rows):
        if self.spec.own_loop:
            return self.host.scores_on(users, items, rows)
        return self.host.backbone.scores(self._inputs(users, rows))

    def score(self, users, items):
        return self._scores(users, items, self.merged[users.unsqueeze(1), items])

    def score_all(self, users):
        return self._scores(users, None, self.merged.index_select(0, users))
