"""The compute table (fedem.report.compute) from synthetic runs with hand-set timing sidecars and
Snakemake benchmark files: medians, the peak, missing files, and only current runs counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedem.report import layout
from fedem.report.collect import collect
from fedem.report.layout import RunKey
from fedem.report.tables import build_tables

from report_fixtures import grid_config, level_of, make_result, write_grid_results, write_json

BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture
def config():
    return grid_config(datasets=["ml-100k", "filmtrust"], seeds=[0, 1, 2], probe_datasets=[], probe_seeds=[])


def write_costs(
    results: Path, key: RunKey, per_round: float, wall: float, rss_mib: float, cpu: str | None, gpu: str | None = None
) -> None:
    timing = {"median_round_seconds": per_round, "wall_seconds": wall, "round_seconds": [per_round]}
    if cpu is not None:
        timing["cpu"] = cpu
    if gpu is not None:
        timing["gpu"] = gpu
    write_json(layout.timing_path(layout.run_path(results, key)), timing)
    bench = layout.benchmark_path(results, key)
    bench.parent.mkdir(parents=True, exist_ok=True)
    bench.write_text(BENCHMARK_HEADER + f"{wall}\t0:00:01\t{rss_mib}\t1\t1\t1\t0\t0\t90\t{wall}\n")


def compute_row(results: Path, config: dict, protocol: str, label: str) -> list[str]:
    table = next(t for t in build_tables(collect(results, config)) if t.name == f"compute_{protocol}")
    assert [c for _, c in table.columns[:4]] == ["Method", "s/round", "min/run", "GB"]
    return next([c.text for c in row] for row in table.rows if row[0].text == label)


def test_cells_are_medians_over_runs_and_the_peak(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    # fedem on ml-100k, authors: per round 1, 2, 9 s (median 2); wall 60, 120, 600 s (median 2 min);
    # peak RSS 1024, 3072, 2048 MiB (max 3 GB)
    for seed, (per_round, wall, rss) in enumerate([(1.0, 60.0, 1024), (2.0, 120.0, 3072), (9.0, 600.0, 2048)]):
        write_costs(
            results, RunKey("authors", "ml-100k", "fedem", seed), per_round, wall, rss, "CPU A" if seed else None
        )
    write_costs(results, RunKey("authors", "filmtrust", "fedem", 0), 0.25, 30.0, 512, "CPU B")
    row = compute_row(results, config, "authors", "fedem")
    assert row[1:7] == ["2.00", "2.0", "3.0", "0.25", "0.5", "0.5"]
    other = compute_row(results, config, "authors", "fedmf")
    assert other[1:] == ["—"] * 6  # runs without sidecars or benchmark files
    caption = next(t for t in build_tables(collect(results, config)) if t.name == "compute_authors").caption
    assert "CPU A: 2 runs; CPU B: 1 run; not recorded: 1 run." in caption


def test_a_stale_run_does_not_count(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    key = RunKey("clean", "ml-100k", "fedem", 0)
    write_costs(results, key, 5.0, 300.0, 4096, "CPU A")
    assert compute_row(results, config, "clean", "fedem")[1:4] == ["5.00", "5.0", "4.0"]
    stale = make_result(config, key, level_of(key), code_hash="0" * 16)  # other training code: stale
    write_json(layout.run_path(results, key), stale)
    assert compute_row(results, config, "clean", "fedem")[1:4] == ["—"] * 3


def test_benchmark_file_without_max_rss_reads_as_missing(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    key = RunKey("authors", "ml-100k", "fedmf", 1)
    write_costs(results, key, 3.0, 90.0, 100, None)
    layout.benchmark_path(results, key).write_text(BENCHMARK_HEADER.replace("max_rss", "other"))
    assert compute_row(results, config, "authors", "fedmf")[1:4] == ["3.00", "1.5", "—"]


def test_a_gpu_run_is_named_by_its_gpu_not_filed_under_its_host_cpu(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    write_costs(results, RunKey("authors", "ml-100k", "fedem", 0), 1.0, 60.0, 1024, "CPU A")
    write_costs(results, RunKey("authors", "ml-100k", "fedem", 1), 0.5, 30.0, 1024, "CPU A", gpu="NVIDIA H200")
    caption = next(t for t in build_tables(collect(results, config)) if t.name == "compute_authors").caption
    assert "CPU A: 1 run; GPU NVIDIA H200 (host CPU CPU A): 1 run" in caption
