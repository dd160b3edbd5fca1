"""A run that diverges leaves a sealed divergence record beside the result file it does not write. The
report shows it as 'diverged' while the current code and config stand behind the record (stale otherwise),
the README's estimate counts it as done, and the workflow does not plan it again."""

from __future__ import annotations

import json

import pytest
from test_cli_and_errors import fedem_cli
from test_workflow import commit_smoke_results, smoke_settings

from fedem.config import load_config
from fedem.engine.results import canonical_json, digest_problem, sealed
from fedem.report import layout
from fedem.report.collect import INVALID, STALE, collect, current_divergences
from fedem.report.layout import RunKey
from fedem.report.provenance import IDENTITY_KEYS, expected_for
from fedem.report.summary import Cell
from fedem.report.tables import _cell_text, provenance_md

from conftest import REPO
from workflow_helpers import SMOKE, clone, planned_jobs, snakemake

# without weight decay nothing holds FedRAP's unbounded -lambda * MSE(D_u, C) term: round 0 diverges
UNSTABLE = [
    "methods.fedrap.lambda=50",
    "methods.fedrap.optimizer.weight_decay.head=0",
    "methods.fedrap.optimizer.weight_decay.tables=0",
    "training.rounds=3",
]
KEY = RunKey("authors", "filmtrust", "fedrap", 0)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory, mirror):
    tmp = tmp_path_factory.mktemp("diverged")
    results = tmp / "results"
    out = layout.run_path(results, KEY)
    data = [f"data.raw_dir={tmp}/raw", f"data.processed_dir={tmp}/processed"]
    args = ["train", "--dataset", "filmtrust", "--method", "fedrap", "--seed", "0", "--out", str(out)]
    args += ["--quiet", "--threads", "1"] + [a for o in UNSTABLE + data for a in ("--set", o)]
    proc = fedem_cli(*args, env_mirror=mirror)
    config = load_config(REPO / "config" / "config.yaml", UNSTABLE + data)
    return results, out, proc, config


def test_a_diverging_run_writes_a_sealed_record_and_no_result(diverged):
    results, out, proc, _ = diverged
    assert proc.returncode == 2 and "method 'fedrap' diverged in round 0" in proc.stderr, proc.stderr
    assert not out.exists() and not layout.timing_path(out).exists()
    record = json.loads(layout.divergence_path(out).read_text())
    assert digest_problem(record) is None
    assert (record["protocol"], record["dataset"], record["method"], record["seed"]) == (
        "authors",
        "filmtrust",
        "fedrap",
        0,
    )
    assert record["diverged"]["round"] == 0 and "non-finite" in record["diverged"]["error"]
    assert layout.find_divergences(results) == [(KEY, layout.divergence_path(out))]
    assert layout.find_runs(results) == []  # a record is never taken for a result


def test_the_report_shows_a_current_record_and_excludes_a_stale_one(diverged):
    results, _, _, config = diverged
    coll = collect(results, config)
    assert coll.diverged_rounds("authors", "filmtrust", "fedrap") == {0: 0} and not coll.problems
    assert current_divergences(results, config, expected_for(config)) == {KEY}
    assert "authors/filmtrust/fedrap/seed0` | 0 |" in provenance_md(coll)
    assert _cell_text(Cell({}), 5, diverged={0: 9, 1: 9}) == "diverged in round 9 (2 seeds)"
    assert _cell_text(Cell({2: 0.5, 3: 0.7}), 5, diverged={0: 8, 1: 9}).endswith("(n=2); 2 seeds diverged")

    default = load_config(REPO / "config" / "config.yaml")  # weight decay back on: the record no longer holds
    coll = collect(results, default)
    assert not coll.diverged and [p.kind for p in coll.problems] == [STALE]
    assert "config hash" in coll.problems[0].detail
    assert current_divergences(results, default, expected_for(default)) == set()


def test_an_edited_record_is_invalid(diverged, tmp_path):
    results, out, _, config = diverged
    copy = tmp_path / "results"
    path = layout.divergence_path(layout.run_path(copy, KEY))
    path.parent.mkdir(parents=True)
    record = json.loads(layout.divergence_path(out).read_text())
    record["diverged"]["round"] = 7
    path.write_text(canonical_json(record))
    coll = collect(copy, config)
    assert not coll.diverged and [p.kind for p in coll.problems] == [INVALID]


def test_the_workflow_does_not_plan_a_run_its_current_record_covers(tmp_path):
    root = clone(tmp_path / "clone")
    results = commit_smoke_results(root)
    (key, run), *_ = layout.find_runs(results)
    result = json.loads(run.read_text())
    run.unlink()
    record = {k: result[k] for k in IDENTITY_KEYS} | {"diverged": {"round": 1, "error": "non-finite training loss"}}
    layout.divergence_path(run).write_text(canonical_json(sealed(record)))
    assert planned_jobs(snakemake(root, "-n", *SMOKE).stdout).get("train") is None

    snakemake(root, "--cores", "1", "tables", *SMOKE, mirror=None)
    # the record stands in for the run among the tables' inputs: a newer record re-renders them
    plan = snakemake(root, "-n", *SMOKE, mirror=None).stdout
    render_inputs = plan.split("rule render_tables:")[1].split("output:")[0]
    assert str(layout.divergence_path(run).relative_to(root)) in render_inputs
    main = (root / smoke_settings(root)["tables_dir"] / f"main_{key.protocol}.md").read_text()
    assert "diverged in round 1 (1 seed)" in main

    record["config_hash"] = "0" * 16  # another config made it: stale, so the run is planned again
    layout.divergence_path(run).write_text(canonical_json(sealed(record)))
    assert planned_jobs(snakemake(root, "-n", *SMOKE).stdout).get("train") == 1


def train_tiny_fedmf(tmp_path, tiny_dataset, monkeypatch, train_round, rounds: int):
    """`fedem train` in-process: fedmf on the tiny dataset (in place of filmtrust's), its train_round
    replaced by `train_round(original, self, t, samples, negatives)`; returns (exit code, result path)."""
    from fedem import cli
    from fedem.data import pipeline
    from fedem.methods import get_method

    fedmf = get_method("fedmf")
    original = fedmf.train_round
    monkeypatch.setattr(fedmf, "train_round", lambda self, *args: train_round(original, self, *args))
    monkeypatch.setattr(pipeline, "prepare", lambda config, dataset, dedupe: (tiny_dataset, {}))
    out = layout.run_path(tmp_path / "results", RunKey("authors", "filmtrust", "fedmf", 0))
    argv = ["train", "--dataset", "filmtrust", "--method", "fedmf", "--seed", "0", "--out", str(out), "--quiet"]
    argv += ["--set", f"training.rounds={rounds}", "--set", "training.device=cpu"]
    return cli.main(argv), out


def test_a_nan_probability_is_recorded_as_the_divergence_of_its_round(tmp_path, tiny_dataset, monkeypatch):
    # torch's binary_cross_entropy refuses a NaN probability with a RuntimeError inside the step, before
    # the local loop's finite-loss check (FedRAP + EM on amazon-video): the same divergence, reached earlier
    import torch

    def poisoned(original, self, t, samples, negatives):
        if t == 1:
            torch.nn.functional.binary_cross_entropy(torch.tensor([float("nan")]), torch.tensor([1.0]))
        return original(self, t, samples, negatives)

    code, out = train_tiny_fedmf(tmp_path, tiny_dataset, monkeypatch, poisoned, rounds=3)
    assert code == 2  # the CLI's error exit, not a traceback
    assert not out.exists()
    record = json.loads(layout.divergence_path(out).read_text())
    assert digest_problem(record) is None
    assert record["diverged"]["round"] == 1
    assert "NaN probability" in record["diverged"]["error"] and "between 0 and 1" in record["diverged"]["error"]


def test_any_other_runtime_error_is_not_taken_for_a_divergence(tmp_path, tiny_dataset, monkeypatch):
    def broken(original, self, t, samples, negatives):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        train_tiny_fedmf(tmp_path, tiny_dataset, monkeypatch, broken, rounds=2)
    out = layout.run_path(tmp_path / "results", RunKey("authors", "filmtrust", "fedmf", 0))
    assert not out.exists() and not layout.divergence_path(out).exists()
