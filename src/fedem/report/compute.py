"""What each Table-1 run cost: seconds per round, wall time and peak memory per (method, dataset), read
from the files every grid run leaves beside its result (the timing sidecar and Snakemake's benchmark
file), so the speed and memory figures of the notes and the README are rendered, not typed."""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from pathlib import Path

from fedem.report import layout
from fedem.report.collect import Collection
from fedem.report.tablefmt import Table
from fedem.report.tables import common_warnings, method_label, ordered_methods, starts_group

NO_CPU = "not recorded"


def _timing(results: Path, key: layout.RunKey) -> dict | None:
    path = layout.timing_path(layout.run_path(results, key))
    return json.loads(path.read_text()) if path.is_file() else None


def _peak_rss_mib(results: Path, key: layout.RunKey) -> float | None:
    """max_rss (MiB) of the run's Snakemake benchmark file: the job's whole process tree at its peak."""
    path = layout.benchmark_path(results, key)
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    values = [float(r["max_rss"]) for r in rows if r.get("max_rss") not in (None, "", "NA", "-")]
    return max(values) if values else None


def _machine(timing: dict) -> str:
    """What a run's times were measured on: its GPU (with the host CPU) when it trained on one, else its CPU."""
    cpu = timing.get("cpu") or NO_CPU
    return f"GPU {timing['gpu']} (host CPU {cpu})" if layout.trained_on_gpu(timing) else cpu


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def compute_table(coll: Collection, protocol: str) -> Table:
    results = Path(coll.results_dir)
    datasets = coll.datasets_with_runs()
    methods = ordered_methods(coll)
    cpus: Counter[str] = Counter()
    cells: dict[tuple[str, str], list[str]] = {}
    for d in datasets:
        for m in methods:
            keys = [k for k in coll.runs if (k.protocol, k.dataset, k.method) == (protocol, d, m)]
            timings = [t for t in (_timing(results, k) for k in keys) if t is not None]
            cpus.update(_machine(t) for t in timings)
            rss = [r for r in (_peak_rss_mib(results, k) for k in keys) if r is not None]
            per_round = [t["median_round_seconds"] for t in timings if t.get("median_round_seconds") is not None]
            cells[(d, m)] = [
                _fmt(statistics.median(per_round) if per_round else None, 2),
                _fmt(statistics.median(t["wall_seconds"] for t in timings) / 60 if timings else None),
                _fmt(max(rss) / 1024 if rss else None),
            ]
    machines = "; ".join(f"{cpu}: {n} run{'s' if n > 1 else ''}" for cpu, n in sorted(cpus.items()))
    table = Table(
        name=f"compute_{protocol}",
        title=f"Compute per run, {protocol} protocol",
        caption=(
            f"Per method and dataset, over the current runs of Table 1 (main_{protocol}): s/round, the median over runs of "
            "a run's median seconds per round (local training of every client and the server step; evaluation "
            "excluded); min/run, the median wall time of a run's job (data loading and every evaluation "
            "included); GB, the largest peak resident memory of a run's job (max_rss of its Snakemake "
            "benchmark file). Measured on the grid's machines while other jobs shared them, with the threads "
            "per job of config/workflow.yaml, so these are a planning guide, not a benchmark "
            "(benchmarks/bench_round.py times a round alone). "
            f"Machines (the timing sidecars' cpu field, and gpu for a run that trained on one): "
            f"{machines or 'no timing sidecar'}."
        ),
        columns=[("", "Method")] + [(d, label) for d in datasets for label in ("s/round", "min/run", "GB")],
        warnings=common_warnings(coll),
    )
    if not datasets:
        table.notes.append("No current result file for this protocol: nothing to show.")
    for i, method in enumerate(methods):
        row = [method_label(coll, method)] + [c for d in datasets for c in cells[(d, method)]]
        table.add_row(row, rule_before=starts_group(coll, methods, i))
    return table
