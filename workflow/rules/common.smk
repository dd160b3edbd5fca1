# Helpers of the workflow: config validation, paths, the run grid, data availability, input
# functions. Training, preprocessing and reporting logic lives in the fedem package, not here.

import functools
import hashlib
import os
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml

import fedem.config
from fedem.data.availability import check_dataset
from fedem.data.dataset import atomic_write_bytes
from fedem.data.pipeline import artifact_path
from fedem.data.registry import DATASETS
from fedem.engine.results import config_hash, training_code_hash
from fedem.errors import ConfigError
from fedem.report import layout
from fedem.report.collect import current_divergences
from fedem.report.layout import RunKey
from fedem.report.provenance import Expected, expected_for


# ---------------------------------------------------------------------------------------------
# Config: `workflow` (config/workflow.yaml) steers Snakemake; everything else is the package
# config (config/config.yaml, or config/smoke.yaml via --configfile), validated by fedem itself.

WORKFLOW_KEY = "workflow"
WORKFLOW_SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "workflow.schema.yaml"


def _first_error(validator, data, source):
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        hint = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"invalid config in {source} at '{where}': {err.message}{extra}")


STRING_HINT = ("Note: Snakemake passes nested --config values as strings (e.g. --config 'training={rounds: 3}' "
               "gives '3'); put such overrides in a small YAML file and add it with --configfile")


def split_config(cfg):
    """(package config, workflow settings), both validated; errors name the offending key."""
    try:
        return _split_config(cfg)
    except ConfigError as exc:
        if "is not of type" in str(exc):
            raise ConfigError(f"{exc}. {STRING_HINT}") from None
        raise


def _split_config(cfg):
    schema = yaml.safe_load(WORKFLOW_SCHEMA.read_text())
    _first_error(jsonschema.Draft202012Validator(schema), {WORKFLOW_KEY: cfg.get(WORKFLOW_KEY)} if WORKFLOW_KEY in cfg
                 else {}, "config/workflow.yaml (the `workflow` section)")
    # `inherits` (config/smoke.yaml): Snakemake has already merged that file over config/config.yaml
    package = {k: v for k, v in cfg.items() if k not in (WORKFLOW_KEY, fedem.config.INHERITS_KEY)}
    package = fedem.config.floats_as_typed(package)  # Snakemake's YAML reads 1e-3 as a string
    fedem.config.validate(package, "the Snakemake config (config/config.yaml, then --configfile, then --config)")
    grid = package["grid"]
    unknown = [("grid.protocols", p, sorted(package["protocols"])) for p in grid["protocols"] if p not in package["protocols"]]
    unknown += [("grid.methods", m, sorted(package["methods"])) for m in grid["methods"] if m not in package["methods"]]
    unknown += [(f"grid.{k}", d, sorted(DATASETS)) for k in ("datasets", "probe_datasets") for d in grid[k] if d not in DATASETS]
    if unknown:
        where, value, valid = unknown[0]
        raise ConfigError(f"invalid config at '{where}': '{value}' is not one of {', '.join(valid)}")
    return package, cfg[WORKFLOW_KEY]


PACKAGE_CONFIG, WF = split_config(config)
GRID = PACKAGE_CONFIG["grid"]
RESULTS = WF["results_dir"]
TABLES = WF["tables_dir"]
FIGURES = WF["figures_dir"]
LOGS = WF["logs_dir"]
PROCESSED = PACKAGE_CONFIG["data"]["processed_dir"]
# Jobs run `python` from the environment running Snakemake, whether or not it was activated.
shell.prefix(f"set -euo pipefail; export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; ")
CODE_HASH = training_code_hash()  # every method's training code: re-renders tables when any changes
EXPECTED = expected_for(PACKAGE_CONFIG)


def method_code_hash(wildcards):
    """The training code of this run's method: a change re-runs exactly that method's jobs."""
    return EXPECTED.code_hash(wildcards.method)


def probe_code_hash(wildcards):
    return EXPECTED.code_hash(wildcards.method)


def write_resolved_config(package):
    """The merged package config as jobs see it (config.yaml, then --configfile, then --config), stored under
    a content-addressed name so a later invocation with another config never changes it under a job."""
    text = f"# resolved by the Snakefile from the Snakemake config; do not edit\n{yaml.safe_dump(package, sort_keys=False)}"
    path = Path(".snakemake") / "fedem" / f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file() or path.read_text() != text:
        atomic_write_bytes(path, text.encode())
    return str(path)


# Shell commands of prepare/train/probe use CONFIG_FILE directly, not through params: its name
# changes with any config key (the grid included), and as a param it would make Snakemake re-run
# every job on any edit. Those rules carry the hashes that matter as params instead.
CONFIG_FILE = write_resolved_config(PACKAGE_CONFIG)
# after the tables, re-render the README's results block from them (never in the smoke run)
README_STEP = (
    f" && python -m fedem.report readme --readme {shlex.quote(WF['readme_file'])} --tables {shlex.quote(TABLES)} "
    f"--results {shlex.quote(RESULTS)} --config {shlex.quote(CONFIG_FILE)}"
    if WF.get("readme_file")
    else ""
)


# ---------------------------------------------------------------------------------------------
# The grid and where its files go (layout shared with fedem.report).

def grid_runs():
    """The Table-1 grid's runs and every experiment's (`experiments`: their variants, with their seeds)."""
    return layout.grid_runs(PACKAGE_CONFIG)


EXPERIMENTS = tuple(fedem.config.experiment_methods(PACKAGE_CONFIG))


def table1_runs():
    return layout.table1_runs(PACKAGE_CONFIG)


def experiment_runs(name):
    return layout.experiment_runs(PACKAGE_CONFIG, name)


def grid_probes():
    return [RunKey(p, d, m, s) for p in GRID["protocols"] for d in GRID["probe_datasets"]
            for m in fedem.config.probed_methods(PACKAGE_CONFIG) for s in GRID["probe_seeds"]]


def dedupe_of(protocol):
    return PACKAGE_CONFIG["protocols"][protocol]["dedupe"]


def variant_of(dataset, protocol):
    return artifact_path(PACKAGE_CONFIG, dataset, dedupe_of(protocol)).stem


def stats_copy(dataset, protocol):
    return str(layout.data_stats_path(RESULTS, dataset, variant_of(dataset, protocol)))


@functools.cache
def diverged_runs():
    """Runs that stopped at a non-finite loss or score under the current code and config (their divergence
    record says so): not asked for again. A changed config or training code makes the record stale."""
    return current_divergences(RESULTS, PACKAGE_CONFIG, EXPECTED)


def run_files(keys):
    """Each run's result file, or its current divergence record (which exists: a new one re-renders the tables)."""
    return [
        str(layout.divergence_path(layout.run_path(RESULTS, k)) if k in diverged_runs() else layout.run_path(RESULTS, k))
        for k in keys
    ]


def dataset_outputs(dataset):
    """Every file the grid wants for `dataset`: runs, probes and the dataset's stats copies."""
    files = run_files(k for k in grid_runs() if k.dataset == dataset)
    files += [str(layout.probe_path(RESULTS, k)) for k in grid_probes() if k.dataset == dataset]
    files += sorted({stats_copy(dataset, p) for p in GRID["protocols"]})
    return files


def grid_datasets():
    return list(dict.fromkeys(GRID["datasets"] + GRID["probe_datasets"]))


# ---------------------------------------------------------------------------------------------
# Which datasets can be had here. Asked lazily, only when the full workflow (rule all) is built,
# and only for datasets with missing outputs: `snakemake figures`/`tables` never ask, and a fresh
# clone with committed results asks nothing.

@functools.cache
def dataset_status():
    status = {}
    for dataset in grid_datasets():
        if all(os.path.exists(f) for f in dataset_outputs(dataset)):
            status[dataset] = None  # nothing to make
            continue
        dedupes = tuple(sorted({dedupe_of(p) for p in GRID["protocols"]}))
        status[dataset] = check_dataset(PACKAGE_CONFIG, dataset, dedupes, WF["head_timeout_s"])
    unavailable = [a for a in status.values() if a is not None and not a.available]
    if unavailable:
        bar = "!" * 96
        lines = [bar, f"!! {len(unavailable)} DATASET(S) LEFT OUT: their data cannot be obtained on this machine now."]
        for a in unavailable:
            lines += [f"!!   {a.dataset}: {a.detail}.", f"!!     To supply it: {a.how_to_supply(PACKAGE_CONFIG['data']['raw_dir'])}."]
        lines += ["!! The run goes on without them; the tables list them as having no results.", bar]
        banner = "\n".join(lines)
        print(banner, file=sys.stderr)
        # machine-specific text (what answered, what did not) goes to the console and this log only,
        # never into a committed table
        atomic_write_bytes(Path(LOGS) / "left_out.txt", (banner + "\n").encode())
    return status


def left_out():
    raw_dir = PACKAGE_CONFIG["data"]["raw_dir"]
    return [a.as_dict(raw_dir) for a in dataset_status().values() if a is not None and not a.available]


def dir_of_first_output(wildcards, output):
    return str(Path(output[0]).parent)


def kept_datasets(datasets):
    dropped = {e["dataset"] for e in left_out()}
    return [d for d in datasets if d not in dropped]


def expected_outputs(wildcards=None):
    """Runs, probes and stats copies of every dataset that is not left out."""
    return [f for d in kept_datasets(grid_datasets()) for f in dataset_outputs(d)]


def _kept_files(keys):
    keep = set(kept_datasets(GRID["datasets"]))
    stats = sorted({stats_copy(k.dataset, k.protocol) for k in keys if k.dataset in keep})
    return run_files(k for k in keys if k.dataset in keep) + stats


def table1_outputs(wildcards=None):
    """What Table 1 and its companions read: the grid's runs and probes, and the stats copies."""
    keep = set(kept_datasets(GRID["probe_datasets"]))
    probes = [str(layout.probe_path(RESULTS, k)) for k in grid_probes() if k.dataset in keep]
    return _kept_files(table1_runs()) + probes


def table1_and_experiment_tables(wildcards=None):
    """render_tables also writes the README's results block, which shows the experiments' tables: it runs
    after them."""
    return table1_outputs() + [f for name in EXPERIMENTS for f in table_files(name)]


def experiment_outputs(wildcards):
    return _kept_files(experiment_runs(wildcards.table_set))


def sensitivity_outputs(wildcards):
    return _kept_files(experiment_runs("sensitivity"))


def table_files(table_set=None):
    return [f"{TABLES}/{name}" for name in layout.table_files(GRID["protocols"], table_set)]


def experiment_table_pattern():
    return [f"{TABLES}/{{table_set}}_{p}{ext}" for p in GRID["protocols"] for ext in layout.TABLE_SUFFIXES]


def figure_files(wildcards=None):
    names = [layout.convergence_figure(d) for d in kept_datasets(GRID["datasets"])]
    names += [layout.probe_figure(k, d) for d in kept_datasets(GRID["probe_datasets"]) for k in layout.PROBE_FIGURE_KINDS]
    names += [layout.tsne_figure(d) for d in kept_datasets(GRID["probe_datasets"])]
    names += [layout.PROTOCOL_GAP_FIGURE, layout.SENSITIVITY_FIGURE]
    return [f"{FIGURES}/{n}{ext}" for n in names for ext in layout.FIGURE_SUFFIXES]


def targets_of(name):
    """The input function of target rule `name` (evaluated only when the target is asked for: building the
    list asks which datasets can be had)."""

    def inputs(wildcards):
        return target_files(name)

    return inputs


def target_files(name):
    """What `snakemake <name>` makes for one of the paper's experiments."""
    if name in EXPERIMENTS:
        files = table_files(name)
        if name == "sensitivity":
            files += [f"{FIGURES}/{layout.SENSITIVITY_FIGURE}{ext}" for ext in layout.FIGURE_SUFFIXES]
        return files
    if name == "tsne":
        return [f"{FIGURES}/{layout.tsne_figure(d)}{ext}" for d in kept_datasets(GRID["probe_datasets"])
                for ext in layout.FIGURE_SUFFIXES]
    if name == "convergence":
        return [f"{FIGURES}/{layout.convergence_figure(d)}{ext}" for d in kept_datasets(GRID["datasets"])
                for ext in layout.FIGURE_SUFFIXES]
    raise ValueError(name)


def all_targets(wildcards):
    return expected_outputs() + table_files() + figure_files()


# ---------------------------------------------------------------------------------------------
# Input functions and params of the rules (named functions: no lambdas in rules).

def stats_copy_of_run(wildcards):
    # ancient: the copy only orders a run after its data is prepared; a re-copied stats file must
    # not make finished runs look out of date
    return ancient(stats_copy(wildcards.dataset, wildcards.protocol))


def dedupe_flag(wildcards):
    return "--dedupe" if wildcards.variant.startswith("dedupe-") else ""


def run_config_hash(wildcards):
    return config_hash(EXPECTED.run_config(wildcards.protocol, wildcards.method))


def probe_config_hash(wildcards):
    return config_hash(EXPECTED.run_config(wildcards.protocol, wildcards.method, probe=True))


def dataset_runs(wildcards):
    return run_files(k for k in table1_runs() if k.dataset == wildcards.dataset)


def dataset_probes(wildcards):
    return [str(layout.probe_path(RESULTS, k)) for k in grid_probes() if k.dataset == wildcards.dataset]


def kept_runs(wildcards=None):
    keep = set(kept_datasets(GRID["datasets"]))
    return run_files(k for k in table1_runs() if k.dataset in keep)


def report_code_hash():
    """Tables and figures are re-made when the report code changes (Snakemake's params trigger)."""
    h = hashlib.sha256()
    for path in sorted(Path(layout.__file__).parent.glob("*.py")):
        h.update(b"\0".join([path.name.encode(), path.read_bytes()]))
    return h.hexdigest()[:16]


REPORT_CODE_HASH = report_code_hash()


def any_wildcard(values):
    return "|".join(re.escape(v) for v in values)


# ---------------------------------------------------------------------------------------------
# Outputs flagged for `snakemake --report` (captions under workflow/report/, relative to rules/).

def flagged_table_files(table_set="main"):
    out = []
    for path in table_files(table_set):
        name = Path(path).name
        if name.endswith(".csv") and name != "all_runs.csv":
            out.append(report(path, caption="../report/tables.rst", category="Tables",
                              labels={"table": Path(path).stem}))
        elif name == "provenance.md":
            out.append(report(path, caption="../report/provenance.rst", category="Tables",
                              labels={"table": "provenance (stale files)"}))
        else:
            out.append(path)
    return out


def flagged_probe_figures():
    out = {}
    for kind in layout.PROBE_FIGURE_KINDS:
        out[f"{kind}_pdf"] = f"{FIGURES}/probe_{kind}_{{dataset}}.pdf"
        out[f"{kind}_png"] = report(f"{FIGURES}/probe_{kind}_{{dataset}}.png", caption=f"../report/probe_{kind}.rst",
                                    category="Figures", subcategory="Aggregation probes",
                                    labels={"dataset": "{dataset}", "figure": kind})
    return out
