"""Read everything under the results folder once, sorting files into current, stale and ignored.

Tables and figures are built from a `Collection` only: they never train, prepare or download, and
they never see a stale or broken file (those are listed in `problems` and reported instead).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fedem.config import methods_with_role, planned_seeds, probed_methods
from fedem.data.pipeline import artifact_path
from fedem.data.registry import DATASETS
from fedem.engine.results import RESULT_SCHEMA_VERSION, digest_problem
from fedem.report import layout
from fedem.report.layout import RunKey
from fedem.report.provenance import (
    IDENTITY_KEYS,
    Expected,
    check_result,
    expected_for,
    hash_reasons,
    integrity_problem,
)

STALE = "stale"
INVALID = "invalid"
OUTSIDE = "outside the grid"


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # STALE | INVALID | OUTSIDE
    detail: str


@dataclass
class Collection:
    results_dir: str
    config: dict
    expected: Expected
    runs: dict[RunKey, dict] = field(default_factory=dict)  # current result files in the grid
    probes: dict[RunKey, dict] = field(default_factory=dict)  # current probe files in the grid
    diverged: dict[RunKey, dict] = field(default_factory=dict)  # current divergence records: runs with no result
    data_stats: dict[tuple[str, str], dict] = field(default_factory=dict)  # (dataset, variant) -> stats
    problems: list[Problem] = field(default_factory=list)
    files_of: dict[str, set[str]] = field(
        default_factory=lambda: {"runs": set(), "probes": set()}
    )  # datasets with any file

    @property
    def grid(self) -> dict:
        return self.config["grid"]

    @property
    def sanity_methods(self) -> tuple[str, ...]:
        """No-learning floors (role: sanity): shown below the methods, never ranked."""
        return tuple(methods_with_role(self.config, "sanity"))

    @property
    def centralised_methods(self) -> tuple[str, ...]:
        """Centralised upper references (role: centralised): shown apart, never ranked with the federated."""
        return tuple(methods_with_role(self.config, "centralised"))

    @property
    def unranked_methods(self) -> tuple[str, ...]:
        return self.centralised_methods + self.sanity_methods

    @property
    def probed_methods(self) -> tuple[str, ...]:
        """Grid methods whose block says `probes: true` (aggregation-bottleneck probe runs)."""
        return probed_methods(self.config)

    @property
    def proposed(self) -> str | None:
        """The paper's method (role: proposed), compared with the best other method."""
        found = methods_with_role(self.config, "proposed")
        return found[0] if found else None

    def excluded(self) -> list[Problem]:
        """Stale or invalid files: these would have been in a table, and are not."""
        return [p for p in self.problems if p.kind in (STALE, INVALID)]

    def variant(self, protocol: str, dataset: str) -> str:
        dedupe = self.config["protocols"][protocol]["dedupe"]
        return artifact_path(self.config, dataset, dedupe).stem

    def values(self, protocol: str, dataset: str, method: str, path: tuple[str, ...]) -> dict[int, float]:
        """seed -> the number at `path` inside each current result, e.g. ("selected", "test", "hr@10")."""
        out = {}
        for key, result in self.runs.items():
            if (key.protocol, key.dataset, key.method) != (protocol, dataset, method):
                continue
            node = result
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, (int, float)) and math.isfinite(node):
                out[key.seed] = float(node)
        return dict(sorted(out.items()))

    def diverged_rounds(self, protocol: str, dataset: str, method: str) -> dict[int, int]:
        """seed -> the round in which that run diverged (current records only)."""
        return {
            k.seed: r["diverged"]["round"]
            for k, r in self.diverged.items()
            if (k.protocol, k.dataset, k.method) == (protocol, dataset, method)
        }

    def datasets_with_runs(self) -> list[str]:
        present = {k.dataset for k in self.runs}
        return [d for d in self.grid["datasets"] if d in present]

    def datasets_with_files(self, kind: str = "runs") -> list[str]:
        """Grid datasets with any result (kind="runs") or probe ("probes") file, current or not: a full
        render draws a figure for each (a placeholder where none is current), as the workflow does."""
        grid = self.grid["datasets" if kind == "runs" else "probe_datasets"]
        return [d for d in grid if d in self.files_of[kind]]

    def left_out(self) -> list[dict]:
        """Grid datasets without any current run. Only what the results folder shows is said: why a
        dataset could not be had on some machine is that machine's business (its console and log), never
        text in a committed table."""
        present = {k.dataset for k in self.runs}
        excluded = self.excluded()
        out = []
        for dataset in self.grid["datasets"]:
            if dataset in present:
                continue
            n_bad = sum(1 for p in excluded if f"/{layout.RUNS}/" in f"/{p.path}" and f"/{dataset}/" in p.path)
            detail = (
                f"all {n_bad} of its result files are stale or invalid (excluded; see provenance.md)"
                if n_bad
                else "no result file in the results folder"
            )
            out.append({"dataset": dataset, "detail": detail})
        return out


def _load_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not readable as JSON (a partial or corrupt file?): {exc}"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def _split_stats_name(stem: str) -> tuple[str, str]:
    """`ml-100k-dups-seed0-v1` -> (`ml-100k`, `dups-seed0-v1`): dataset keys may contain dashes."""
    for known in sorted(DATASETS, key=len, reverse=True):
        if stem.startswith(known + "-"):
            return known, stem[len(known) + 1 :]
    dataset, _, variant = stem.partition("-")
    return dataset, variant


def _in_grid(config: dict, key: RunKey, probe: bool) -> bool:
    grid = config["grid"]
    if probe:
        return (
            key.protocol in grid["protocols"]
            and key.dataset in grid["probe_datasets"]
            and key.method in probed_methods(config)
            and key.seed in grid["probe_seeds"]
        )
    return (
        key.protocol in grid["protocols"]
        and key.dataset in grid["datasets"]
        and key.method in config["methods"]
        and key.seed
        in planned_seeds(config, key.method, key.dataset)  # the grid's methods and the experiments' variants
    )


def _identity_mismatch(result: dict, key: RunKey) -> str | None:
    found = (result.get("protocol"), result.get("dataset"), result.get("method"), result.get("seed"))
    want = (key.protocol, key.dataset, key.method, key.seed)
    if found != want:
        return f"its content says {'/'.join(map(str, found))}, its path says {key.label}"
    return None


def collect(results_dir: str | Path, config: dict) -> Collection:
    results_dir = str(results_dir)
    coll = Collection(results_dir=results_dir, config=config, expected=expected_for(config))

    for path in layout.find_data_stats(results_dir):
        stats, err = _load_json(path)
        dataset, variant = _split_stats_name(path.stem)
        if err:
            coll.problems.append(Problem(path.as_posix(), INVALID, err))
        else:
            coll.data_stats[(dataset, variant)] = stats

    for key, path in layout.find_runs(results_dir):
        _admit(coll, key, path, path, probe=False)
    for key, path in layout.find_probes(results_dir):
        _admit(coll, key, path, Path(layout.probe_result_path(results_dir, key)), probe=True)
    for key, path in layout.find_divergences(results_dir):
        record, problem = read_divergence(coll.config, coll.expected, key, path, _data_hash(coll, key))
        if problem is not None:
            coll.problems.append(problem)
        elif key in coll.runs:
            coll.problems.append(Problem(path.as_posix(), INVALID, "the run also has a current result file; ignored"))
        else:
            coll.diverged[key] = record
    return coll


def read_divergence(
    config: dict, expected: Expected, key: RunKey, path: Path, data_hash: str | None = None
) -> tuple[dict | None, Problem | None]:
    """A divergence record (`fedem train` stopped by a non-finite loss, probability or score) and whether the
    current code and config would diverge the same way: (record, None) if so, else (None, the problem)."""
    shown = path.as_posix()
    if not _in_grid(config, key, probe=False):
        return None, Problem(shown, OUTSIDE, "not part of the configured grid; ignored")
    record, err = _load_json(path)
    if err is None:
        err = _identity_mismatch(record, key) or digest_problem(record)
    missing = [k for k in IDENTITY_KEYS if k not in record] if err is None else []
    if missing:
        err = f"not a complete divergence record (missing {', '.join(missing)})"
    diverged = record.get("diverged") if err is None else None
    if err is None and not (isinstance(diverged, dict) and isinstance(diverged.get("round"), int)):
        err = "a divergence record without diverged.round"
    if err:
        return None, Problem(shown, INVALID, err)
    reasons = hash_reasons(record, expected, key.protocol, key.method, data_hash=data_hash)
    if reasons:
        return None, Problem(shown, STALE, "; ".join(reasons))
    return record, None


def current_divergences(results_dir: str | Path, config: dict, expected: Expected) -> set[RunKey]:
    """Runs whose divergence record the current code and config still stand behind: the workflow does not
    retry them (a changed config or training code makes the record stale, and the run is planned again)."""
    return {
        key
        for key, path in layout.find_divergences(results_dir)
        if read_divergence(config, expected, key, path)[1] is None and not layout.run_path(results_dir, key).exists()
    }


def _data_hash(coll: Collection, key: RunKey) -> str | None:
    if key.protocol not in coll.config["protocols"]:
        return None
    stats = coll.data_stats.get((key.dataset, coll.variant(key.protocol, key.dataset)))
    return stats.get("content_hash") if stats else None


def _admit(coll: Collection, key: RunKey, path: Path, result_path: Path, probe: bool) -> None:
    shown = path.as_posix()
    coll.files_of["probes" if probe else "runs"].add(key.dataset)
    if not _in_grid(coll.config, key, probe):
        coll.problems.append(Problem(shown, OUTSIDE, "not part of the configured grid; ignored"))
        return
    if probe:
        data, err = _load_json(path)
        if err is None and not isinstance(data.get("records"), list):
            err = "a probe file without a 'records' list"
        if err:
            coll.problems.append(Problem(shown, INVALID, err))
            return
        if not result_path.is_file():
            coll.problems.append(Problem(shown, INVALID, f"its run's result file {result_path.as_posix()} is missing"))
            return
    result, err = _load_json(result_path)
    if err is None:
        err = _identity_mismatch(result, key)
    current_schema = err is None and result.get("schema_version") == RESULT_SCHEMA_VERSION
    if current_schema:  # an older schema is reported as stale below, with the version it has
        err = integrity_problem(result)
        if err is None and probe:
            err = digest_problem(data)
            err = err and f"the probe file: {err}"
    if err is None and probe:
        mismatch = [k for k in ("config_hash", "code_hash", "data_hash") if k in data and data[k] != result.get(k)]
        if mismatch:
            err = f"the probe file and {result_path.name} come from different runs ({', '.join(mismatch)} differ)"
    if err:
        coll.problems.append(Problem(result_path.as_posix(), INVALID, err))
        return
    verdict = check_result(result, coll.expected, key.protocol, key.method, probe, _data_hash(coll, key))
    if not verdict.current:
        coll.problems.append(Problem(shown, STALE, "; ".join(verdict.reasons)))
        return
    if probe:
        coll.probes[key] = data
    else:
        coll.runs[key] = result
