"""The README's results section, rendered from the committed tables and timing sidecars, so the
README never carries a number typed by hand. Lives between two marker lines in README.md."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from fedem.report import layout
from fedem.report.layout import RunKey

BEGIN = "<!-- results:begin (rendered by `python -m fedem.report readme`; do not edit) -->"
END = "<!-- results:end -->"
SECTIONS = (
    ("main_authors.md", "Authors' protocol (the paper's setting; leaks the held-out item, PROTOCOL.md §6)"),
    ("main_clean.md", "Clean protocol (non-train negatives, deduplicated interactions)"),
    ("protocol_gap.md", "How much of each score survives the clean protocol"),
    ("compute_authors.md", "What a run costs, authors' protocol (from the runs' timing and benchmark files)"),
    ("compute_clean.md", "What a run costs, clean protocol"),
)


def run_timings(results: Path) -> list[tuple[RunKey, dict]]:
    """Every run's timing sidecar, read once for all the timing lines."""
    found = []
    for key, path in layout.find_runs(results):
        timing = layout.timing_path(path)
        if timing.is_file():
            found.append((key, json.loads(timing.read_text())))
    return found


def _gpu_part(timings: list[dict]) -> str:
    gpus = [t["gpu"] for t in timings if layout.trained_on_gpu(t)]
    return f"{len(gpus)} of them trained on a GPU ({', '.join(sorted(set(gpus)))})" if gpus else ""


def grid_timing(timings: list[tuple[RunKey, dict]]) -> str:
    walls = [t["wall_seconds"] for _, t in timings]
    machines = {t.get("machine", "?") for _, t in timings}
    if not walls:
        return "No runs yet."
    gpu = _gpu_part([t for _, t in timings])
    return (
        f"{len(walls)} runs, {sum(walls) / 3600:.1f} h of single-job wall time in total "
        f"(median {statistics.median(walls) / 60:.1f} min per run; machine: {', '.join(sorted(machines))}"
        f"{'; ' + gpu if gpu else ''})."
    )


# the paper's other experiments: (table set, heading, the one-line command that regenerates it)
EXPERIMENT_SECTIONS = (
    ("ablation", "Table 2: the ablation ladder", "snakemake --cores 8 ablation"),
    ("plugin", "Table 3: FedEM's merging plugged into other methods", "snakemake --cores 8 plugin"),
    ("ldp", "Table 4: local differential privacy", "snakemake --cores 8 ldp"),
    ("sensitivity", "Fig. 6's numbers: sensitivity to the adapter depth and alpha", "snakemake --cores 8 sensitivity"),
)


class WallModel(dict):
    """(dataset, method) -> single-job wall seconds; `fitted`: the pairs taken from the product rule alone
    (rule 3 of `wall_model`), with no run of the method, or of its reference, on that dataset."""

    def __init__(self, *args, fitted: set[tuple[str, str]] = frozenset(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fitted = set(fitted)


def wall_model(timings: list[tuple[RunKey, dict]], reference: dict[str, str] | None = None) -> WallModel:
    """Single-job wall seconds per (dataset, method), a rough guide for planning:
    1. a pair with measured runs (either protocol, any seed): their mean;
    2. a variant (`reference`: variant -> the method it varies, e.g. fedem-L1 -> fedem, pfedrec-em ->
       pfedrec) that has run on other datasets: its reference's time on this dataset times the variant's
       geometric-mean ratio to its reference where both ran;
    3. any other pair whose method has run on another dataset and whose dataset has run with another
       method (variants that never ran are left out): exp(a_method + b_dataset), fitted by least squares
       to the log means of the measured pairs (a method costs a factor, a dataset a factor), which
       under-estimates methods that grow faster than the average with a dataset's size.
    CPU runs only: the grid's default machine is a CPU, and a GPU run's time says nothing of a CPU's
    (gpfedrec on amazon-video: half a minute on an H200 against 21 minutes on two CPU cores)."""
    reference = reference or {}
    walls = defaultdict(list)
    for key, timing in timings:
        if not layout.trained_on_gpu(timing):
            walls[(key.dataset, key.method)].append(timing["wall_seconds"])
    logs = {pair: math.log(max(statistics.fmean(w), 1e-3)) for pair, w in walls.items()}
    datasets, methods = sorted({d for d, _ in logs}), sorted({m for _, m in logs})
    a, b = dict.fromkeys(methods, 0.0), dict.fromkeys(datasets, 0.0)
    for _ in range(200):  # alternating least squares on y = a_m + b_d (the predictions do not depend on the split)
        for m in methods:
            a[m] = statistics.fmean(y - b[d] for (d, mm), y in logs.items() if mm == m)
        for d in datasets:
            b[d] = statistics.fmean(y - a[m] for (dd, m), y in logs.items() if dd == d)
    model = {(d, m): math.exp(a[m] + b[d]) for d in datasets for m in methods if m not in reference}
    for variant, ref in reference.items():
        ratios = [logs[(d, variant)] - logs[(d, ref)] for d in datasets if (d, variant) in logs and (d, ref) in logs]
        if ratios:
            ratio = statistics.fmean(ratios)
            model.update({(d, variant): math.exp(logs[(d, ref)] + ratio) for d in datasets if (d, ref) in logs})
    fitted = {pair for pair in model if pair not in logs and pair[1] not in reference}  # rule 3 alone
    model.update({pair: math.exp(y) for pair, y in logs.items()})
    return WallModel(model, fitted=fitted)


def variant_references(config: dict) -> dict[str, str]:
    """Each planned variant's reference method for `wall_model`: a plug-in variant's host, else its base."""
    from fedem.config import base_of, host_of, planned_methods

    refs = {}
    for method in planned_methods(config):
        base = base_of(config, method)
        ref = host_of(config, method) if base == "em-plugin" else base
        if ref != method:
            refs[method] = ref
    return refs


LARGEST_SHOWN = 3  # (method, dataset) pairs named with the estimate, by estimated hours still to run


def still_to_run(planned: list[RunKey], present: set[RunKey], model: WallModel) -> str:
    """The planned runs with no result file yet and the single-job wall time they should take (`model`:
    `wall_model`'s); runs it cannot estimate (a method that has never run, a dataset with no run) are counted apart."""
    todo = [k for k in planned if k not in present]
    if not todo:
        return "nothing is left to run"
    estimable = [k for k in todo if (k.dataset, k.method) in model]
    estimated = [model[(k.dataset, k.method)] for k in estimable]
    per_pair = defaultdict(float)  # (method, dataset) -> estimated seconds still to run, summed over its runs
    for k, seconds in zip(estimable, estimated):
        per_pair[(k.method, k.dataset)] += seconds
    runs_per_pair = Counter((k.method, k.dataset) for k in estimable)
    run_datasets = {d for d, _ in model}
    unknown = defaultdict(int)
    for k in todo:
        if (k.dataset, k.method) not in model and k.dataset in run_datasets:
            unknown[k.method] += 1
    no_data = sorted({k.dataset for k in todo if k.dataset not in run_datasets})
    parts = [f"{len(todo)} still to run"]
    if estimated:
        parts.append(
            f"about {sum(estimated) / 3600:.0f} h of single-job wall time on a CPU for the {len(estimated)} of them "
            "that can be estimated from the CPU runs made so far"
        )
        largest = sorted(per_pair.items(), key=lambda item: (-item[1], item[0]))[:LARGEST_SHOWN]
        fitted = model.fitted
        parts[-1] += (
            " (the largest totals per method and dataset: "
            + ", ".join(
                f"{m} on {d} {sec / 3600:.1f} h for {runs_per_pair[(m, d)]} "
                f"run{'s' if runs_per_pair[(m, d)] > 1 else ''}{' (fitted)' if (d, m) in fitted else ''}"
                for (m, d), sec in largest
            )
            + ")"
        )
        if any((d, m) in fitted for (m, d), _ in largest):
            parts[-1] += (
                "; 'fitted': no run of that method on that dataset yet, so a method factor times a dataset factor, "
                "low for a method whose cost grows faster than most with the dataset's size (see its doc page)"
            )
    if unknown:
        named = ", ".join(f"{m} {n}" for m, n in sorted(unknown.items()))
        parts.append(f"{sum(unknown.values())} of methods that have not run yet ({named})")
    if no_data:
        parts.append(f"{sum(k.dataset in no_data for k in todo)} on datasets with no run here ({', '.join(no_data)})")
    return "; ".join(parts)


def experiment_timing(
    timings: list[tuple[RunKey, dict]],
    config: dict,
    name: str,
    present: set[RunKey],
    model: WallModel,
    diverged: set[RunKey] = frozenset(),
) -> str:
    """Single-job wall time of the runs one experiment reads (shared Table-1 runs included), and of those
    still to run."""
    planned = layout.experiment_runs(config, name)
    wanted = set(planned)
    ran = [t for key, t in timings if key in wanted]
    walls = [t["wall_seconds"] for t in ran]
    gpu = _gpu_part(ran)
    n_diverged = len(wanted & diverged)  # divergence records: run, with no result or timing file
    left = still_to_run(planned, present, model)
    if not walls and not n_diverged:
        return f"none of its {len(planned)} planned runs has run yet; {left}"
    records = f", {n_diverged} of them diverged (no result file)" if n_diverged else ""
    return (
        f"{len(walls) + n_diverged} of its {len(planned)} planned runs have run (current or not; see "
        f"provenance.md){records}, {sum(walls) / 3600:.1f} h of single-job wall time{' (' + gpu + ')' if gpu else ''}; "
        f"{left}"
    )


def render(tables: Path, results: Path, config: dict | None = None) -> str:
    parts = [BEGIN, ""]
    for name, title in SECTIONS:
        path = tables / name
        if path.is_file():
            parts += [f"#### {title}", "", path.read_text().strip(), ""]
    timings = run_timings(results)
    parts += [f"Compute of the committed grid: {grid_timing(timings)}", ""]
    if config is not None:
        # a run that diverged (its record beside the missing result) is done, not still to run
        diverged = {key for key, _ in layout.find_divergences(results)}
        present = {key for key, _ in layout.find_runs(results)} | diverged
        model = wall_model(timings, variant_references(config))  # fitted once for every line below
        left = still_to_run(layout.grid_runs(config), present, model)
        parts += [f"Still to run for every table and figure (`snakemake --cores 8`): {left}.", ""]
        table1 = still_to_run(layout.table1_runs(config), present, model)
        parts += [f"Still to run for Table 1 alone (`snakemake --cores 8 table1`): {table1}.", ""]
        protocols = config["grid"]["protocols"]
        for table_set, title, command in EXPERIMENT_SECTIONS:
            line = experiment_timing(timings, config, table_set, present, model, diverged)
            parts += [f"### {title}", "", f"`{command}` ({line})", ""]
            for protocol in protocols:
                path = tables / f"{table_set}_{protocol}.md"
                if path.is_file():
                    parts += [path.read_text().strip(), ""]
    parts.append(END)
    return "\n".join(parts)


def update_readme(readme: Path, tables: Path, results: Path, config: dict | None = None) -> bool:
    """Rewrite the block between the markers; returns whether anything changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no results markers ({BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render(tables, results, config) + tail
    if new != text:
        readme.write_text(new)
    return new != text
