"""results/grid.json: what the last full workflow run covered, and which datasets it left out and why.

Written by the workflow (rule grid_manifest); read by the tables, so that a dataset missing from the
committed results is explained there (e.g. "ml-1m: not in the offline mirror, no network").
Deterministic: no timestamps, no host names.
"""

from __future__ import annotations

import json
from pathlib import Path

from fedem.data.dataset import atomic_write_bytes


def manifest(config: dict, left_out: list[dict]) -> dict:
    grid = config["grid"]
    dropped = {e["dataset"] for e in left_out}
    return {
        "grid": grid,
        "datasets_run": [d for d in grid["datasets"] if d not in dropped],
        "probe_datasets_run": [d for d in grid["probe_datasets"] if d not in dropped],
        "left_out": sorted(left_out, key=lambda e: e["dataset"]),
    }


def write_manifest(path: str | Path, config: dict, left_out: list[dict]) -> None:
    text = json.dumps(manifest(config, left_out), indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(Path(path), text.encode())
