"""The paper tables, built from a Collection (current result files only) and written as .md/.tex/.csv.

Per protocol: the main table (sampled HR@10/NDCG@10), the same with full-ranking metrics, and the
validation-selected vs the authors' test-selected figure, and what each run cost (fedem.report.compute).
Across protocols: the protocol gap (how
much of each score survives the clean protocol). Plus dataset statistics, a long-form CSV of every
run, and provenance.md (stale and ignored files, the hashes a current file must carry).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from fedem.config import grid_seeds, planned_methods
from fedem.data.dataset import atomic_write_bytes
from fedem.report import layout
from fedem.report.collect import OUTSIDE, Collection
from fedem.report.environments import environments_md
from fedem.report.summary import (
    Cell,
    compare_to_best_baseline,
    fmt_mean_std,
    fmt_p,
    fmt_pct,
    ranks,
    survival,
)
from fedem.report.tablefmt import GENERATED, Table, Text, write_table

METRIC_LABEL = {"hr@10": "HR@10", "ndcg@10": "NDCG@10"}
SPLIT_LABEL = {
    "test": "sampled (1 held-out item + 99 negatives)",
    "test_full_ranking": "full ranking (all non-train items)",
}
REFERENCE, CLEAN = "authors", "clean"


def output_files(config: dict, table_set: str | None = None) -> list[str]:
    """Every file `write_tables` writes for this config (one set, or every set)."""
    return layout.table_files(config["grid"]["protocols"], table_set)


def ordered_methods(coll: Collection) -> list[str]:
    """Federated methods, then the centralised references, then the sanity floors."""
    methods, unranked = coll.grid["methods"], coll.unranked_methods
    return [m for m in methods if m not in unranked] + [
        m for group in (coll.centralised_methods, coll.sanity_methods) for m in methods if m in group
    ]


def method_label(coll: Collection, method: str) -> str:
    name = coll.config["methods"].get(method, {}).get("label", method)
    if method in coll.sanity_methods:
        return f"{name} (sanity floor, no learning)"
    if method in coll.centralised_methods:
        return f"{name} (centralised, upper reference)"
    return name


def starts_group(coll: Collection, methods: list[str], i: int) -> bool:
    """A rule above the first centralised and the first sanity row."""
    for group in (coll.centralised_methods, coll.sanity_methods):
        if methods[i] in group and (i == 0 or methods[i - 1] not in group):
            return True
    return False


def common_warnings(coll: Collection) -> list[str]:
    out = []
    excluded = coll.excluded()
    if excluded:
        out.append(
            f"{len(excluded)} result file(s) are stale or invalid and are EXCLUDED from this table "
            f"(produced by other code or config than the current one); see provenance.md."
        )
    for entry in coll.left_out():
        out.append(f"dataset {entry['dataset']} is left out: {entry['detail']}.")
    return out


def _centralised_note(coll: Collection) -> str:
    present = [m for m in coll.centralised_methods if m in coll.grid["methods"]]
    if not present:
        return ""
    return f"{', '.join(present)} are centralised (trained on every user's data, not federated): upper references, never ranked; "


def _seed_note(coll: Collection) -> str:
    seeds = coll.grid["seeds"]
    if len(seeds) == 1:
        return f"One training seed ({seeds[0]}): no std."
    # the entries this grid has, with the seeds it runs (fedem.config.grid_seeds: those of grid.seeds kept)
    fewer = [
        f"{m} on {d}: seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))} only"
        for m, by_dataset in (coll.grid.get("fewer_seeds") or {}).items()
        for d in by_dataset
        if m in coll.grid["methods"] and d in coll.grid["datasets"]
        for ss in [grid_seeds(coll.config, m, d)]
    ]
    return (
        f"Mean ± sample std over training seeds {', '.join(map(str, seeds))}; "
        f"a cell computed from fewer seeds says n=…."
        + (
            f" Planned with fewer seeds (grid.fewer_seeds, runs this CPU cannot afford): {'; '.join(fewer)}."
            if fewer
            else ""
        )
    )


def _cell_text(
    cell: Cell, n_grid: int, floor: float | None = None, sanity: bool = False, diverged: dict[int, int] | None = None
) -> str:
    text = fmt_mean_std(cell)
    if cell.mean is not None and 0 < cell.n < n_grid:
        text += f" (n={cell.n})"
    if floor is not None and cell.mean is not None and not sanity and cell.mean <= floor:
        text += " †"
    return divergence_text(text, cell, diverged)


def divergence_text(text: str, cell: Cell, diverged: dict[int, int] | None) -> str:
    """A cell's text with its diverged seeds (seed -> round) said: in place of the numbers when no seed ran."""
    if not diverged:
        return text
    rounds = sorted(set(diverged.values()))
    where = f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {rounds[0]}–{rounds[-1]}"
    seeds = f"{len(diverged)} seed{'s' if len(diverged) > 1 else ''}"
    return f"diverged in {where} ({seeds})" if cell.mean is None else f"{text}; {seeds} diverged"


def divergence_note(coll: Collection, protocol: str, methods, datasets, seeds) -> list[str]:
    """The note explaining 'diverged in round t', when a run the table shows (these methods, datasets and
    seeds, under this protocol) left a divergence record."""
    if not any(
        k.protocol == protocol and k.method in methods and k.dataset in datasets and k.seed in seeds
        for k in coll.diverged
    ):
        return []
    return [
        "'diverged in round t': the run stopped in round t at a non-finite training loss, probability or score "
        "and wrote no result (the method's released defaults, run as specified; see provenance.md). It is not "
        "retried while its training code and config are unchanged."
    ]


def main_table(coll: Collection, protocol: str, split: str) -> Table:
    full = split == "test_full_ranking"
    name = f"main_full_ranking_{protocol}" if full else f"main_{protocol}"
    datasets = coll.datasets_with_runs()
    metrics = ("hr@10", "ndcg@10")
    methods = ordered_methods(coll)
    table = Table(
        name=name,
        title=f"Test {'full-ranking' if full else 'sampled'} HR@10 and NDCG@10, {protocol} protocol",
        caption=(
            f"Metrics: {SPLIT_LABEL[split]}, at the round with the best validation HR@10 (earliest on ties). "
            f"{_seed_note(coll)} Per column, bold = best and underlined = second best among the learning "
            f"federated methods; {_centralised_note(coll)}{', '.join(coll.sanity_methods) or 'a sanity method'} is the no-learning sanity floor of "
            f"PROTOCOL.md §6 and is never ranked; † marks "
            f"a method not above that floor. The last rows give {coll.proposed}'s relative improvement over the best "
            f"other method and the two-sided paired t-test p-value over seeds."
        ),
        columns=[("", "Method")] + [(d, METRIC_LABEL[m]) for d in datasets for m in metrics],
        warnings=common_warnings(coll),
    )
    if not coll.config["training"]["full_ranking"] and full:
        table.notes.append("training.full_ranking is off in the config: no full-ranking metrics were computed.")
    if not datasets:
        table.notes.append("No current result file for this protocol: nothing to show.")
    table.notes += divergence_note(coll, protocol, methods, datasets, coll.grid["seeds"])
    n_grid = len(coll.grid["seeds"])
    cells = {
        (d, m, meth): Cell(coll.values(protocol, d, meth, ("selected", split, m)))
        for d in datasets
        for m in metrics
        for meth in methods
    }
    column_ranks = {
        (d, m): ranks({meth: cells[(d, m, meth)] for meth in methods}, coll.unranked_methods)
        for d in datasets
        for m in metrics
    }
    floors = {
        (d, m): next((cells[(d, m, s)].mean for s in coll.sanity_methods if s in methods), None)
        for d in datasets
        for m in metrics
    }
    for i, method in enumerate(methods):
        row: list[Text | str] = [method_label(coll, method)]
        for d in datasets:
            for m in metrics:
                rank = column_ranks[(d, m)].get(method)
                text = _cell_text(
                    cells[(d, m, method)],
                    n_grid,
                    floors[(d, m)],
                    method in coll.unranked_methods,
                    coll.diverged_rounds(protocol, d, method),
                )
                row.append(Text(text, bold=rank == 1, underline=rank == 2))
        table.add_row(row, rule_before=starts_group(coll, methods, i))
    if coll.proposed in methods and datasets:
        comps = {
            (d, m): compare_to_best_baseline(
                {meth: cells[(d, m, meth)] for meth in methods}, coll.proposed, coll.unranked_methods
            )
            for d in datasets
            for m in metrics
        }
        if any(c.baseline for c in comps.values()):
            table.add_row(
                ["best other method"] + [comps[(d, m)].baseline or "—" for d in datasets for m in metrics],
                rule_before=True,
            )
            table.add_row(
                [f"{coll.proposed} vs it (p)"]
                + [
                    f"{fmt_pct(c.relative, signed=True)} ({fmt_p(c.p_value)})" if c.baseline else "—"
                    for c in (comps[(d, m)] for d in datasets for m in metrics)
                ]
            )
    return table


def test_selected_table(coll: Collection, protocol: str) -> Table:
    datasets = coll.datasets_with_runs()
    methods = ordered_methods(coll)
    table = Table(
        name=f"test_selected_{protocol}",
        title=f"Validation-selected vs the authors' test-selected HR@10, {protocol} protocol",
        caption=(
            "val-sel.: test HR@10 at the round with the best validation HR@10 (what the other tables report). "
            "test-sel. (leaky): the best test HR@10 over all rounds, as the authors' train.py picks it; it "
            "selects on the test set, so it is optimistic and is shown only to compare with the paper's "
            f"printed numbers. {_seed_note(coll)}"
        ),
        columns=[("", "Method")] + [(d, lab) for d in datasets for lab in ("val-sel.", "test-sel. (leaky)")],
        warnings=common_warnings(coll),
    )
    n_grid = len(coll.grid["seeds"])
    for i, method in enumerate(methods):
        row: list[Text | str] = [method_label(coll, method)]
        for d in datasets:
            row.append(_cell_text(Cell(coll.values(protocol, d, method, ("selected", "test", "hr@10"))), n_grid))
            row.append(_cell_text(Cell(coll.values(protocol, d, method, ("test_selected", "test", "hr@10"))), n_grid))
        table.add_row(row, rule_before=starts_group(coll, methods, i))
    return table


def protocol_gap_table(coll: Collection) -> Table:
    datasets = coll.datasets_with_runs()
    methods = ordered_methods(coll)
    table = Table(
        name="protocol_gap",
        title="How much of each score survives the clean protocol",
        caption=(
            "Test HR@10 and NDCG@10 (sampled, best-validation round) under the authors' protocol (training "
            "negatives from unobserved items, duplicates kept: the evaluation negatives leak, PROTOCOL.md §6) "
            "and under the clean protocol (training negatives from non-train items, deduplicated). kept = clean / "
            "authors. The last column is the clean protocol's full-ranking HR@10. "
            f"{_seed_note(coll)}"
        ),
        columns=[
            ("", "Dataset"),
            ("", "Method"),
            ("HR@10", REFERENCE),
            ("HR@10", CLEAN),
            ("HR@10", "kept"),
            ("NDCG@10", REFERENCE),
            ("NDCG@10", CLEAN),
            ("NDCG@10", "kept"),
            ("full ranking", "clean HR@10"),
        ],
        warnings=common_warnings(coll),
        label_columns=2,
    )
    protocols = coll.grid["protocols"]
    if REFERENCE not in protocols or CLEAN not in protocols:
        table.notes.append(f"The grid does not run both the '{REFERENCE}' and the '{CLEAN}' protocol: no gap to show.")
        return table
    n_grid = len(coll.grid["seeds"])
    for d in datasets:
        for j, method in enumerate(methods):
            row: list[Text | str] = [d if j == 0 else "", method_label(coll, method)]
            for metric in ("hr@10", "ndcg@10"):
                ref = Cell(coll.values(REFERENCE, d, method, ("selected", "test", metric)))
                clean = Cell(coll.values(CLEAN, d, method, ("selected", "test", metric)))
                kept = survival(ref, clean)
                row += [_cell_text(ref, n_grid), _cell_text(clean, n_grid), Text(fmt_pct(kept), bold=kept is not None)]
            row.append(
                _cell_text(Cell(coll.values(CLEAN, d, method, ("selected", "test_full_ranking", "hr@10"))), n_grid)
            )
            table.add_row(row, rule_before=j == 0)
    return table


def _int(x) -> str:
    return f"{int(x):,}" if isinstance(x, (int, float)) else "—"


def _pct(x, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%" if isinstance(x, (int, float)) else "—"


def datasets_table(coll: Collection) -> Table:
    table = Table(
        name="datasets",
        title="Dataset statistics after preprocessing",
        caption=(
            "One row per dataset variant a protocol trains on (dups: duplicates kept, authors' protocol; "
            "dedupe: each user-item pair's earliest interaction, clean protocol). Users with fewer than "
            f"{coll.config['data']['min_user_interactions']} interactions are dropped; interactions/user is over "
            "the whole history (median [p25, p75]). The last two columns are the share of users whose "
            "validation/test item also occurs in their train list (a leave-one-out leak when above 0)."
        ),
        columns=[
            ("", "Dataset"),
            ("", "Variant"),
            ("", "Users"),
            ("", "Items"),
            ("", "Interactions"),
            ("", "Sparsity"),
            ("interactions/user", "median [p25, p75]"),
            ("interactions/user", "max"),
            ("item in train", "val"),
            ("item in train", "test"),
        ],
        warnings=[w for w in common_warnings(coll) if "left out" in w],
        label_columns=2,
    )
    datasets = list(dict.fromkeys(coll.grid["datasets"] + coll.grid["probe_datasets"]))
    for d in datasets:
        variants = {}
        for protocol in coll.grid["protocols"]:
            variants.setdefault(coll.variant(protocol, d), []).append(protocol)
        for variant, protocols in variants.items():
            stats = coll.data_stats.get((d, variant))
            if stats is None:
                continue
            ipu = stats.get("interactions_per_user", {})
            table.add_row(
                [
                    d,
                    f"{variant.split('-')[0]} ({', '.join(protocols)})",
                    _int(stats.get("users")),
                    _int(stats.get("items")),
                    _int(stats.get("interactions")),
                    _pct(stats.get("sparsity"), 2),
                    f"{ipu.get('median', 0):g} [{ipu.get('p25', 0):g}, {ipu.get('p75', 0):g}]" if ipu else "—",
                    _int(ipu.get("max")),
                    _pct(stats.get("val_item_in_train_rate")),
                    _pct(stats.get("test_item_in_train_rate")),
                ]
            )
    if not table.rows:
        table.notes.append("No dataset statistics under the results folder (results/data_stats/).")
    return table


RUN_COLUMNS = (
    "protocol",
    "dataset",
    "method",
    "seed",
    "selected_round",
    "val_hr@10",
    "test_hr@5",
    "test_ndcg@5",
    "test_hr@10",
    "test_ndcg@10",
    "test_hr@20",
    "test_ndcg@20",
    "full_hr@10",
    "full_ndcg@10",
    "test_selected_round",
    "test_selected_hr@10",
    "test_selected_ndcg@10",
    "config_hash",
    "code_hash",
    "data_hash",
)


def all_runs_csv(coll: Collection) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    for key in sorted(coll.runs):
        r = coll.runs[key]
        sel, tsel = r["selected"], r["test_selected"]
        full = sel.get("test_full_ranking") or {}

        def num(x):
            return "" if x is None else repr(float(x))

        writer.writerow(
            [
                key.protocol,
                key.dataset,
                key.method,
                key.seed,
                sel["round"],
                num(sel["val"].get("hr@10")),
                *(num(sel["test"].get(m)) for m in ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")),
                num(full.get("hr@10")),
                num(full.get("ndcg@10")),
                tsel["round"],
                num(tsel["test"].get("hr@10")),
                num(tsel["test"].get("ndcg@10")),
                r["config_hash"],
                r["code_hash"],
                r["data_hash"],
            ]
        )
    return buf.getvalue()


def provenance_md(coll: Collection) -> str:
    grid = coll.grid
    out = [f"<!-- {GENERATED} -->", f"# Provenance of the results in `{coll.results_dir}/`", ""]
    excluded = coll.excluded()
    ignored = [p for p in coll.problems if p.kind == OUTSIDE]
    out.append(
        f"Current result files used by the tables and figures: {len(coll.runs)} runs, {len(coll.probes)} probes. "
        f"Excluded as stale or invalid: {len(excluded)}. Ignored as outside the configured grid: {len(ignored)}."
    )
    out.append("")
    if excluded:
        out += [
            "## WARNING: stale or invalid result files, EXCLUDED from every table and figure",
            "",
            "These files were produced by other training code or another config than the current one (or are "
            "unreadable). They are not mixed into any number. To regenerate them (add the --configfile "
            "options of the run that made them, if any):",
            "",
            "```",
            "snakemake --cores 8 --forcerun "
            + " ".join(p.path for p in excluded if not layout.is_divergence_record(p.path)),
            "```",
            "",
            "| File | Kind | Why |",
            "|:--|:--|:--|",
        ]
        out += [f"| `{p.path}` | {p.kind} | {p.detail.replace('|', '/')} |" for p in excluded]
        out.append("")
    else:
        out += ["Every result file in the grid matches the current training code and config.", ""]
    if coll.diverged:
        out += [
            "## Runs that diverged (no result file)",
            "",
            "`fedem train` stopped these runs at a non-finite training loss, probability or score and left a "
            "divergence record (`seedN.diverged.json`) instead of a result. The workflow does not retry a run "
            "whose record matches the current training code and config; a stale record (listed above) is retried.",
            "",
            "| Run | Round | Error |",
            "|:--|--:|:--|",
        ]
        out += [
            f"| `{k.label}` | {r['diverged']['round']} | {str(r['diverged'].get('error', '')).replace('|', '/')} |"
            for k, r in sorted(coll.diverged.items())
        ]
        out.append("")
    out += environments_md(coll.runs)
    left = coll.left_out()
    if left:
        out += ["## Datasets left out", ""]
        for e in left:
            out.append(f"- **{e['dataset']}**: {e['detail']}.")
        out += [
            "",
            "A full run (`snakemake --cores 8`) leaves out a dataset whose raw data it cannot obtain on "
            "its machine, and says on its console (and in `logs/left_out.txt`) why and how to supply it.",
        ]
        out.append("")
    if ignored:
        out += ["## Ignored (not part of the configured grid)", "", "| File |", "|:--|"]
        out += [f"| `{p.path}` |" for p in ignored]
        out.append("")
    out += [
        "## What a current result file carries",
        "",
        "- training code hash per method (`fedem.engine.results.training_code_hash(method)`): "
        + ", ".join(f"{m} `{h}`" for m, h in sorted(coll.expected.code_hashes.items())),
        "- config hash (`config_hash(run_config(config, protocol, method))`), per protocol and method:",
        "",
        "| Protocol | Method | config_hash | probe run config_hash |",
        "|:--|:--|:--|:--|",
    ]
    for protocol in grid["protocols"]:
        for method in planned_methods(coll.config):
            probe = coll.expected.config_hash(protocol, method, probe=True) if method in coll.probed_methods else "—"
            out.append(
                f"| {protocol} | {method} | `{coll.expected.config_hash(protocol, method)}` | "
                f"{probe if probe == '—' else f'`{probe}`'} |"
            )
    out.append("")
    return "\n".join(out)


def build_tables(coll: Collection) -> list[Table]:
    from fedem.report.compute import compute_table

    tables = [datasets_table(coll)]
    for protocol in coll.grid["protocols"]:
        tables += [
            main_table(coll, protocol, "test"),
            main_table(coll, protocol, "test_full_ranking"),
            test_selected_table(coll, protocol),
            compute_table(coll, protocol),
        ]
    return tables + [protocol_gap_table(coll)]


def write_tables(coll: Collection, out_dir: str | Path, table_set: str | None = None) -> list[Path]:
    """One set of tables (layout.TABLE_SETS), or every set."""
    from fedem.report.experiments import experiment_tables

    out_dir = Path(out_dir)
    sets = layout.TABLE_SETS if table_set is None else (table_set,)
    paths = []
    if "main" in sets:
        for table in build_tables(coll):
            paths += write_table(table, out_dir)
        atomic_write_bytes(out_dir / "provenance.md", provenance_md(coll).encode())
        atomic_write_bytes(out_dir / "all_runs.csv", all_runs_csv(coll).encode())
        paths += [out_dir / "provenance.md", out_dir / "all_runs.csv"]
    for tables in experiment_tables(coll, [s for s in sets if s != "main"]).values():
        for table in tables:
            paths += write_table(table, out_dir)
    warn_excluded(coll)
    return paths


def warn_excluded(coll: Collection, stream=sys.stderr) -> None:
    """The loud console version of the tables' warning."""
    excluded = coll.excluded()
    if not excluded:
        return
    bar = "!" * 78
    lines = [bar, f"!! {len(excluded)} STALE OR INVALID RESULT FILE(S) EXCLUDED from the tables and figures:"]
    lines += [f"!!   {p.path}: {p.kind}: {p.detail}" for p in excluded[:20]]
    if len(excluded) > 20:
        lines.append(f"!!   ... and {len(excluded) - 20} more (all listed in provenance.md)")
    lines += ["!! Regenerate them with `snakemake --cores 8 --forcerun FILE...` (see provenance.md).", bar]
    print("\n".join(lines), file=stream)
