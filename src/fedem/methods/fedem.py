"""`fedem`: FedEM exactly as the authors' released code runs it (FEDEM.md), quirks included:
only a random `agg_clients_ratio` share of clients is aggregated per round and receives a G_u;
those clients next round first merge in place, then train with the merge applied again in every
forward pass, taking one adapter Adam step and one embedding Adam step per mini-batch."""

from __future__ import annotations

import math

import numpy as np
import torch

from fedem.batching import RoundSamples
from fedem.local_loop import run_local_training
from fedem.methods.adapter import init_adapter, merge, merged_forward_backward
from fedem.methods.aggregation import aggregation_matrix
from fedem.methods.base import MethodContext
from fedem.methods.fcf import fcf_scores
from fedem.methods.local import PerClientTables
from fedem.numerics.adam import StackedAdam
from fedem.numerics.compiled import index_add_rows, maybe_compiled
from fedem.numerics.native.merged_train import train_merged_clients
from fedem.rng import numpy_rng

_MERGE_CHUNK = 64  # clients per chunk when merging whole tables (bounds peak memory)


class FedEM(PerClientTables):
    name = "fedem"

    def __init__(self, ctx: MethodContext):
        super().__init__(ctx)
        hp = ctx.hparams
        layers = hp["adapter_layers"]
        if layers[0] != 2 * ctx.training["latent_dim"] or layers[-1] != 1:
            from fedem.errors import ConfigError

            raise ConfigError(
                f"methods.fedem.adapter_layers={layers}: first size must be 2*latent_dim="
                f"{2 * ctx.training['latent_dim']} and last must be 1"
            )
        template = init_adapter(layers, ctx.seed)
        self.adapter = [t.to(self.device).expand((self.num_users,) + t.shape).clone() for t in template]
        # the server's store, replaced every round: clients of the last aggregation set and their G_u
        self.g_clients = torch.empty(0, dtype=torch.long, device=self.device)
        self.g_tables = torch.empty((0, self.num_items, ctx.training["latent_dim"]), device=self.device)
        self.sample_counts = None

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
        losses = self.train_plain(samples, self.ctx.hparams["lr_embedding"], plain)
        if merged.numel():
            losses[self.g_clients] = self._train_merged(samples, merged)
        self.sample_counts = samples.counts.to(self.device)
        self._aggregate(round_index)
        return losses

    def _merge_tables_in_place(self, clients: torch.Tensor, g_tables: torch.Tensor) -> None:
        """L_u <- merge(L_u, G_u) over all item rows, without gradient (start of the round)."""
        with torch.no_grad():
            for lo in range(0, len(clients), _MERGE_CHUNK):
                idx = clients[lo : lo + _MERGE_CHUNK]
                params = [p[idx] for p in self.adapter]
                merged, _ = merge(params, self.tables[idx], g_tables[lo : lo + _MERGE_CHUNK])
                self.tables[idx] = merged

    def _train_merged(self, samples: RoundSamples, clients_cpu: torch.Tensor) -> torch.Tensor:
        tr, hp, adam = self.ctx.training, self.ctx.hparams, self.ctx.adam
        clients = self.g_clients
        self._merge_tables_in_place(clients, self.g_tables)
        plan = samples.plan(clients_cpu)
        ranked = plan.clients.to(self.device)
        # position of each ranked client in the G store
        g_pos = torch.empty(self.num_users, dtype=torch.long, device=self.device)
        g_pos[clients] = torch.arange(len(clients), device=self.device)
        pool_client = plan.pool_client.to(self.device)
        owners = ranked[pool_client]
        pool_items = plan.pool_items.to(self.device)
        d = self.tables.shape[-1]
        table_rows = self.tables.view(-1, d)
        flat_rows = owners * self.num_items + pool_items
        pool_l = table_rows.index_select(0, flat_rows)
        pool_g = self.g_tables.view(-1, d).index_select(0, g_pos[owners] * self.num_items + pool_items)
        users = self.user_emb[ranked]
        adapter = [p[ranked] for p in self.adapter]
        if tr["kernels"] == "native" and self.device.type == "cpu":
            losses = train_merged_clients(plan, pool_l, pool_g, users, adapter, hp["lr_embedding"], hp["lr_adapter"],
                                          adam, tr["early_stop_threshold"])
        else:
            losses = self._train_merged_torch(plan, pool_l, pool_g, users, adapter, pool_client)
        table_rows.index_copy_(0, flat_rows, pool_l)
        self.user_emb[ranked] = users
        for stored, trained in zip(self.adapter, adapter):
            stored[ranked] = trained
        out = torch.empty(len(clients), dtype=torch.float64, device=self.device)
        out[g_pos[ranked]] = losses
        return out

    def _train_merged_torch(self, plan, pool_l, pool_g, users, adapter, pool_client) -> torch.Tensor:
        """The lockstep torch path of _train_merged's local training (all clients at once)."""
        tr, hp, adam = self.ctx.training, self.ctx.hparams, self.ctx.adam
        d = pool_l.shape[1]
        betas = (adam["beta1"], adam["beta2"], adam["eps"])
        compiled = tr["kernels"] != "eager"
        # the adapter's step is compute-bound (small batched GEMMs): compiling it and the merged
        # forward/backward saved ~15 % of this group's time but cost ~40 s of compiling a run
        adapter_opt = StackedAdam(adapter, hp["lr_adapter"], *betas, compiled=False)
        user_opt = StackedAdam([users], hp["lr_embedding"], *betas, compiled=compiled)
        pool_opt = StackedAdam([pool_l], hp["lr_embedding"], *betas, compiled=compiled)

        grad_pool = pool_opt.grads[0]
        add_rows = maybe_compiled(index_add_rows, compiled)

        def step(k, batch, active):
            ck, rk = plan.active_counts[k], plan.pool_prefix(k)
            mask = None if bool(active.all()) else active
            row_mask = None if mask is None else active[pool_client[:rk]]
            rows = batch.rows.reshape(-1)
            g_rows = pool_g.index_select(0, rows).view(ck, -1, d)
            batch_args = (batch.labels, batch.valid, batch.count)
            # (a) one Adam step on the adapter only
            l_rows = pool_l.index_select(0, rows).view(ck, -1, d)
            _, grads = merged_forward_backward([p[:ck] for p in adapter], l_rows, g_rows, users[:ck], *batch_args,
                                               want="adapter")
            for buf, grad in zip(adapter_opt.grads, grads):
                buf[:ck].copy_(grad)
            adapter_opt.step(k + 1, ck, mask)
            # (b) a fresh forward with the updated adapter; one Adam step on (p_u, L_u)
            loss, (grad_rows, grad_user) = merged_forward_backward(
                [p[:ck] for p in adapter], l_rows, g_rows, users[:ck], *batch_args, want="embeddings")
            add_rows(grad_pool[:rk], rows, grad_rows.reshape(-1, d))
            user_opt.grads[0][:ck].copy_(grad_user)
            user_opt.step(k + 1, ck, mask)
            pool_opt.step(k + 1, rk, row_mask)
            return loss

        return run_local_training(plan, tr["early_stop_threshold"], step)

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
        with torch.no_grad():
            merged, _ = merge([p[users] for p in self.adapter], local_rows, global_rows)
        return merged

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
        the divergence ||G_u - L_u||_F / ||L_u||_F; and the adapter's rho over all item rows."""
        from fedem.metrics import sampled_ranks

        clients = self.g_clients
        if not clients.numel():
            return []
        local = self.tables[clients]
        aggregated = self.g_tables
        with torch.no_grad():
            merged, rho = merge([p[clients] for p in self.adapter], local, aggregated)
        divergence = torch.linalg.vector_norm(aggregated - local, dim=(1, 2)) / torch.linalg.vector_norm(local, dim=(1, 2))
        rho = rho.squeeze(-1)
        quantiles = torch.quantile(rho, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], device=rho.device), dim=1).T
        user = self.user_emb[clients]
        ranks = {}
        for split, (users, candidates) in probe_items.items():
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
        return records
