"""A result file edited after training is caught by the tables step and kept out of every table."""

from __future__ import annotations

import json

import pytest

from fedem.engine.results import DIGEST_KEY, digest_problem, read_result, sealed, write_result
from fedem.report import layout
from fedem.report.collect import INVALID, collect
from fedem.report.layout import RunKey
from fedem.report.tables import write_tables

from report_fixtures import grid_config, make_result, write_grid_results, write_json

SEEDS = [0, 1, 2]
KEY = RunKey("authors", "ml-100k", "fedem", 0)


@pytest.fixture
def config():
    return grid_config(datasets=["ml-100k"], seeds=SEEDS, probe_datasets=[], probe_seeds=[])


@pytest.fixture
def results(tmp_path, config):
    path = tmp_path / "results"
    write_grid_results(path, config)
    return path


def edit(results, change):
    path = layout.run_path(results, KEY)
    doc = json.loads(path.read_text())
    change(doc)
    write_json(path, doc)


def test_write_result_seals_the_file_and_the_seal_verifies(tmp_path, config):
    path = tmp_path / "r.json"
    write_result(path, make_result(config, KEY, 0.5))
    doc = read_result(path)
    assert len(doc[DIGEST_KEY]) == 64 and digest_problem(doc) is None


def test_a_hand_edited_number_is_invalid_and_excluded(results, config, tmp_path):
    def bump(doc):
        doc["selected"]["test"]["hr@10"] += 0.02
        doc["rounds"][doc["selected"]["round"]]["test"]["hr@10"] += 0.02  # consistent with its own curve

    edit(results, bump)
    coll = collect(results, config)
    assert KEY not in coll.runs
    problem = next(p for p in coll.problems if p.path.endswith("authors/ml-100k/fedem/seed0.json"))
    assert problem.kind == INVALID and "edited after training" in problem.detail
    out = tmp_path / "tables"
    write_tables(coll, out)
    assert "1 result file(s) are stale or invalid and are EXCLUDED" in (out / "main_authors.md").read_text()
    assert "edited after training" in (out / "provenance.md").read_text()


def test_a_selected_block_that_contradicts_its_rounds_is_invalid_even_with_a_recomputed_digest(results, config):
    path = layout.run_path(results, KEY)
    doc = json.loads(path.read_text())
    doc["selected"]["round"] = 0
    doc["selected"]["test"] = doc["rounds"][-1]["test"]  # the best test numbers under another round's label
    write_json(path, sealed(doc))
    coll = collect(results, config)
    problem = next(p for p in coll.problems if p.path == path.as_posix())
    assert problem.kind == INVALID and "'selected' block contradicts its own rounds" in problem.detail
    assert "selected.round: 0 -> 4" in problem.detail


def test_a_test_selected_block_is_rederived_too(results, config):
    path = layout.run_path(results, KEY)
    doc = json.loads(path.read_text())
    doc["test_selected"]["test"]["hr@10"] = 0.99
    write_json(path, sealed(doc))
    problem = next(p for p in collect(results, config).problems if p.path == path.as_posix())
    assert "'test_selected' block contradicts" in problem.detail


def test_a_file_without_a_digest_is_not_admitted(results, config):
    edit(results, lambda doc: doc.pop(DIGEST_KEY))
    problem = next(
        p for p in collect(results, config).problems if "fedem/seed0.json" in p.path and "/authors/" in p.path
    )
    assert "no content digest" in problem.detail
