"""The README's results section, rendered from the committed tables and timing sidecars, so the
README never carries a number typed by hand. Lives between two marker lines in README.md."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from fedem.report import layout

BEGIN = "<!-- results:begin (rendered by `python -m fedem.report readme`; do not edit) -->"
END = "<!-- results:end -->"
SECTIONS = (
    ("main_authors.md", "Authors' protocol (the paper's setting; leaks the held-out item, PROTOCOL.md §6)"),
    ("main_clean.md", "Clean protocol (non-train negatives, deduplicated interactions)"),
    ("protocol_gap.md", "How much of each score survives the clean protocol"),
)


def grid_timing(results: Path) -> str:
    walls, machines = [], set()
    for path in sorted((results / layout.RUNS).rglob("seed*.timing.json")):
        timing = json.loads(path.read_text())
        walls.append(timing["wall_seconds"])
        machines.add(timing.get("machine", "?"))
    if not walls:
        return "No runs yet."
    return (
        f"{len(walls)} runs, {sum(walls) / 3600:.1f} h of single-job wall time in total "
        f"(median {statistics.median(walls) / 60:.1f} min per run; machine: {', '.join(sorted(machines))})."
    )


def render(tables: Path, results: Path) -> str:
    parts = [BEGIN, ""]
    for name, title in SECTIONS:
        path = tables / name
        if path.is_file():
            parts += [f"#### {title}", "", path.read_text().strip(), ""]
    parts += [f"Compute of the committed grid: {grid_timing(results)}", "", END]
    return "\n".join(parts)


def update_readme(readme: Path, tables: Path, results: Path) -> bool:
    """Rewrite the block between the markers; returns whether anything changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no results markers ({BEGIN!r} ... {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render(tables, results) + tail
    if new != text:
        readme.write_text(new)
    return new != text
