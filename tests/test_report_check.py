"""The CI tolerance check: expectations come from --update, and every kind of drift fails."""

from __future__ import annotations

import json

import pytest
import yaml

from fedem.report import layout
from fedem.report.check import main
from fedem.report.layout import RunKey

from report_fixtures import grid_config, make_result, write_grid_probes, write_grid_results, write_json

KEY = RunKey("clean", "filmtrust", "fedmf", 0)


@pytest.fixture
def setup(tmp_path):
    config = grid_config(datasets=["filmtrust"], seeds=[0], probe_datasets=["filmtrust"], probe_seeds=[0])
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    write_grid_results(results, config)
    write_grid_probes(results, config)
    expected = tmp_path / "expected.json"
    args = ["--results", str(results), "--expected", str(expected), "--config", str(cfg)]
    assert main(args + ["--update", "--atol", "0.02"]) == 0
    return config, results, expected, args


def test_update_then_check_passes(setup):
    config, results, expected, args = setup
    data = json.loads(expected.read_text())
    assert data["atol"] == 0.02 and "do not edit by hand" in data["about"]
    assert len(data["runs"]) == 2 * len(config["grid"]["methods"]) + 2  # every run of both protocols, 2 probe runs
    assert f"run:{KEY.label}" in data["runs"] and "probe:clean/filmtrust/fedem/seed0" in data["runs"]
    assert main(args) == 0


@pytest.mark.parametrize("shift,ok", [(0.015, True), (0.05, False)])
def test_tolerance(setup, shift, ok):
    config, results, expected, args = setup
    data = json.loads(expected.read_text())
    data["runs"][f"run:{KEY.label}"]["hr@10"] += shift
    expected.write_text(json.dumps(data))
    assert (main(args) == 0) == ok


def test_missing_extra_and_stale_runs_fail(setup, capsys):
    config, results, expected, args = setup
    layout.run_path(results, KEY).unlink()
    assert main(args) == 1
    assert "missing" in capsys.readouterr().err
    write_json(layout.run_path(results, KEY), make_result(config, KEY, 0.5))
    extra = RunKey("clean", "filmtrust", "fedmf", 0)
    data = json.loads(expected.read_text())
    del data["runs"][f"run:{extra.label}"]
    expected.write_text(json.dumps(data))
    assert main(args) == 1
    assert "not in the expectations" in capsys.readouterr().err
    write_json(layout.run_path(results, KEY), make_result(config, KEY, 0.5, code_hash="0" * 16))
    assert main(args) == 1
    assert "stale" in capsys.readouterr().err


def test_update_keeps_the_stored_tolerance(setup):
    config, results, expected, args = setup
    data = json.loads(expected.read_text())
    data["atol"] = 0.03
    expected.write_text(json.dumps(data))
    assert main(args + ["--update"]) == 0
    assert json.loads(expected.read_text())["atol"] == 0.03
