"""profiles/slurm submits the smoke grid: the sbatch calls the SLURM executor plugin makes through it,
against stub SLURM commands (the stub sbatch records its arguments and runs nothing, so nothing trains)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedem.config import load_config, planned_methods, planned_seeds
from fedem.data.pipeline import artifact_path, stats_path
from fedem.report import layout

from workflow_helpers import SMOKE, clone, env

pytest.importorskip("snakemake_executor_plugin_slurm")

PROFILE = "profiles/slurm"
STUB_SBATCH = """#!/bin/sh
# a stub sbatch: records its arguments (NUL-separated, one file per call) and answers as `sbatch --parsable`
printf '%s\\0' "$@" > "$SBATCH_CALLS/$$.args"
echo $$
"""
# the other commands the plugin may call (partition, account, status, cancel): answer nothing
OTHER_STUBS = ("sinfo", "squeue", "sacct", "scontrol", "scancel", "sacctmgr", "sshare")
TARGET_JOB = re.compile(r"'((?:train|probe):[^']*)'")


def stub_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(STUB_SBATCH)
    for name in OTHER_STUBS:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)


def prepared_smoke_data(root: Path) -> int:
    """Fake prepared data and statistics copies, so only train and probe jobs are pending (no prepare
    job to wait for); returns how many train + probe jobs the smoke grid has."""
    config = load_config(root / "config" / "smoke.yaml")
    workflow = {}
    for name in ("workflow.yaml", "smoke_workflow.yaml"):
        workflow.update(yaml.safe_load((root / "config" / name).read_text())["workflow"])
    grid = config["grid"]
    for dataset in grid["datasets"]:
        for spec in config["protocols"].values():
            artifact = root / artifact_path(config, dataset, spec["dedupe"])
            artifact.parent.mkdir(parents=True, exist_ok=True)
            artifact.write_bytes(b"fake")
            (root / stats_path(artifact_path(config, dataset, spec["dedupe"]))).write_text("{}")
            copy = root / layout.data_stats_path(workflow["results_dir"], dataset, artifact.stem)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text("{}")
    per_cell = sum(len(planned_seeds(config, m)) for m in planned_methods(config))  # Table 1 and the experiments
    runs = len(grid["protocols"]) * len(grid["datasets"]) * per_cell
    probes = len(grid["protocols"]) * len(grid["probe_datasets"]) * len(grid["probe_seeds"])
    return runs + probes


def submit(root: Path, tmp_path: Path, *extra: str, timeout: float = 60) -> list[list[str]]:
    """Run the smoke grid through the profile until every job of the first batch was handed to the stub
    sbatch, then kill Snakemake (its process group); returns each sbatch call's arguments."""
    stub_slurm(tmp_path / "bin")
    calls = tmp_path / "sbatch_calls"
    calls.mkdir()
    run_env = env()
    run_env.update(PATH=f"{tmp_path / 'bin'}{os.pathsep}{run_env['PATH']}", SBATCH_CALLS=str(calls))
    run_env.pop("SLURM_JOB_ID", None)
    log = tmp_path / "snakemake.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--workflow-profile", PROFILE, *SMOKE, *extra],
            cwd=root,
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"Execute (\d+) jobs", log.read_text())
            if match and len(list(calls.glob("*.args"))) >= int(match.group(1)):
                time.sleep(0.5)  # a submission past the announced batch would show up here
                break
            if proc.poll() is not None:
                raise AssertionError(
                    f"snakemake ended ({proc.returncode}) before submitting:\n{log.read_text()[-5000:]}"
                )
            time.sleep(0.2)
        else:
            raise AssertionError(f"no complete submission within {timeout} s:\n{log.read_text()[-5000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return [p.read_bytes().decode().split("\0")[:-1] for p in sorted(calls.glob("*.args"))]


def gpu_requests(args: list[str]) -> list[str]:
    return [a for a in args if re.match(r"--(gres|gpus|gpus-per-\w+)(=|$)", a) or a == "-G"]


def submitted_jobs(calls: list[list[str]]) -> list[str]:
    return [job for args in calls for arg in args if arg.startswith("--wrap=") for job in TARGET_JOB.findall(arg)]


@pytest.mark.parametrize("gpus", [0, 1])
def test_slurm_profile_submits_grouped_jobs_with_one_gpu_request_only_on_gpu_config(tmp_path, gpus):
    root = clone(tmp_path / "clone")
    num_jobs = prepared_smoke_data(root)
    extra = []
    if gpus:
        overlay = tmp_path / "gpu.yaml"
        overlay.write_text(f"workflow: {{gpus_per_train_job: {gpus}}}\n")
        extra = [str(overlay)]  # after SMOKE's --configfile files
    calls = submit(root, tmp_path, *extra)

    assert calls, "no sbatch call"
    for args in calls:
        options = [a for a in args if not a.startswith("--wrap=")]
        assert gpu_requests(options) == ([f"--gpus={gpus}"] if gpus else []), options
        assert not any("--gres" in a for a in options), options
    # grouped: fewer sbatch calls than jobs, each a group job of the `runs` group, and every train and
    # probe job of the grid submitted exactly once
    assert len(calls) < num_jobs
    assert all(any(a.startswith("rule_runs") for a in args) for args in calls), [a[:12] for a in calls]
    jobs = submitted_jobs(calls)
    assert len(jobs) == len(set(jobs)) == num_jobs, jobs
