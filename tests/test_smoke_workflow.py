"""End to end: the CI smoke grid (config/smoke.yaml) through Snakemake on a copy of the working tree,
killed once mid-run (SIGKILL to Snakemake and its jobs), unlocked and restarted, then checked against tests/expected/smoke.json,
then rendered into an HTML report. Trains for real (filmtrust, 3 rounds, two one-thread jobs at a time): about two and a half minutes
(158 s here; FedCIA runs 25 alignment steps, not 100, see config/smoke.yaml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fedem.report import layout

from conftest import REPO, mirror_dir
from workflow_helpers import SMOKE, clone, env, planned_jobs, snakemake

EXPECTED = REPO / "tests" / "expected" / "smoke.json"
CORES = os.environ.get("FEDEM_SMOKE_CORES", "2")


def partial_json_files(folder) -> list[str]:
    """Paths of JSON files under `folder` that do not parse (a partial write would show up here)."""
    bad = []
    for path in folder.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError:
            bad.append(str(path))
    return bad


def kill_after_first_train_job_starts(root, settings) -> tuple[bool, str]:
    """Start the smoke run and SIGKILL its whole process group (snakemake and its jobs) once a train
    job runs: the harshest interruption, no handler gets to clean up. Returns (killed, output).
    (A SIGINT, which Snakemake handles itself, once let a run exit 0 in CI.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", CORES, *SMOKE],
        cwd=root,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    train_logs = root / settings["logs_dir"] / "train"
    deadline = time.monotonic() + 300
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if train_logs.is_dir() and any(train_logs.rglob("*.log")):
                time.sleep(1)
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return killed and proc.returncode != 0, output or ""


@pytest.mark.slow
def test_smoke_workflow_end_to_end(tmp_path):
    if mirror_dir() is None:
        pytest.skip("no offline dataset mirror (set FEDEM_DATA_MIRROR)")
    root = clone(tmp_path / "clone")
    settings = yaml.safe_load((root / "config" / "workflow.yaml").read_text())["workflow"]
    settings.update(yaml.safe_load((root / "config" / "smoke_workflow.yaml").read_text())["workflow"])
    results = root / settings["results_dir"]

    killed, output = kill_after_first_train_job_starts(root, settings)
    assert killed, f"the first run was meant to be killed while a train job ran:\n{output[-3000:]}"
    assert not partial_json_files(results), "a killed run left a partial JSON file"

    snakemake(root, "--unlock", *SMOKE)  # a killed Snakemake leaves its lock behind
    snakemake(root, "--cores", CORES, *SMOKE, timeout=600)  # finishes the grid (rerun-incomplete)
    assert not partial_json_files(results)
    assert planned_jobs(snakemake(root, "-n", *SMOKE).stdout) == {}, "the grid is complete: nothing left to do"

    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedem.report.check",
            "--results",
            str(results),
            "--expected",
            str(EXPECTED),
            "--config",
            "config/smoke.yaml",
        ],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    tables = root / settings["tables_dir"]
    assert (
        "Every result file in the grid matches the current training code and config"
        in (tables / "provenance.md").read_text()
    )
    assert "neg-count (sanity floor, no learning)" in (tables / "main_authors.md").read_text()
    # the compute tables read each run's Snakemake benchmark file where layout says the workflow writes it
    runs = layout.find_runs(results)
    assert runs and all(layout.benchmark_path(results, key).is_file() for key, _ in runs)
    assert "| — |" not in (tables / "compute_authors.md").read_text().split("|:--", 1)[1]
    figures = root / settings["figures_dir"]
    assert (figures / "convergence_filmtrust.pdf").is_file() and (figures / "probe_models_filmtrust.png").is_file()

    snakemake(root, *SMOKE, "--report", "report.html")
    html = (root / "report.html").read_text(errors="replace")
    assert "main_clean" in html and "protocol_gap" in html
