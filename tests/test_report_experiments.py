"""The experiments' tables and figures, from synthetic (tmp-only) result files with current hashes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedem.config import experiment_methods
from fedem.report import layout
from fedem.report.collect import collect
from fedem.report.experiment_figures import plot_sensitivity, plot_tsne, tsne_embedding
from fedem.report.experiments import ablation_table, ldp_table, plugin_table, sensitivity_table, table1_leaders
from fedem.report.figures import convergence_methods
from fedem.report.layout import RunKey
from fedem.report.tablefmt import to_markdown

from report_fixtures import grid_config, make_result, write_grid_probes, write_grid_results, write_json

LEVEL = {
    "fedmf-em": 0.55,
    "fedmf": 0.50,
    "fedem-replace": 0.30,
    "fedem-static": 0.50,
    "fedem-dynamic": 0.55,
    "fedem": 0.60,
}


# module-scoped: writing and collecting the synthetic grid is most of this file's time, and no test changes it
@pytest.fixture(scope="module")
def config():
    return grid_config(datasets=["filmtrust"], seeds=[0, 1], probe_datasets=["filmtrust"], probe_seeds=[0])


def write_experiments(results, config, levels=LEVEL):
    for name, methods in experiment_methods(config).items():
        for m in methods:
            for p in config["grid"]["protocols"]:
                for s in config["experiments"][name]["seeds"]:
                    key = RunKey(p, "filmtrust", m, s)
                    path = layout.run_path(results, key)
                    if not path.exists():
                        write_json(path, make_result(config, key, levels.get(m, 0.45) + 0.01 * s))


def make_diverged(results, key: RunKey, round_index: int, error: str) -> None:
    """Turns the run's result file into the divergence record `fedem train` would have left instead."""
    from fedem.engine.results import canonical_json, sealed
    from fedem.report.provenance import IDENTITY_KEYS

    run = layout.run_path(results, key)
    result = json.loads(run.read_text())
    run.unlink()
    layout.timing_path(run).unlink(missing_ok=True)
    record = {k: result[k] for k in IDENTITY_KEYS} | {"diverged": {"round": round_index, "error": error}}
    layout.divergence_path(run).write_text(canonical_json(sealed(record)))


@pytest.fixture(scope="module")
def coll(tmp_path_factory, config):
    results = tmp_path_factory.mktemp("experiments") / "results"
    write_grid_results(results, config)
    write_experiments(results, config)
    return collect(results, config)


def test_experiment_runs_are_current_and_not_in_table_1(coll):
    assert not coll.excluded()
    assert RunKey("authors", "filmtrust", "fedem-L1", 2) in coll.runs
    from fedem.report.tables import main_table

    text = to_markdown(main_table(coll, "authors", "test"))
    assert "fedem-L1" not in text and "fedem-static" not in text


def test_ablation_ladder_rows_and_relative_changes(coll):
    table = ablation_table(coll, "authors")
    labels = [row[0].text for row in table.rows]
    assert labels[:5] == [
        "1. fedmf",
        "2. + similarity aggregation (replace)",
        "3. static merging (rho = 0.5)",
        "4. dynamic merging (rho per client)",
        "5. fedem",
    ]
    assert labels[5:8] == [coll.config["methods"][m]["label"] for m in ("fedem-avg", "fedem-sim", "fedem-cos")]
    assert labels[-1].startswith("neg-count")
    hr = [row[1].text for row in table.rows[:5]]
    assert "(" not in hr[0]  # the bottom rung has nothing below it
    # fedem over dynamic: the fixtures' level + 0.01 per seed, seeds 0-4: mean levels 0.62 vs 0.57
    assert f"({(0.62 / 0.57 - 1) * 100:+.1f}%, p<0.001)" in hr[4]
    assert "±" in hr[4] and "(n=" not in hr[4]


def test_ldp_rows_are_the_noise_scales_with_the_drop_from_zero(coll):
    table = ldp_table(coll, "clean")
    deltas = [row[1].text for row in table.rows if not row[0].text.startswith("neg-count")]
    assert deltas == ["0", "0.1", "0.2", "0.3", "0.4", "0.5"] * 3
    assert [row[0].text for row in table.rows[::6][:3]] == ["fedem", "pfedrec", "gpfedrec"]
    assert "NOT a formal epsilon" in table.caption
    assert "(" not in table.rows[0][2].text and "%" in table.rows[1][2].text


def test_sensitivity_rows_follow_the_swept_values(coll):
    table = sensitivity_table(coll, "authors")
    values = [row[1].text for row in table.rows if not row[0].text.startswith("neg-count")]
    assert values == ["1", "2", "3 (default)", "4", "5", "0", "0.3", "0.6", "0.9 (default)", "1.2", "1.5"]
    # fedem has seeds 0-4 here (the ablation's), the sweep reads only its own seeds 0-2
    default_row = next(r for r in table.rows if r[1].text == "3 (default)")
    assert default_row[2].text == "0.5795 ± 0.0095"  # 0.95 * (0.60, 0.61, 0.62)


def test_convergence_draws_fedem_and_the_strongest_others(coll):
    methods = convergence_methods(coll, "authors", "filmtrust")
    assert methods[0] == "fedem" and methods[-1] == "neg-count"
    others = methods[1:-1]
    assert len(others) == 7 and "fedem-L1" not in others and not set(others) & set(coll.centralised_methods)


def test_sensitivity_and_tsne_figures_are_written(tmp_path, config, coll):
    out = tmp_path / "figures"
    paths = plot_sensitivity(coll, out)
    assert sorted(p.name for p in paths) == ["sensitivity.pdf", "sensitivity.png"]
    paths = plot_tsne(coll, "filmtrust", out)  # no snapshot in these probes: a placeholder, still written
    assert sorted(p.name for p in paths) == ["tsne_filmtrust.pdf", "tsne_filmtrust.png"]


def test_tsne_uses_a_snapshot_and_is_deterministic(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    write_grid_probes(results, config, snapshot_items=40)
    coll = collect(results, config)
    assert not coll.excluded()
    rng = np.random.default_rng(0)
    tables = {m: rng.normal(size=(40, 4)).tolist() for m in ("local", "aggregated", "merged")}
    a, which = tsne_embedding(tables)
    b, _ = tsne_embedding(tables)
    assert a.shape == (120, 2) and np.array_equal(a, b) and list(np.bincount(which)) == [40, 40, 40]
    paths = plot_tsne(coll, "filmtrust", tmp_path / "figures")
    assert paths[0].read_bytes().startswith(b"%PDF")


def test_plugin_table_pairs_each_host_with_its_plugged_variant(coll):
    table = plugin_table(coll, "authors")
    labels = [row[0].text for row in table.rows]
    assert labels[:3] == ["fedmf", "fedmf + EM", "change"]
    assert labels[3:9] == ["fedncf", "fedncf + EM", "change", "pfedrec", "pfedrec + EM", "change"]
    # levels 0.50 -> 0.55 (as the grid fixture's fedmf, +0.01 per seed, seeds 0-4)
    assert table.rows[2][1].text == f"{(0.57 / 0.52 - 1) * 100:+.1f}% (p<0.001)"


def test_an_experiment_narrowed_to_some_datasets_shows_those_only(tmp_path, config):
    import copy

    results = tmp_path / "results"
    write_grid_results(results, config)  # Table-1 runs (fedmf, fedem: the ladder's ends) on filmtrust
    wider = copy.deepcopy(config)
    wider["grid"]["datasets"] = ["filmtrust", "ml-100k"]
    wider["experiments"]["ablation"]["datasets"] = ["ml-100k"]
    columns = {c[0] for c in ablation_table(collect(results, wider), "authors").columns}
    assert "filmtrust" not in columns  # fedmf and fedem ran there, but the ablation runs on ml-100k only
    wider["experiments"]["ablation"]["datasets"] = ["filmtrust"]
    assert "filmtrust" in {c[0] for c in ablation_table(collect(results, wider), "authors").columns}


def test_ldp_note_ranks_the_table_1_methods_that_upload(coll):
    # the fixtures: fedmf above every other grid method, the rest tied per level (ties share a rank)
    leaders = table1_leaders(coll, "authors")
    names = [m for m, _, _ in leaders]
    assert "local" not in names and coll.proposed not in names and not set(names) & set(coll.unranked_methods)
    assert leaders[0] == ("fedmf", 1.0, 1)
    assert [m for m, r, _ in leaders if r == 2.0] == ["fedncf", "pfedrec", "fedrap", "gpfedrec"]  # grid order
    caption = ldp_table(coll, "authors").caption
    assert "fedmf 1.0, fedncf 2.0, pfedrec 2.0" in caption
    assert "the series above (pfedrec, gpfedrec) are not those yet" in caption


def test_a_host_that_diverged_says_so_in_the_plugin_table_as_in_table_1(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    write_experiments(results, config)
    seeds = config["experiments"]["plugin"]["seeds"]
    for seed in seeds:  # every seed of pfedrec on filmtrust diverged in round 9: records, no results
        make_diverged(results, RunKey("authors", "filmtrust", "pfedrec", seed), 9, "non-finite loss")
    coll = collect(results, config)
    assert not coll.problems and len(coll.diverged) == len(seeds)

    authors = plugin_table(coll, "authors")
    host = next(row for row in authors.rows if row[0].text == "pfedrec")
    assert host[1].text == f"diverged in round 9 ({len(seeds)} seeds)"
    assert any(note.startswith("'diverged in round t'") for note in authors.notes)
    clean = plugin_table(coll, "clean")  # nothing diverged under this protocol: numbers and no note
    assert "±" in next(row for row in clean.rows if row[0].text == "pfedrec")[1].text
    assert not any("diverged" in note for note in clean.notes)
    # a table that shows none of the diverged runs carries no note
    assert not any("diverged" in note for note in ablation_table(coll, "authors").notes)


def test_the_ldp_series_are_judged_by_the_protocol_that_picks_them(coll, monkeypatch):
    import fedem.report.experiments as experiments

    series = [m for m, *_ in coll.config["experiments"]["ldp"]["series"][1:]]  # pfedrec, gpfedrec
    ranking = {  # authors: the series lead; clean: colr second
        "authors": [("pfedrec", 1.0, 1), ("gpfedrec", 2.0, 1), ("colr", 3.0, 1)],
        "clean": [("pfedrec", 1.0, 1), ("colr", 2.0, 1), ("gpfedrec", 3.0, 1)],
    }
    monkeypatch.setattr(experiments, "table1_leaders", lambda coll, protocol: ranking[protocol])
    assert [experiments.base_of(coll.config, m) for m in series] == ["pfedrec", "gpfedrec"]
    assert "The issue asks for the best two: the series above are those." in ldp_table(coll, "authors").caption
    clean = ldp_table(coll, "clean").caption
    assert "here they would be pfedrec, colr; the series above (pfedrec, gpfedrec) are the best under the authors" in (
        clean
    )
    # picked under the clean protocol instead: the authors table says they are not the best there
    monkeypatch.setitem(coll.config["experiments"]["ldp"], "chosen_by", "clean")
    authors = ldp_table(coll, "authors").caption
    assert "are not those yet" in authors and "under the clean protocol, whose ranking picks them, the best are" in (
        authors
    )


def test_a_change_compares_only_the_seeds_both_rows_have(tmp_path, config):
    # one plugged seed diverged: comparing the four survivors with all five host seeds would credit the
    # plug-in with the survivors' luck (here: the fixtures' highest seed is the one lost)
    results = tmp_path / "results"
    write_grid_results(results, config)
    write_experiments(results, config)
    seeds = config["experiments"]["plugin"]["seeds"]
    lost = max(seeds)
    make_diverged(results, RunKey("authors", "filmtrust", "fedmf-em", lost), 63, "NaN probability")
    coll = collect(results, config)

    table = plugin_table(coll, "authors")
    plugged = next(row for row in table.rows if row[0].text == "fedmf + EM")
    assert plugged[1].text.endswith("; 1 seed diverged")
    kept = [s for s in seeds if s != lost]
    host_mean = sum(0.50 + 0.01 * s for s in kept) / len(kept)
    plugged_mean = sum(0.55 + 0.01 * s for s in kept) / len(kept)
    change = table.rows[table.rows.index(plugged) + 1][1].text
    assert change.startswith(f"{(plugged_mean / host_mean - 1) * 100:+.1f}% ("), change
    assert "over the seeds the two rows share" in table.caption
    # Table 1 does not show fedmf + EM, so its divergence is the plug-in table's note, not Table 1's
    from fedem.report.tables import main_table

    assert any(note.startswith("'diverged in round t'") for note in table.notes)
    assert not any("diverged" in note for note in main_table(coll, "authors", "test").notes)
