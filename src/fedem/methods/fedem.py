"""`fedem`: FedEM exactly as the authors' released code runs it (FEDEM.md), quirks included:
only a random `agg_clients_ratio` share of clients is aggregated per round and receives a G_u;
those clients next round first merge in place, then train with the merge applied again in every
forward pass, taking one adapter Adam step and one embedding Adam step per mini-batch.

Switches for the paper's other experiments (defaults: FedEM as released): `merge` picks where rho
comes from (fedem.methods.merging; `replace`: the client takes its G_u and trains unmerged), and
`upload_noise` adds Laplace noise to every uploaded table (the client keeps its clean copy)."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedem.errors import ConfigError
from fedem.methods.adapter import MERGED_STEPS, MergedFCF
from fedem.methods.aggregation import aggregation_matrix
from fedem.methods.base import MethodContext
from fedem.methods.local import PerClientTables
from fedem.methods.merging import make_rule, merge_rows
from fedem.methods.privacy import laplace_noise
from fedem.rng import numpy_rng, torch_gen
from fedem.training.backbones import fcf_scores
from fedem.training.schedule import RoundSamples
from fedem.training.trainer import train_clients

_MERGE_CHUNK = 64  # clients per chunk when merging whole tables (bounds peak memory)


class FedEM(PerClientTables):
    name = "fedem"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        hp = ctx.hparams
        layers = hp["adapter_layers"]
        if layers[0] != 2 * ctx.training["latent_dim"] or layers[-1] != 1:
            raise ConfigError(
                f"methods.fedem.adapter_layers={layers}: first size must be 2*latent_dim="
                f"{2 * ctx.training['latent_dim']} and last must be 1"
            )
        snap = hp["snapshot_round"]
        if snap != "last" and snap >= ctx.training["rounds"]:
            raise ConfigError(
                f"methods.fedem.snapshot_round={snap}: the run has only {ctx.training['rounds']} rounds (0-based); "
                "use a smaller round or 'last'"
            )
        self.rule = make_rule(hp)  # None: merge = replace
        self.merged_backbone = MergedFCF(self.rule) if self.rule is not None else None
        if self.rule is not None:
            for name, t in zip(self.rule.names, self.rule.templates(ctx.seed)):
                self.state.tensors[name] = t.to(self.device).expand((self.num_users,) + t.shape).clone()
        # a rule without parameters (static) has no adapter step: one embedding step per mini-batch
        self.merged_steps = MERGED_STEPS if self.rule is not None and self.rule.names else (("embedding",),)
        # the server's store, replaced every round: clients of the last aggregation set and their G_u
        self.g_clients = torch.empty(0, dtype=torch.long, device=self.device)
        self.g_tables = torch.empty((0, self.num_items, ctx.training["latent_dim"]), device=self.device)
        self.sample_counts = None

    @property
    def adapter(self) -> list[torch.Tensor]:
        """Every client's merge parameters, each [U, ...] (the elastic rule: [W1, b1, W2, b2, ...])."""
        return [] if self.rule is None else [self.state[n] for n in self.rule.names]

    # ---- local training -------------------------------------------------------------------
    def _aggregation_set(self, round_index: int) -> np.ndarray:
        """The clients aggregated (and so given a G_u) at the end of round `round_index`, sorted:
        a random agg_clients_ratio share, drawn from (seed, round) alone."""
        if round_index < 0:
            return np.empty(0, dtype=np.int64)
        n_agg = int(self.num_users * self.ctx.hparams["agg_clients_ratio"])
        rng = numpy_rng(self.ctx.seed, "aggregation-set", round_index)
        return np.sort(rng.choice(self.num_users, size=n_agg, replace=False)).astype(np.int64)

    def _groups(self, round_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(plain, merged) clients of a round: last round's aggregation set trains merged."""
        merged = self._aggregation_set(round_index - 1)
        plain = np.setdiff1d(np.arange(self.num_users), merged)
        return torch.from_numpy(plain), torch.from_numpy(merged)

    def prefetch(self, round_index: int, samples: RoundSamples) -> None:
        for group in self._groups(round_index):
            samples.plan(group)

    def train_round(self, round_index: int, samples: RoundSamples, negatives: np.ndarray) -> torch.Tensor:
        plain, merged = self._groups(round_index)
        assert torch.equal(merged.to(self.device), self.g_clients), "the G store must hold last round's aggregation set"
        losses = self.train_plain(samples, plain)
        if merged.numel():
            train = self._train_replaced if self.rule is None else self._train_merged
            losses[self.g_clients] = train(samples, merged)
        self.sample_counts = samples.counts.to(self.device)
        self._aggregate(round_index)
        return losses

    def _merge_tables_in_place(self, clients: torch.Tensor, g_tables: torch.Tensor) -> None:
        """L_u <- merge(L_u, G_u) over all item rows, without gradient (start of the round)."""
        with torch.no_grad():
            for lo in range(0, len(clients), _MERGE_CHUNK):
                idx = clients[lo : lo + _MERGE_CHUNK]
                params = [p[idx] for p in self.adapter]
                merged, _ = merge_rows(self.rule, params, self.tables[idx], g_tables[lo : lo + _MERGE_CHUNK])
                self.tables[idx] = merged

    def _train_replaced(self, samples: RoundSamples, clients_cpu: torch.Tensor) -> torch.Tensor:
        """merge = replace: L_u <- G_u, then plain local training (the ablation's static replacement)."""
        self.tables[self.g_clients] = self.g_tables
        return self.train_plain(samples, clients_cpu)[self.g_clients]

    def _train_merged(self, samples: RoundSamples, clients_cpu: torch.Tensor) -> torch.Tensor:
        tr = self.ctx.training
        clients = self.g_clients
        self._merge_tables_in_place(clients, self.g_tables)
        plan = samples.plan(clients_cpu)
        ranked = plan.clients.to(self.device)
        # position of each ranked client in the G store, and the global row of each pool row
        g_pos = torch.empty(self.num_users, dtype=torch.long, device=self.device)
        g_pos[clients] = torch.arange(len(clients), device=self.device)
        owners = ranked[plan.pool_client.to(self.device)]
        g_rows = g_pos[owners] * self.num_items + plan.pool_items.to(self.device)
        tensors = self.state.for_plan(plan, self.merged_backbone)
        tensors["global_items"] = self.g_tables.view(-1, self.g_tables.shape[-1]).index_select(0, g_rows)
        losses = train_clients(
            self.merged_backbone,
            plan,
            tensors,
            self.optimizer,
            tr["early_stop_threshold"],
            tr["kernels"],
            step_groups=self.merged_steps,
        )
        self.state.write_back(plan, self.merged_backbone, tensors)
        out = torch.empty(len(clients), dtype=torch.float64, device=self.device)
        out[g_pos[ranked]] = losses
        return out

    # ---- server ---------------------------------------------------------------------------
    def _aggregate(self, round_index: int) -> None:
        hp = self.ctx.hparams
        chosen = self._aggregation_set(round_index)
        n_agg = len(chosen)
        if n_agg == 0:
            self.g_clients = self.g_clients[:0]
            self.g_tables = self.g_tables[:0]
            return
        clients = torch.from_numpy(chosen).to(self.device)
        tables = self.tables[clients]
        if hp["upload_noise"] > 0:  # what the server sees: each upload plus fresh Laplace noise over the whole table
            gen = torch_gen(self.ctx.seed, "upload-noise", round_index)
            tables = tables + laplace_noise(tables.shape, hp["upload_noise"], gen).to(self.device)
        w = aggregation_matrix(tables, self.sample_counts[clients], hp)
        self.last_aggregation_matrix = w
        self.g_clients = clients
        self.g_tables = (w @ tables.reshape(n_agg, -1)).reshape(tables.shape)

    # ---- evaluation -----------------------------------------------------------------------
    def _merged_subset(self, users: torch.Tensor):
        """Positions (in `users`) of this round's aggregation-set clients, and their G-store slots."""
        g_pos = torch.full((self.num_users,), -1, dtype=torch.long, device=self.device)
        g_pos[self.g_clients] = torch.arange(len(self.g_clients), device=self.device)
        sel = torch.nonzero(g_pos[users] >= 0).squeeze(1)
        return sel, g_pos[users[sel]]

    def _merged_rows(self, users: torch.Tensor, local_rows: torch.Tensor, global_rows: torch.Tensor) -> torch.Tensor:
        return self._merge_eval(users, local_rows, global_rows)[0]

    def _merge_eval(self, users, local_rows, global_rows) -> tuple[torch.Tensor, torch.Tensor]:
        """(the rows a client of the aggregation set is scored with, rho) without gradient."""
        if self.rule is None:  # replace: the client holds G_u
            return global_rows, torch.ones(global_rows.shape[:-1] + (1,), device=global_rows.device)
        with torch.no_grad():
            return merge_rows(self.rule, [p[users] for p in self.adapter], local_rows, global_rows)

    def eval_tables(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Clients of this round's aggregation set are scored with merge(L_u, G_u), the rest with L_u."""
        rows = super().eval_tables(users, items)  # a gathered copy: safe to overwrite
        sel, slots = self._merged_subset(users)
        if sel.numel():
            rows[sel] = self._merged_rows(users[sel], rows[sel], self.g_tables[slots.unsqueeze(1), items[sel]])
        return rows

    def score_all(self, users):
        scores = super().score_all(users)
        sel, slots = self._merged_subset(users)
        if sel.numel():
            u = users[sel]
            merged = self._merged_rows(u, self.tables.index_select(0, u), self.g_tables.index_select(0, slots))
            scores[sel] = fcf_scores(self.user_emb[u], merged)
        return scores

    # ---- aggregation-bottleneck probe ------------------------------------------------------
    def probe_round(self, round_index: int, probe_items: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
        """For each client of this round's aggregation set: its local table L_u (just trained),
        the aggregated G_u it receives (static replacement) and the merged table, scored on the
        validation item and on a held-in train item (each against the 99 evaluation negatives);
        the divergence ||G_u - L_u||_F / ||L_u||_F; and the adapter's rho over all item rows. At
        `snapshot_round`, one client's record also holds its three whole tables."""
        from fedem.metrics import sampled_ranks

        clients = self.g_clients
        if not clients.numel():
            return []
        local = self.tables[clients]
        aggregated = self.g_tables
        merged, rho = self._merge_eval(clients, local, aggregated)
        divergence = torch.linalg.vector_norm(aggregated - local, dim=(1, 2)) / torch.linalg.vector_norm(
            local, dim=(1, 2)
        )
        rho = rho.squeeze(-1)
        quantiles = torch.quantile(rho, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], device=rho.device), dim=1).T
        user = self.user_emb[clients]
        ranks = {}
        for split, (_users, candidates) in probe_items.items():
            cand = candidates[clients]
            for name, table in (("local", local), ("aggregated", aggregated), ("merged", merged)):
                rows = table[torch.arange(len(clients), device=self.device).unsqueeze(1), cand]
                scores = torch.sigmoid((user.unsqueeze(1) * rows).sum(-1))
                ranks[name, split] = sampled_ranks(scores[:, 0], scores[:, 1:])
        sizes = self.ctx.dataset.train_counts[clients.cpu().numpy()]
        records = []
        for j, client in enumerate(clients.tolist()):
            rec = {
                "round": round_index,
                "client": client,
                "data_size": int(sizes[j]),
                "divergence": round(float(divergence[j]), 6),
                "rho_mean": round(float(rho[j].mean()), 6),
                "rho_quantiles": [round(float(x), 6) for x in quantiles[j]],
            }
            for name in ("local", "aggregated", "merged"):
                entry = {}
                for split in probe_items:
                    r = int(ranks[name, split][j])
                    entry[f"{split}_rank"] = r
                    entry[f"{split}_hr@10"] = float(r <= 10)
                    entry[f"{split}_ndcg@10"] = round(1.0 / math.log2(1 + r), 6) if r <= 10 else 0.0
                rec[name] = entry
            records.append(rec)
        if round_index == self._snapshot_round():
            # the three tables of one client for the t-SNE figure (Fig. 5): the aggregation-set client
            # with the most training interactions (the first of them on a tie)
            j = int(np.argmax(sizes))
            tables = (("local", local[j]), ("aggregated", aggregated[j]), ("merged", merged[j]))
            records[j]["tables"] = {name: [[round(x, 6) for x in row] for row in t.tolist()] for name, t in tables}
        return records

    def _snapshot_round(self) -> int:
        snap = self.ctx.hparams["snapshot_round"]
        return self.ctx.training["rounds"] - 1 if snap == "last" else snap
