"""The README's results section, rendered from the committed tables and timing sidecars, so the
README never carries a number typed by hand. Lives between two marker lines in README.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from fedem.report import layout
from fedem.report.layout import RunKey

BEGIN = "<!-- results:begin (rendered by `python -m fedem.report readme`; do not edit) -->"
END = "<!-- results:end -->"
SECTIONS = (
    ("main_authors.md", "Authors' protocol (the paper's setting; leaks the held-out item, PROTOCOL.md §6)"),
    ("main_clean.md", "Clean protocol (non-train negatives, deduplicated interactions)"),
    ("protocol_gap.md", "How much of each score survives the clean protocol"),
)


def run_timings(results: Path) -> list[tuple[RunKey, dict]]:
    """Every run's timing sidecar, read once for all the timing lines."""
    found = []
    for key, path in layout.find_runs(results):
        timing = layout.timing_path(path)
        if timing.is_file():
            found.append((key, json.loads(timing.read_text())))
    return found


def grid_timing(timings: list[tuple[RunKey, dict]]) -> str:
    walls = [t["wall_seconds"] for _, t in timings]
    machines = {t.get("machine", "?") for _, t in timings}
    if not walls:
        return "No runs yet."
    return (
        f"{len(walls)} runs, {sum(walls) / 3600:.1f} h of single-job wall time in total "
        f"(median {statistics.median(walls) / 60:.1f} min per run; machine: {', '.join(sorted(machines))})."
    )


# the paper's other experiments: (table set, heading, the one-line command that regenerates it)
EXPERIMENT_SECTIONS = (
    ("ablation", "Table 2: the ablation ladder", "snakemake --cores 8 ablation"),
    ("plugin", "Table 3: FedEM's merging plugged into other methods", "snakemake --cores 8 plugin"),
    ("ldp", "Table 4: local differential privacy", "snakemake --cores 8 ldp"),
    ("sensitivity", "Fig. 6's numbers: sensitivity to the adapter depth and alpha", "snakemake --cores 8 sensitivity"),
)


def experiment_timing(timings: list[tuple[RunKey, dict]], config: dict, name: str) -> str:
    """Single-job wall time of the runs one experiment reads (shared Table-1 runs included)."""
    from fedem.config import experiment_methods

    methods = set(experiment_methods(config)[name])
    seeds = set(config["experiments"][name]["seeds"])
    walls = [t["wall_seconds"] for key, t in timings if key.method in methods and key.seed in seeds]
    planned = len(config["grid"]["protocols"]) * len(config["grid"]["datasets"]) * len(methods) * len(seeds)
    if not walls:
        return f"none of its {planned} planned runs has run yet"
    return (
        f"{len(walls)} of its {planned} planned runs have run (current or not; see provenance.md), "
        f"{sum(walls) / 3600:.1f} h of single-job wall time"
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
        protocols = config["grid"]["protocols"]
        for table_set, title, command in EXPERIMENT_SECTIONS:
            parts += [f"### {title}", "", f"`{command}` ({experiment_timing(timings, config, table_set)})", ""]
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
