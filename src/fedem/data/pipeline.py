"""prepare = fetch + verify + parse + preprocess + write the artifact and its stats."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fedem.data.dataset import FederatedDataset, atomic_write_bytes, load_dataset, save_dataset
from fedem.data.fetch import ensure_raw, resolve_mirror
from fedem.data.preprocess import PREPROCESS_VERSION, dataset_stats, preprocess
from fedem.data.registry import get_spec

log = logging.getLogger(__name__)


def artifact_path(config: dict, dataset: str, dedupe: bool) -> Path:
    data = config["data"]
    variant = f"{'dedupe' if dedupe else 'dups'}-seed{data['data_seed']}-v{PREPROCESS_VERSION}"
    return Path(data["processed_dir"]) / dataset / f"{variant}.npz"


def stats_path(artifact: Path) -> Path:
    return artifact.with_suffix(".stats.json")


def raw_file(config: dict, dataset: str) -> Path:
    data = config["data"]
    return ensure_raw(
        get_spec(dataset),
        Path(data["raw_dir"]),
        resolve_mirror(data["mirror"]),
        data["allow_download"],
        data["download_timeout_s"],
    )


def prepare(config: dict, dataset: str, dedupe: bool, force: bool = False) -> tuple[FederatedDataset, dict]:
    """Returns the processed dataset (building it if absent) and its stats (with build seconds)."""
    spec = get_spec(dataset)  # fails early, listing valid keys
    out = artifact_path(config, dataset, dedupe)
    if out.is_file() and stats_path(out).is_file() and not force:
        ds = load_dataset(out)
        return ds, json.loads(stats_path(out).read_text())
    start = time.perf_counter()
    raw = raw_file(config, dataset)
    rows = spec.parser(raw)
    data = config["data"]
    ds = preprocess(
        rows,
        dataset=dataset,
        dedupe=dedupe,
        min_user_interactions=data["min_user_interactions"],
        num_eval_negatives=data["num_eval_negatives"],
        data_seed=data["data_seed"],
    )
    ds.meta["raw_sha256"] = spec.sha256
    save_dataset(ds, out)
    stats = dataset_stats(ds)
    stats["preprocess_seconds"] = round(time.perf_counter() - start, 3)
    atomic_write_bytes(stats_path(out), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    log.info("prepared %s (dedupe=%s) -> %s", dataset, dedupe, out)
    return ds, stats
