"""The README's "still to run" estimate: measured pairs at their mean, a variant from its reference
method's time and its measured ratio to it, the others from a method factor times a dataset factor, and
what it cannot estimate counted apart."""

from __future__ import annotations

import math

import pytest

from fedem.report.layout import RunKey
from fedem.report.readme import still_to_run, wall_model


def timed(dataset, method, seed, seconds, protocol="authors"):
    return RunKey(protocol, dataset, method, seed), {"wall_seconds": seconds}


def test_wall_model_keeps_measured_means_and_fills_a_pair_by_the_product_rule():
    timings = [
        timed("a", "m1", 0, 3000),
        timed("a", "m1", 1, 5000, "clean"),  # mean 4000: both protocols and seeds count
        timed("a", "m2", 0, 8000),
        timed("b", "m1", 0, 12000),
    ]
    model = wall_model(timings)
    assert model[("a", "m1")] == pytest.approx(4000)
    assert model[("a", "m2")] == pytest.approx(8000)
    # m2 costs 2x m1 on a; b costs 3x a for m1: m2 on b is 2 * 3 * 4000
    assert model[("b", "m2")] == pytest.approx(24000, rel=1e-6)
    assert ("c", "m1") not in model and ("a", "m3") not in model
    assert model.fitted == {("b", "m2")}


def test_still_to_run_counts_estimated_unknown_and_data_less_runs_apart():
    timings = [timed("a", "m1", 0, 3600), timed("a", "m2", 0, 7200), timed("b", "m1", 0, 10800)]
    present = {key for key, _ in timings}
    planned = sorted(present) + [
        RunKey("authors", "b", "m2", 0),  # 2 * 3 * 3600 s = 6 h
        RunKey("clean", "b", "m2", 0),  # 6 h
        RunKey("authors", "a", "m3", 0),  # a method that never ran
        RunKey("authors", "c", "m1", 0),  # a dataset with no run at all
    ]
    text = still_to_run(planned, present, wall_model(timings))
    assert text.startswith("4 still to run")
    assert "about 12 h of single-job wall time on a CPU for the 2 of them" in text
    assert (
        "(the largest totals per method and dataset: m2 on b 12.0 h for 2 runs (fitted)); 'fitted': no run of that method on that dataset yet"
        in text
    )
    assert "1 of methods that have not run yet (m3 1)" in text
    assert "1 on datasets with no run here (c)" in text
    assert still_to_run(sorted(present), present, wall_model(timings)) == "nothing is left to run"
    assert math.isclose(wall_model(timings)[("b", "m2")], 21600, rel_tol=1e-6)


def test_a_variant_scales_with_its_reference_method_not_with_the_average():
    timings = [
        timed("a", "base", 0, 100),
        timed("b", "base", 0, 1400),  # this method grows 14x from a to b
        timed("a", "cheap", 0, 10),
        timed("b", "cheap", 0, 20),  # this one 2x
        timed("a", "variant", 0, 300),  # 3x its base where both ran
    ]
    model = wall_model(timings, {"variant": "base", "never-ran": "base"})
    assert model[("b", "variant")] == pytest.approx(3 * 1400)
    assert ("b", "never-ran") not in model  # a variant with no run of its own is not guessed
    assert model[("a", "variant")] == pytest.approx(300)  # measured pairs keep their mean
    assert model.fitted == set()  # every pair is measured or a variant of a measured reference
    assert ("b", "variant") not in model.fitted  # scaled from its own measured ratio, not the product rule


def test_still_to_run_names_the_largest_pairs_first_and_only_a_few():
    timings = [timed("a", m, 0, 3600 * h) for m, h in (("m1", 1), ("m2", 4), ("m3", 2), ("m4", 3))]
    present = {key for key, _ in timings}
    planned = sorted(present) + [RunKey(p, "a", m, 1) for p in ("authors", "clean") for m in ("m1", "m2", "m3", "m4")]
    text = still_to_run(planned, present, wall_model(timings))
    assert (
        "(the largest totals per method and dataset: m2 on a 8.0 h for 2 runs, m4 on a 6.0 h for 2 runs, m3 on a 4.0 h for 2 runs)"
        in text
    )  # measured: not 'fitted'
    assert "fitted" not in text


def test_experiment_line_counts_a_diverged_run_as_run():
    from fedem.config import load_config
    from fedem.report.layout import experiment_runs
    from fedem.report.readme import experiment_timing

    from conftest import REPO

    config = load_config(REPO / "config" / "config.yaml")
    planned = experiment_runs(config, "plugin")
    timings = [(planned[0], {"wall_seconds": 1800}), (planned[1], {"wall_seconds": 1800})]
    diverged = {planned[2]}
    present = {planned[0], planned[1]} | diverged
    line = experiment_timing(timings, config, "plugin", present, wall_model(timings), diverged)
    assert line.startswith(
        f"3 of its {len(planned)} planned runs have run (current or not; see provenance.md), "
        "1 of them diverged (no result file), 1.0 h of single-job wall time; "
        f"{len(planned) - 3} still to run"
    )
    only_diverged = experiment_timing([], config, "plugin", diverged, wall_model([]), diverged)
    assert only_diverged.startswith(f"1 of its {len(planned)} planned runs have run")


def test_a_gpu_run_is_counted_as_run_but_does_not_set_the_cpu_estimate():
    from fedem.report.readme import grid_timing

    cpu = [timed("a", "m1", 0, 3600), timed("a", "m2", 0, 7200), timed("b", "m1", 0, 10800)]
    key, timing = timed("b", "m2", 0, 30)
    gpu = (key, {**timing, "gpu": "NVIDIA H200"})
    model = wall_model(cpu + [gpu])
    assert model[("b", "m2")] == pytest.approx(21600, rel=1e-6)  # the product rule over CPU runs, not 30 s
    assert model.fitted == {("b", "m2")}
    text = grid_timing(cpu + [gpu])
    assert text.startswith("4 runs, 6.0 h of single-job wall time in total")
    assert text.endswith("; 1 of them trained on a GPU (NVIDIA H200)).")
    assert "GPU" not in grid_timing(cpu)


def test_still_to_run_counts_the_runs_behind_each_named_total():
    timings = [timed("a", "m1", 0, 3600)]
    present = {key for key, _ in timings}
    planned = sorted(present) + [RunKey("clean", "a", "m1", 0)]
    text = still_to_run(planned, present, wall_model(timings))
    assert "(the largest totals per method and dataset: m1 on a 1.0 h for 1 run)" in text
