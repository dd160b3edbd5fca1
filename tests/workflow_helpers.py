"""Run the Snakemake workflow on a copy of the working tree (what a fresh clone would contain)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import REPO, mirror_dir

SMOKE = ["--configfile", "config/smoke.yaml", "config/smoke_workflow.yaml"]


def tracked_files() -> list[str]:
    """Files a commit of the working tree would hold: tracked, plus untracked files git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def clone(dest: Path) -> Path:
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    return dest


def env(mirror: Path | str | None = "default") -> dict:
    out = dict(os.environ)
    if mirror == "default":
        mirror = mirror_dir()
    out["FEDEM_DATA_MIRROR"] = "" if mirror is None else str(mirror)
    out["PYTHONDONTWRITEBYTECODE"] = "1"
    return out


def snakemake(cwd: Path, *args: str, mirror="default", timeout: int = 300, check: bool = True):
    """Run Snakemake; past `timeout` its whole process group (its jobs too) is killed. Killing only
    Snakemake would leave its jobs holding the output pipes open, and the wait for them never ends."""
    with subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env(mirror),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            raise AssertionError(
                f"snakemake {' '.join(args)} ran past {timeout} s and was killed:\n{stdout[-4000:]}\n{stderr[-4000:]}"
            ) from None
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def planned_jobs(output: str) -> dict[str, int]:
    """rule -> count from the 'Job stats' table Snakemake prints (empty when nothing is to be done)."""
    match = re.search(r"Job stats:\n(?:job\s+count\n)?-+\s+-+\n(.*?)\ntotal\s+\d+", output, re.S)
    if match is None:
        return {}
    jobs = {}
    for line in match.group(1).splitlines():
        name, _, count = line.strip().rpartition(" ")
        jobs[name.strip()] = int(count)
    return jobs
