"""Synthetic result and probe files for the report tests (written to tmp dirs only, never committed).

Result files carry the hashes the current code and config would give them, so the report treats
them as current unless a test tampers with them."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np

from fedem.config import base_of, load_config, run_config
from fedem.engine.results import RESULT_SCHEMA_VERSION, config_hash, sealed, training_code_hash
from fedem.engine.selection import selection_blocks
from fedem.report import layout
from fedem.report.layout import RunKey

from conftest import REPO

KS = (5, 10, 20)


@functools.cache
def _code_hash(base: str) -> str:
    """training_code_hash, once per base and test process (it parses the sources: ~0.1 s a call, and the
    synthetic grids hold hundreds of files)."""
    return training_code_hash(base)


def grid_config(**grid) -> dict:
    config = load_config(REPO / "config" / "config.yaml")
    config["grid"].update(grid)
    return config


def _metrics(hr10: float) -> dict:
    out = {}
    for k in KS:
        hr = min(1.0, hr10 * k / 10)
        out[f"hr@{k}"] = hr
        out[f"ndcg@{k}"] = hr * 0.6
    return out


def make_result(
    config: dict,
    key: RunKey,
    level: float,
    rounds: int = 5,
    probe: bool = False,
    data_hash: str = "0" * 64,
    code_hash: str | None = None,
) -> dict:
    cfg = copy.deepcopy(config)
    if probe:
        cfg["probe"]["enabled"] = True
    rc = run_config(cfg, key.protocol, key.method)
    curve = [level * (t + 1) / rounds for t in range(rounds)]
    entries = [
        {
            "round": t,
            "train_loss": 0.5 / (t + 1),
            "val": _metrics(v),
            "test": _metrics(v * 0.95),
            "test_full_ranking": _metrics(v * 0.2),
        }
        for t, v in enumerate(curve)
    ]
    return sealed(
        {
            "schema_version": RESULT_SCHEMA_VERSION,
            "protocol": key.protocol,
            "dataset": key.dataset,
            "method": key.method,
            "seed": key.seed,
            "config": rc,
            "config_hash": config_hash(rc),
            "data_hash": data_hash,
            "code_hash": code_hash or _code_hash(base_of(config, key.method)),
            "code_version": "test",
            "torch_version": "test",
            "device": "cpu",
            "rounds": entries,
            **selection_blocks(entries, rc["training"]["selection_metric"]),
        }
    )


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


LEVELS = {"fedem": 0.60, "fedmf": 0.50, "local": 0.40, "neg-count": 0.30}
CLEAN_FACTOR = {"fedem": 0.5, "fedmf": 0.8, "local": 0.6, "neg-count": 0.1}


def level_of(key: RunKey) -> float:
    base = LEVELS.get(key.method, 0.45) * (CLEAN_FACTOR.get(key.method, 0.7) if key.protocol == "clean" else 1.0)
    return base + 0.01 * key.seed


def write_grid_results(results: Path, config: dict, rounds: int = 5) -> list[Path]:
    grid = config["grid"]
    paths = []
    for p in grid["protocols"]:
        for d in grid["datasets"]:
            for m in grid["methods"]:
                for s in grid["seeds"]:
                    key = RunKey(p, d, m, s)
                    paths.append(
                        write_json(layout.run_path(results, key), make_result(config, key, level_of(key), rounds))
                    )
    return paths


def write_planned_results(results: Path, config: dict, rounds: int = 5) -> list[Path]:
    """Every run the workflow plans: Table 1's grid and each experiment's variants with their seeds."""
    from fedem.config import planned_methods, planned_seeds

    paths = []
    for p in config["grid"]["protocols"]:
        for d in config["grid"]["datasets"]:
            for m in planned_methods(config):
                for s in sorted(planned_seeds(config, m)):
                    key = RunKey(p, d, m, s)
                    paths.append(
                        write_json(layout.run_path(results, key), make_result(config, key, level_of(key), rounds))
                    )
    return paths


def make_probe(key: RunKey, rounds: int = 6, clients: int = 40, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 300, size=clients)
    records = []
    for t in range(rounds):
        for u in rng.choice(clients, size=clients // 2, replace=False):
            div = float(rng.gamma(2.0, 0.2) * (1 + t / rounds))
            rank = int(rng.integers(1, 40))
            ranks = {
                "local": rank,
                "aggregated": min(100, rank + int(div * 20 * rng.random())),
                "merged": max(1, rank - 1),
            }
            local, agg, merged = (
                {
                    "val_rank": r,
                    "val_hr@10": float(r <= 10),
                    "val_ndcg@10": float(r <= 10) / np.log2(1 + r),
                    "train_rank": 1,
                    "train_hr@10": 1.0,
                    "train_ndcg@10": 1.0,
                }
                for r in (ranks["local"], ranks["aggregated"], ranks["merged"])
            )
            q = np.sort(rng.random(5))
            records.append(
                {
                    "round": t,
                    "client": int(u),
                    "data_size": int(sizes[u]),
                    "divergence": div,
                    "rho_mean": float(q.mean()),
                    "rho_quantiles": [float(x) for x in q],
                    "local": local,
                    "aggregated": agg,
                    "merged": merged,
                }
            )
    return {
        "protocol": key.protocol,
        "dataset": key.dataset,
        "method": key.method,
        "seed": key.seed,
        "records": records,
    }


def write_grid_probes(results: Path, config: dict, snapshot_items: int = 0) -> list[Path]:
    """Probe files of fedem; with snapshot_items, the last round's first record holds three random tables."""
    grid = config["grid"]
    paths = []
    for p in grid["protocols"]:
        for d in grid["probe_datasets"]:
            for s in grid["probe_seeds"]:
                key = RunKey(p, d, "fedem", s)
                result = make_result(config, key, 0.5, probe=True)
                probe = make_probe(key, seed=s)
                if snapshot_items:
                    rng = np.random.default_rng(s)
                    last = max(r["round"] for r in probe["records"])
                    rec = next(r for r in probe["records"] if r["round"] == last)
                    rec["tables"] = {
                        m: rng.normal(size=(snapshot_items, 4)).round(6).tolist()
                        for m in ("local", "aggregated", "merged")
                    }
                probe.update({k: result[k] for k in ("config_hash", "code_hash", "data_hash")})  # as the CLI writes it
                paths.append(write_json(layout.probe_path(results, key), sealed(probe)))
                write_json(layout.probe_result_path(results, key), result)
    return paths
