"""Tables from (synthetic, tmp-only) result files: numbers, marks, stale exclusion, notes, formats."""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from fedem.engine.results import config_hash
from fedem.report import layout
from fedem.report.collect import INVALID, OUTSIDE, STALE, collect
from fedem.report.layout import RunKey
from fedem.report.summary import Cell, compare_to_best_baseline, ranks
from fedem.report.tablefmt import Table, Text, to_latex
from fedem.report.tables import build_tables, output_files, write_tables

from report_fixtures import grid_config, level_of, make_result, write_grid_results, write_json

SEEDS = [0, 1, 2]


@pytest.fixture
def config():
    return grid_config(datasets=["ml-100k", "filmtrust"], seeds=SEEDS, probe_datasets=[], probe_seeds=[])


@pytest.fixture
def results(tmp_path, config) -> Path:
    out = tmp_path / "results"
    write_grid_results(out, config)
    return out


def by_name(coll) -> dict[str, Table]:
    return {t.name: t for t in build_tables(coll)}


def cells(table: Table, row_label: str) -> list[Text]:
    return next(row for row in table.rows if row[0].text == row_label)


def test_every_declared_file_is_written(tmp_path, results, config):
    out = tmp_path / "tables"
    written = write_tables(collect(results, config), out)
    assert sorted(p.name for p in written) == sorted(output_files(config))
    assert sorted(p.name for p in out.iterdir()) == sorted(output_files(config))


def test_main_table_numbers_marks_and_comparison(results, config):
    coll = collect(results, config)
    assert not coll.problems
    table = by_name(coll)["main_authors"]
    assert [c for _, c in table.columns[:3]] == ["Method", "HR@10", "NDCG@10"]
    hr = [
        make_result(
            config, RunKey("authors", "ml-100k", "fedem", s), level_of(RunKey("authors", "ml-100k", "fedem", s))
        )["selected"]["test"]["hr@10"]
        for s in SEEDS
    ]
    fedem = cells(table, "fedem")[1]
    assert fedem.text == f"{statistics.fmean(hr):.4f} ± {statistics.stdev(hr):.4f}"
    assert fedem.bold and not fedem.underline  # the synthetic levels make fedem best, fedmf second
    assert cells(table, "fedmf")[1].underline and not cells(table, "fedmf")[1].bold
    sanity = cells(table, "neg-count (sanity floor, no learning)")[1]
    assert not sanity.bold and not sanity.underline
    assert cells(table, "best other method")[1].text == "fedmf"
    fedmf = [coll.runs[RunKey("authors", "ml-100k", "fedmf", s)]["selected"]["test"]["hr@10"] for s in SEEDS]
    rel = (statistics.fmean(hr) - statistics.fmean(fedmf)) / statistics.fmean(fedmf)
    with warnings.catch_warnings():  # the synthetic differences are constant across seeds
        warnings.simplefilter("ignore", RuntimeWarning)
        p = scipy_stats.ttest_rel(hr, fedmf).pvalue
    assert cells(table, "fedem vs it (p)")[1].text == f"{rel * 100:+.1f}% ({'p<0.001' if p < 0.001 else f'p={p:.3f}'})"


def test_ranks_skip_sanity_and_comparison_needs_two_seeds():
    cs = {"fedem": Cell({0: 0.2}), "fedmf": Cell({0: 0.5}), "neg-count": Cell({0: 0.9}), "local": Cell({0: 0.3})}
    assert ranks(cs, ("neg-count",)) == {"fedmf": 1, "local": 2}
    comp = compare_to_best_baseline(cs, "fedem", ("neg-count",))
    assert comp.baseline == "fedmf" and comp.p_value is None and comp.relative == pytest.approx(-0.6)


def test_method_below_the_sanity_floor_is_marked(tmp_path, config):
    results = tmp_path / "results"
    write_grid_results(results, config)
    key = RunKey("clean", "filmtrust", "local", 0)
    for s in SEEDS:  # local falls to 0.01, below neg-count (0.03 + ...)
        k = RunKey(key.protocol, key.dataset, key.method, s)
        write_json(layout.run_path(results, k), make_result(config, k, 0.01))
    table = by_name(collect(results, config))["main_clean"]
    assert cells(table, "local")[3].text.endswith("†")
    assert not cells(table, "fedem")[3].text.endswith("†")


def test_stale_and_broken_files_are_excluded_and_listed(tmp_path, results, config):
    stale_cfg = grid_config(datasets=["ml-100k", "filmtrust"], seeds=SEEDS)
    stale_cfg["training"]["rounds"] = 7
    k_cfg = RunKey("authors", "ml-100k", "fedmf", 0)
    write_json(layout.run_path(results, k_cfg), make_result(stale_cfg, k_cfg, 0.99))
    k_code = RunKey("authors", "ml-100k", "fedmf", 1)
    write_json(layout.run_path(results, k_code), make_result(config, k_code, 0.99, code_hash="deadbeefdeadbeef"))
    k_bad = RunKey("authors", "ml-100k", "fedmf", 2)
    layout.run_path(results, k_bad).write_text('{"protocol": "authors", "rounds": [')  # a partial write
    k_out = RunKey("authors", "ml-100k", "fedmf", 9)  # seed not in the grid
    write_json(layout.run_path(results, k_out), make_result(config, k_out, 0.99))

    coll = collect(results, config)
    kinds = {Path(p.path).name: (p.kind, p.detail) for p in coll.problems}
    assert kinds["seed0.json"][0] == STALE and "training.rounds: 7 -> 100" in kinds["seed0.json"][1]
    assert kinds["seed1.json"][0] == STALE and "training code hash deadbeefdeadbeef" in kinds["seed1.json"][1]
    assert kinds["seed2.json"][0] == INVALID
    assert kinds["seed9.json"][0] == OUTSIDE
    assert not any(k.method == "fedmf" and k.dataset == "ml-100k" and k.protocol == "authors" for k in coll.runs)

    out = tmp_path / "tables"
    write_tables(coll, out)
    main = (out / "main_authors.md").read_text()
    assert "**WARNING:** 3 result file(s) are stale or invalid and are EXCLUDED" in main
    assert "0.99" not in main and "0.9405" not in main  # the stale numbers never reach a table
    assert "% WARNING: 3 result file(s)" in (out / "main_authors.tex").read_text()
    prov = (out / "provenance.md").read_text()
    for key in (k_cfg, k_code, k_bad):
        assert f"`{layout.run_path(results, key).as_posix()}`" in prov
    assert "--forcerun" in prov and "Ignored (not part of the configured grid)" in prov
    assert config_hash(coll.expected.run_config("authors", "fedmf")) in prov


def test_data_hash_mismatch_is_stale(tmp_path, results, config):
    coll = collect(results, config)
    variant = coll.variant("authors", "ml-100k")
    write_json(layout.data_stats_path(results, "ml-100k", variant), {"content_hash": "f" * 64, "users": 3})
    coll = collect(results, config)
    stale = [p for p in coll.problems if p.kind == STALE]
    assert stale and all("/authors/ml-100k/" in p.path and "data hash" in p.detail for p in stale)


def test_left_out_dataset_is_named_without_machine_specific_text(tmp_path, config):
    """A dataset without results is named in the tables, and only what the results folder shows is said:
    a log left by a run on another machine (offline, a URL that did not answer) never reaches them."""
    results = tmp_path / "results"
    small = grid_config(datasets=["ml-100k"], seeds=SEEDS, probe_datasets=[], probe_seeds=[])
    write_grid_results(results, small)
    config = grid_config(datasets=["ml-100k", "ml-1m"], seeds=SEEDS, probe_datasets=[], probe_seeds=[])
    write_json(results / "grid.json", {"left_out": [{"dataset": "ml-1m", "detail": "did not answer within 3 s"}]})
    out = tmp_path / "tables"
    write_tables(collect(results, config), out)
    text = (out / "main_clean.md").read_text()
    assert "dataset ml-1m is left out: no result file in the results folder." in text
    assert "did not answer" not in "".join(p.read_text() for p in out.iterdir() if p.suffix == ".md")
    assert "ml-1m HR@10" not in text
    assert "ml-1m" in (out / "provenance.md").read_text()


def test_protocol_gap_and_test_selected(results, config):
    tables = by_name(collect(results, config))
    gap = tables["protocol_gap"]
    row = next(r for r in gap.rows if r[1].text == "fedem" and r[0].text == "ml-100k")
    authors = statistics.fmean(
        make_result(
            config, RunKey("authors", "ml-100k", "fedem", s), level_of(RunKey("authors", "ml-100k", "fedem", s))
        )["selected"]["test"]["hr@10"]
        for s in SEEDS
    )
    clean = statistics.fmean(
        make_result(config, RunKey("clean", "ml-100k", "fedem", s), level_of(RunKey("clean", "ml-100k", "fedem", s)))[
            "selected"
        ]["test"]["hr@10"]
        for s in SEEDS
    )
    assert row[4].text == f"{clean / authors * 100:.1f}%" and row[4].bold
    sel = tables["test_selected_authors"]
    assert sel.columns[2] == ("ml-100k", "test-sel. (leaky)")
    assert "leaky" in sel.title.lower() or "leaky" in sel.caption


def test_datasets_table_reads_the_stats_copies(tmp_path, results, config):
    coll = collect(results, config)
    write_json(
        layout.data_stats_path(results, "filmtrust", coll.variant("clean", "filmtrust")),
        {
            "users": 1002,
            "items": 2042,
            "interactions": 33369,
            "sparsity": 0.9837,
            "interactions_per_user": {"median": 28.0, "p25": 16.0, "p75": 50.0, "max": 244.0},
            "val_item_in_train_rate": 0.0,
            "test_item_in_train_rate": 0.0,
            "content_hash": "0" * 64,
        },
    )
    table = by_name(collect(results, config))["datasets"]
    (row,) = table.rows
    assert [c.text for c in row[:5]] == ["filmtrust", "dedupe (clean)", "1,002", "2,042", "33,369"]


def test_rendering_is_deterministic_and_latex_is_ascii(tmp_path, results, config):
    a, b = tmp_path / "a", tmp_path / "b"
    write_tables(collect(results, config), a)
    write_tables(collect(results, config), b)
    for path in a.iterdir():
        assert path.read_bytes() == (b / path.name).read_bytes(), path.name
    for tex in a.glob("*.tex"):
        text = tex.read_text()
        assert text.isascii(), tex.name
        assert r"\toprule" in text and r"\bottomrule" in text and text.count("{") == text.count("}")


def test_latex_escapes_and_marks():
    t = Table("x_y", "T", "50% of a_b", [("", "Method"), ("g", "HR@10")])
    t.add_row([Text("a_b"), Text("0.1 ± 0.2", bold=True, underline=True)])
    tex = to_latex(t)
    assert r"\textbf{\underline{0.1 $\pm$ 0.2}}" in tex and r"a\_b" in tex and r"50\% of a\_b" in tex
    assert r"\label{tab:x-y}" in tex


def test_all_runs_csv_has_one_row_per_current_run(tmp_path, results, config):
    out = tmp_path / "t"
    write_tables(collect(results, config), out)
    lines = (out / "all_runs.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 * len(config["grid"]["methods"]) * len(SEEDS)
    assert lines[0].startswith("protocol,dataset,method,seed,selected_round")


def test_copy_stats_drops_timings(tmp_path):
    from fedem.report.__main__ import main

    src = write_json(tmp_path / "s.json", {"users": 3, "preprocess_seconds": 0.1, "content_hash": "a"})
    assert main(["copy-stats", str(src), str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) == {"users": 3, "content_hash": "a"}


def test_roles_come_from_the_config(tmp_path):
    """Which method is a floor and which is compared with the best other is each block's `role`."""
    config = grid_config(datasets=["ml-100k"], seeds=SEEDS, probe_datasets=[], probe_seeds=[])
    config["methods"]["local"]["role"] = "sanity"
    results = tmp_path / "results"
    write_grid_results(results, config)
    table = by_name(collect(results, config))["main_authors"]
    labels = [row[0].text if isinstance(row[0], Text) else row[0] for row in table.rows]
    assert "local (sanity floor, no learning)" in labels and "neg-count (sanity floor, no learning)" in labels
    assert labels.index("local (sanity floor, no learning)") > labels.index("fedmf")  # floors go last
    best_other = next(
        row for row in table.rows if (row[0].text if isinstance(row[0], Text) else row[0]) == "best other method"
    )
    assert all((c.text if isinstance(c, Text) else c) == "fedmf" for c in best_other[1:])  # local is not a candidate
