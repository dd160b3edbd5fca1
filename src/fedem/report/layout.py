"""Where each file lives under the results folder: the one place the workflow and the report agree on.

    <results>/runs/{protocol}/{dataset}/{method}/seed{seed}.json            one training run
    <results>/runs/.../seed{seed}.timing.json                               its timing sidecar
    <results>/runs/.../seed{seed}.diverged.json                             a run that diverged, instead of its result
    <results>/probes/{protocol}/{dataset}/{method}/seed{seed}.json          aggregation-bottleneck probe
    <results>/probes/.../seed{seed}.result.json                             the probe run's own result file
    <results>/data_stats/{dataset}-{variant}.json                           copy of a dataset's stats
    <results>/benchmarks/train/{protocol}/{dataset}/{method}/seed{seed}.tsv  a run's Snakemake benchmark file
    <results>/benchmarks/...                                                the other jobs' benchmark files

and the names of the tables and figures the report writes (the workflow declares them as outputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedem.engine.results import divergence_path  # noqa: F401  (the path `fedem train` writes; used with run_path)

RUNS = "runs"
PROBES = "probes"
DATA_STATS = "data_stats"
BENCHMARKS = "benchmarks"

_SEED_FILE = re.compile(r"^seed(\d+)\.json$")
_PROBE_RESULT_FILE = re.compile(r"^seed(\d+)\.result\.json$")
_DIVERGED_FILE = re.compile(r"^seed(\d+)\.diverged\.json$")


@dataclass(frozen=True, order=True)
class RunKey:
    protocol: str
    dataset: str
    method: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.dataset}/{self.method}/seed{self.seed}"


def run_path(results: str | Path, key: RunKey) -> Path:
    return Path(results) / RUNS / key.protocol / key.dataset / key.method / f"seed{key.seed}.json"


def timing_path(result: Path) -> Path:
    return Path(result).with_suffix(".timing.json")


def trained_on_gpu(timing: dict) -> bool:
    """Whether a timing sidecar's run trained on a GPU (it names one; older sidecars, all CPU runs, have no field)."""
    return bool(timing.get("gpu"))


def benchmark_path(results: str | Path, key: RunKey) -> Path:
    """The Snakemake benchmark file of a grid run's job (workflow/rules/train.smk's `benchmark:`)."""
    return Path(results) / BENCHMARKS / "train" / key.protocol / key.dataset / key.method / f"seed{key.seed}.tsv"


def is_divergence_record(path: str | Path) -> bool:
    return _DIVERGED_FILE.match(Path(path).name) is not None


def probe_path(results: str | Path, key: RunKey) -> Path:
    return Path(results) / PROBES / key.protocol / key.dataset / key.method / f"seed{key.seed}.json"


def probe_result_path(results: str | Path, key: RunKey) -> Path:
    return probe_path(results, key).with_suffix(".result.json")


def data_stats_path(results: str | Path, dataset: str, variant: str) -> Path:
    return Path(results) / DATA_STATS / f"{dataset}-{variant}.json"


def _keys_under(root: Path, pattern: re.Pattern) -> list[tuple[RunKey, Path]]:
    found = []
    if not root.is_dir():
        return found
    for path in sorted(root.glob("*/*/*/*.json")):
        match = pattern.match(path.name)
        if match is None:
            continue
        protocol, dataset, method = path.relative_to(root).parts[:3]
        found.append((RunKey(protocol, dataset, method, int(match.group(1))), path))
    return found


def find_runs(results: str | Path) -> list[tuple[RunKey, Path]]:
    """Every `runs/.../seed{n}.json` present (timing sidecars excluded), sorted by path."""
    return _keys_under(Path(results) / RUNS, _SEED_FILE)


def find_divergences(results: str | Path) -> list[tuple[RunKey, Path]]:
    """Every divergence record `runs/.../seed{n}.diverged.json` present, sorted by path."""
    return _keys_under(Path(results) / RUNS, _DIVERGED_FILE)


def find_probes(results: str | Path) -> list[tuple[RunKey, Path]]:
    """Every probe file `probes/.../seed{n}.json` present, sorted by path."""
    return _keys_under(Path(results) / PROBES, _SEED_FILE)


def find_data_stats(results: str | Path) -> list[Path]:
    root = Path(results) / DATA_STATS
    return sorted(root.glob("*.json")) if root.is_dir() else []


# --- the planned runs: what `snakemake --cores 8` (and each experiment's target) trains ----------------


def grid_runs(config: dict) -> list[RunKey]:
    """Every run any table or figure asks for: the Table-1 grid's and every experiment's variants, with
    their seeds (`grid.fewer_seeds` honoured)."""
    from fedem.config import planned_methods, planned_seeds

    grid = config["grid"]
    return [
        RunKey(p, d, m, s)
        for p in grid["protocols"]
        for d in grid["datasets"]
        for m in planned_methods(config)
        for s in sorted(planned_seeds(config, m, d))
    ]


def table1_runs(config: dict) -> list[RunKey]:
    from fedem.config import grid_seeds

    grid = config["grid"]
    return [
        RunKey(p, d, m, s)
        for p in grid["protocols"]
        for d in grid["datasets"]
        for m in grid["methods"]
        for s in grid_seeds(config, m, d)
    ]


def experiment_runs(config: dict, name: str) -> list[RunKey]:
    """The runs one experiment's tables read (the Table-1 runs it shares included)."""
    from fedem.config import experiment_datasets, experiment_methods

    seeds, methods = config["experiments"][name]["seeds"], experiment_methods(config)[name]
    datasets = experiment_datasets(config, name)
    return [RunKey(p, d, m, s) for p in config["grid"]["protocols"] for d in datasets for m in methods for s in seeds]


# --- tables (each as .md, .tex and .csv) and figures (each as .pdf and .png) -------------------

TABLE_SUFFIXES = (".md", ".tex", ".csv")
TABLE_EXTRAS = ("provenance.md", "all_runs.csv")
FIGURE_SUFFIXES = (".pdf", ".png")
PROTOCOL_GAP_FIGURE = "protocol_gap"
PROBE_FIGURE_KINDS = ("models", "divergence", "change", "rho")


# the table sets `python -m fedem.report tables --set` writes: Table 1 and its companions, and one set
# per experiment (fedem.report.experiments)
TABLE_SETS = ("main", "ablation", "plugin", "ldp", "sensitivity")
SENSITIVITY_FIGURE = "sensitivity"


def table_names(protocols: list[str], table_set: str = "main") -> list[str]:
    if table_set != "main":
        return [f"{table_set}_{protocol}" for protocol in protocols]
    names = ["datasets"]
    for protocol in protocols:
        names += [
            f"main_{protocol}",
            f"main_full_ranking_{protocol}",
            f"test_selected_{protocol}",
            f"compute_{protocol}",
        ]
    return names + ["protocol_gap"]


def table_files(protocols: list[str], table_set: str | None = None) -> list[str]:
    """Every file name `python -m fedem.report tables` writes for a grid with these protocols (one set,
    or every set)."""
    sets = TABLE_SETS if table_set is None else (table_set,)
    files = [f"{n}{s}" for t in sets for n in table_names(protocols, t) for s in TABLE_SUFFIXES]
    return files + (list(TABLE_EXTRAS) if "main" in sets else [])


def tsne_figure(dataset: str) -> str:
    return f"tsne_{dataset}"


def convergence_figure(dataset: str) -> str:
    return f"convergence_{dataset}"


def probe_figure(kind: str, dataset: str) -> str:
    return f"probe_{kind}_{dataset}"
