"""The tables of the paper's other experiments (docs/experiments.md), from current result files only.

- Table 2, the ablation ladder: each rung is fedem's code with one switch, bottom (fedmf) to top (fedem);
  every rung shows its relative change over the rung below, and the code's own switches follow.
- Table 3, the merge plug-in: each host without and with FedEM's elastic merging, the relative change.
- Table 4, local differential privacy: each method's variants by noise scale, the relative drop from
  its noise-free run.
- Fig. 6's numbers, the sensitivity sweeps: one row per value of the swept hyper-parameter.
All under each protocol, test metrics at the best-validation round; the tables comparing methods
(not the sweeps, which are fedem alone) end with the neg-count floor."""

from __future__ import annotations

import statistics

from fedem.config import NOISE_KEY, SWEPT, base_of, experiment_datasets, experiment_methods, host_of, method_block
from fedem.report.collect import Collection
from fedem.report.summary import Cell, fmt_mean_std, fmt_p, fmt_pct, paired_p, ranks
from fedem.report.tablefmt import Table, Text
from fedem.report.tables import (
    METRIC_LABEL,
    common_warnings,
    divergence_note,
    divergence_text,
    method_label,
    ordered_methods,
)

METRICS = ("hr@10", "ndcg@10")
SWEEP_LABEL = {"adapter_depth": "adapter depth L", "alpha": "alpha"}


def test_cell(coll: Collection, protocol: str, dataset: str, method: str, metric: str, seeds=None) -> Cell:
    """The method's runs here; with `seeds`, only those (an experiment reuses a grid run of more seeds)."""
    values = coll.values(protocol, dataset, method, ("selected", "test", metric))
    return Cell({s: v for s, v in values.items() if seeds is None or s in seeds})


def diverged_seeds(coll: Collection, protocol: str, dataset: str, method: str, seeds=None) -> dict[int, int]:
    """seed -> round of the method's runs here that diverged (only `seeds`, when given)."""
    rounds = coll.diverged_rounds(protocol, dataset, method)
    return {s: r for s, r in rounds.items() if seeds is None or s in seeds}


def _text(cell: Cell, n_planned: int, diverged: dict[int, int] | None = None) -> str:
    text = fmt_mean_std(cell)
    if cell.mean is not None and cell.n < n_planned:
        text += f" (n={cell.n})"
    return divergence_text(text, cell, diverged)


def _divergence_note(coll: Collection, protocol: str, name: str, datasets: list[str], seeds: list[int]) -> list[str]:
    """The note on 'diverged in round t', when a run that experiment `name`'s table shows diverged."""
    return divergence_note(coll, protocol, experiment_methods(coll.config)[name], datasets, seeds)


def _relative(cell: Cell, ref: Cell) -> float | None:
    """Relative change of `cell`'s mean over `ref`'s, both taken over the seeds the two share: a seed that
    diverged, or has not run yet, in either leaves the comparison, so survivors are never set against all seeds."""
    common = sorted(cell.values.keys() & ref.values.keys())
    if not common:
        return None
    ref_mean = statistics.fmean(ref.values[s] for s in common)
    if ref_mean == 0:
        return None
    return statistics.fmean(cell.values[s] for s in common) / ref_mean - 1


def _seeds_note(seeds: list[int]) -> str:
    return (
        f"Mean ± sample std over training seeds {', '.join(map(str, seeds))} (a cell from fewer seeds says n=…); "
        "test metrics (1 held-out item + 99 sampled negatives) at the round with the best validation HR@10."
    )


def _change(cell: Cell, ref: Cell) -> tuple[float | None, float | None]:
    """(relative change of the mean over `ref`, two-sided paired t-test p-value), both over their common seeds."""
    return _relative(cell, ref), paired_p(cell.values, ref.values)[0]


def _cells(coll: Collection, protocol: str, datasets: list[str], method: str, seeds=None) -> list[str]:
    """A method's cells, dataset by dataset and metric by metric (all its seeds when `seeds` is None)."""
    n = len(coll.grid["seeds"] if seeds is None else seeds)
    return [
        _text(test_cell(coll, protocol, d, method, m, seeds), n, diverged_seeds(coll, protocol, d, method, seeds))
        for d in datasets
        for m in METRICS
    ]


def _experiment_table(coll: Collection, name: str, title: str, caption: str, labels: list[str], datasets) -> Table:
    """An experiment's table: label columns, then HR@10 and NDCG@10 per dataset."""
    return Table(
        name=name,
        title=title,
        caption=caption,
        columns=[("", label) for label in labels] + [(d, METRIC_LABEL[m]) for d in datasets for m in METRICS],
        warnings=common_warnings(coll),
        label_columns=len(labels),
    )


def _floor_rows(coll: Collection, table: Table, protocol: str, datasets: list[str], lead: int = 1) -> None:
    """The no-learning floors (grid seeds), below a rule."""
    for i, floor in enumerate(coll.sanity_methods):
        row = [method_label(coll, floor)] + [""] * (lead - 1) + _cells(coll, protocol, datasets, floor)
        table.add_row(row, rule_before=i == 0)


def _datasets(coll: Collection, name: str, methods: list[str]) -> list[str]:
    """The experiment's datasets (`experiments.<name>.datasets`, else the grid's) that have runs of its methods."""
    present = {k.dataset for k in coll.runs if k.method in methods}
    return [d for d in experiment_datasets(coll.config, name) if d in present]


def ablation_table(coll: Collection, protocol: str) -> Table:
    exp = coll.config["experiments"]["ablation"]
    ladder, extra, seeds = exp["ladder"], [m for m in exp["extra"] if m not in exp["ladder"]], exp["seeds"]
    datasets = _datasets(coll, "ablation", ladder + extra)
    table = _experiment_table(
        coll,
        f"ablation_{protocol}",
        f"Ablation ladder (Table 2), {protocol} protocol",
        (
            "Each rung is fedem's code with one switch (config/config.yaml; docs/experiments.md): "
            + "; ".join(f"{i + 1}. {method_label(coll, m)}" for i, m in enumerate(ladder))
            + ". In brackets: the relative change of the rung's mean over the rung below it, and the two-sided "
            "paired t-test p-value, both over the seeds the two rungs share. Below the ladder: the released "
            f"code's own switches (one each from fedem's defaults). {_seeds_note(seeds)}"
        ),
        ["Variant"],
        datasets,
    )
    if not datasets:
        table.notes.append("No current result file of the ablation for this protocol: nothing to show.")
    for i, method in enumerate(ladder):
        row: list[Text | str] = [f"{i + 1}. {method_label(coll, method)}"]
        for d in datasets:
            for m in METRICS:
                cell = test_cell(coll, protocol, d, method, m, seeds)
                text = _text(cell, len(seeds), diverged_seeds(coll, protocol, d, method, seeds))
                if i > 0 and cell.mean is not None:
                    rel, p = _change(cell, test_cell(coll, protocol, d, ladder[i - 1], m, seeds))
                    if rel is not None:
                        text += f" ({fmt_pct(rel, signed=True)}, {fmt_p(p)})"
                row.append(text)
        table.add_row(row)
    for j, method in enumerate(extra):
        table.add_row(
            [method_label(coll, method)] + _cells(coll, protocol, datasets, method, seeds), rule_before=j == 0
        )
    _floor_rows(coll, table, protocol, datasets)
    table.notes += _divergence_note(coll, protocol, "ablation", datasets, seeds)
    return table


def plugin_table(coll: Collection, protocol: str) -> Table:
    exp = coll.config["experiments"]["plugin"]
    plugged_methods, seeds = exp["methods"], exp["seeds"]
    datasets = _datasets(coll, "plugin", experiment_methods(coll.config)["plugin"])
    table = _experiment_table(
        coll,
        f"plugin_{protocol}",
        f"FedEM's elastic merging plugged into other methods (Table 3), {protocol} protocol",
        (
            "Each host as Table 1 runs it, then with FedEM's merge in place of taking the server's table: the client "
            "keeps its own table and merges it with what the server returns (an adapter per client, trained as FedEM "
            "trains it; docs/experiments.md). change: relative change of the mean, and the two-sided paired t-test "
            f"p-value, both over the seeds the two rows share. {_seeds_note(seeds)}"
        ),
        ["Method"],
        datasets,
    )
    for j, plugged in enumerate(plugged_methods):
        host = host_of(coll.config, plugged)
        change = ["change"]
        for d in datasets:
            for m in METRICS:
                rel, p = _change(
                    test_cell(coll, protocol, d, plugged, m, seeds), test_cell(coll, protocol, d, host, m, seeds)
                )
                change.append("—" if rel is None else f"{fmt_pct(rel, signed=True)} ({fmt_p(p)})")
        table.add_row([method_label(coll, host)] + _cells(coll, protocol, datasets, host, seeds), rule_before=j > 0)
        table.add_row([method_label(coll, plugged)] + _cells(coll, protocol, datasets, plugged, seeds))
        table.add_row(change)
    _floor_rows(coll, table, protocol, datasets)
    table.notes += _divergence_note(coll, protocol, "plugin", datasets, seeds)
    return table


def noise_scale(coll: Collection, method: str) -> float:
    return float(method_block(coll.config, method)[NOISE_KEY[base_of(coll.config, method)]])


# Methods whose clients upload nothing: noise on uploads has nothing to act on, so Table 4 never takes them.
NO_UPLOADS = ("local",)


def table1_leaders(coll: Collection, protocol: str) -> list[tuple[str, float, int]]:
    """Table 1's other federated methods that upload something, best first: (method, mean rank of its test
    HR@10 among them, number of datasets it has results on), the rank averaged over those datasets
    (ties share a rank; fewer datasets first loses a tie)."""
    candidates = [
        m
        for m in ordered_methods(coll)
        if m != coll.proposed and m not in coll.unranked_methods and base_of(coll.config, m) not in NO_UPLOADS
    ]
    per_method: dict[str, list[int]] = {m: [] for m in candidates}
    for d in coll.datasets_with_runs():
        cells = {m: test_cell(coll, protocol, d, m, "hr@10") for m in candidates}
        for m, rank in ranks(cells, (), top=None).items():
            per_method[m].append(rank)
    scored = [(m, sum(r) / len(r), len(r)) for m, r in per_method.items() if r]
    return sorted(scored, key=lambda t: (t[1], -t[2]))  # stable: grid order on full ties


_COUNT_WORD = {1: "one", 2: "two", 3: "three", 4: "four"}


def _leaders_note(coll: Collection, protocol: str, series: list[list[str]]) -> str:
    leaders = table1_leaders(coll, protocol)
    if not leaders:
        return ""
    n_datasets = len(coll.datasets_with_runs())
    ranked = ", ".join(
        f"{m} {r:.1f}" + (f" ({n} of {n_datasets} datasets)" if n < n_datasets else "") for m, r, n in leaders
    )
    chosen = [m for m in (base_of(coll.config, s[0]) for s in series) if m != coll.proposed]
    best_here = [m for m, _, _ in leaders[: len(chosen)]]
    # one protocol's ranking picks the series for both tables, so that the two protocols compare the same methods
    chosen_by = coll.config["experiments"]["ldp"]["chosen_by"]
    deciding = best_here if protocol == chosen_by else [m for m, _, _ in table1_leaders(coll, chosen_by)[: len(chosen)]]
    if set(deciding) != set(chosen):
        verdict = (
            f"the series above ({', '.join(chosen)}) are not those yet (experiments.ldp.series; docs/experiments.md)"
        )
        if protocol != chosen_by:
            verdict += f"; under the {chosen_by} protocol, whose ranking picks them, the best are {', '.join(deciding)}"
    elif set(best_here) == set(chosen):
        verdict = "the series above are those"
    else:
        verdict = (
            f"here they would be {', '.join(best_here)}; the series above ({', '.join(chosen)}) are the best under the "
            f"{chosen_by} protocol, whose ranking picks them for both protocols' tables (experiments.ldp.chosen_by), "
            "so that the two tables compare the same methods"
        )
    return (
        f"Table 1's other methods that upload something, by mean rank of test HR@10 under this protocol over the "
        f"datasets with results (all but {', '.join(NO_UPLOADS)}, the centralised references and the floor): "
        f"{ranked}. The issue asks for the best {_COUNT_WORD.get(len(chosen), len(chosen))}: {verdict}."
    )


def ldp_table(coll: Collection, protocol: str) -> Table:
    exp = coll.config["experiments"]["ldp"]
    series, seeds = exp["series"], exp["seeds"]
    datasets = _datasets(coll, "ldp", experiment_methods(coll.config)["ldp"])
    table = _experiment_table(
        coll,
        f"ldp_{protocol}",
        f"Local differential privacy (Table 4), {protocol} protocol",
        (
            "Laplace noise of scale delta on every entry of every uploaded item table, drawn fresh each round; "
            "the client keeps its clean table, the server sees only the noisy uploads. delta is a noise scale, "
            "NOT a formal epsilon: nothing is clipped and the embeddings are unbounded, so no privacy guarantee "
            "follows from it. In brackets: the relative change from the method's delta = 0 runs, over the seeds "
            f"both have. {_seeds_note(seeds)} {_leaders_note(coll, protocol, series)}"
        ).rstrip(),
        ["Method", "delta"],
        datasets,
    )
    for variants in series:
        clean = variants[0]
        host = base_of(coll.config, clean)
        for j, method in enumerate(variants):
            row: list[Text | str] = [method_label(coll, host) if j == 0 else "", f"{noise_scale(coll, method):g}"]
            for d in datasets:
                for m in METRICS:
                    cell = test_cell(coll, protocol, d, method, m, seeds)
                    text = _text(cell, len(seeds), diverged_seeds(coll, protocol, d, method, seeds))
                    rel = _relative(cell, test_cell(coll, protocol, d, clean, m, seeds))
                    if j > 0 and rel is not None:
                        text += f" ({fmt_pct(rel, signed=True)})"
                    row.append(text)
            table.add_row(row, rule_before=j == 0)
    _floor_rows(coll, table, protocol, datasets, lead=2)
    table.notes += _divergence_note(coll, protocol, "ldp", datasets, seeds)
    return table


def sweep_value(coll: Collection, sweep: str, method: str):
    return SWEPT[sweep](method_block(coll.config, method))


def sensitivity_table(coll: Collection, protocol: str) -> Table:
    exp = coll.config["experiments"]["sensitivity"]
    sweeps, seeds = exp["sweeps"], exp["seeds"]
    datasets = _datasets(coll, "sensitivity", experiment_methods(coll.config)["sensitivity"])
    defaults = {s: sweep_value(coll, s, "fedem") for s in sweeps}
    table = _experiment_table(
        coll,
        f"sensitivity_{protocol}",
        f"Sensitivity of fedem to the adapter depth and alpha (Fig. 6), {protocol} protocol",
        (
            "One hyper-parameter varied at a time from fedem's defaults ("
            + ", ".join(f"{SWEEP_LABEL[s]} = {v:g}" for s, v in defaults.items())
            + "; the adapter of depth L has hidden sizes 16, 8, 4, 2 truncated to L - 1 layers). "
            f"{_seeds_note(seeds)}"
        ),
        ["Swept", "value"],
        datasets,
    )
    for sweep, variants in sweeps.items():
        for j, method in enumerate(variants):
            value = sweep_value(coll, sweep, method)
            label = [
                SWEEP_LABEL[sweep] if j == 0 else "",
                f"{value:g}" + (" (default)" if value == defaults[sweep] else ""),
            ]
            table.add_row(label + _cells(coll, protocol, datasets, method, seeds), rule_before=j == 0)
    table.notes += _divergence_note(coll, protocol, "sensitivity", datasets, seeds)
    return table


BUILDERS = {"ablation": ablation_table, "plugin": plugin_table, "ldp": ldp_table, "sensitivity": sensitivity_table}


def experiment_tables(coll: Collection, sets: list[str] | None = None) -> dict[str, list[Table]]:
    """Per experiment (all, or `sets`): its table under each protocol."""
    return {
        name: [build(coll, p) for p in coll.grid["protocols"]]
        for name, build in BUILDERS.items()
        if sets is None or name in sets
    }
