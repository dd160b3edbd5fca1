"""provenance.md names every run made on another device or torch version than most runs, cell by cell."""

from __future__ import annotations

from fedem.report.environments import HEADING, environments_md, seed_ranges
from fedem.report.layout import RunKey


def test_seed_ranges_collapse_consecutive_seeds():
    assert seed_ranges([4, 0, 1, 2]) == "0–2, 4"
    assert seed_ranges([3]) == "3"
    assert seed_ranges([0, 2, 4]) == "0, 2, 4"


def run(protocol, dataset, method, seed, device, torch_version):
    return RunKey(protocol, dataset, method, seed), {"device": device, "torch_version": torch_version}


def test_runs_off_the_usual_setting_are_listed_and_the_usual_ones_counted():
    runs = dict(
        [run("authors", "a", "m", s, "cpu", "2.13.0+cpu") for s in range(5)]
        + [run("clean", "a", "m", s, "cpu", "2.13.0+cpu") for s in range(3)]
        + [run("authors", "b", "g", s, "cuda", "2.11.0+cu130") for s in (0, 1, 2, 4)]
        + [run("clean", "b", "f", 1, "cpu", "2.11.0+cu130")]
    )
    lines = environments_md(runs)
    assert lines[0] == HEADING
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Device")]
    assert rows == [
        "| cpu | 2.13.0+cpu | 8 | every other run |",
        "| cpu | 2.11.0+cu130 | 1 | `clean/b/f` seed 1 |",
        "| cuda | 2.11.0+cu130 | 4 | `authors/b/g` seeds 0–2, 4 |",
    ]


def test_nothing_is_said_when_every_run_shares_one_setting():
    runs = dict(run("authors", "a", "m", s, "cpu", "2.13.0+cpu") for s in range(3))
    assert environments_md(runs) == []
    assert environments_md({}) == []
