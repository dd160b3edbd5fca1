"""The committed tables are exactly what the committed results and code render: no hand edits,
and no table left behind after the results or the code changed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedem.config import load_config
from fedem.report import layout
from fedem.report.tables import output_files

from conftest import REPO
from report_fixtures import grid_config, write_grid_results

RESULTS = "results"  # as config/workflow.yaml has it; paths in provenance.md are written relative to it
TABLES = "paper_tables"


def table_drift(root: Path, scratch: Path) -> tuple[list[str], list[str]]:
    """(tables missing from root/paper_tables, tables that differ from a fresh render of root/results)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedem.report",
            "tables",
            "--config",
            "config/config.yaml",
            "--results",
            RESULTS,
            "--out",
            str(scratch),
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    expected = sorted(output_files(load_config(root / "config" / "config.yaml")))
    committed = root / TABLES
    missing = [n for n in expected if not (committed / n).is_file()]
    differ = [n for n in expected if n not in missing and (committed / n).read_bytes() != (scratch / n).read_bytes()]
    return missing, differ


def test_committed_tables_rerender_identically(tmp_path):
    if not layout.find_runs(REPO / RESULTS):
        pytest.skip("no committed result files under results/runs yet")
    missing, differ = table_drift(REPO, tmp_path / "render")
    assert not missing, f"tables missing from paper_tables/ (run `snakemake tables`): {missing}"
    assert not differ, (
        f"paper_tables/ differs from a re-render of results/ for {differ}: either a table was edited by hand, "
        "or the results or the code changed since the tables were made (see paper_tables/provenance.md). "
        "Regenerate with `snakemake tables` (and re-run stale results with `snakemake --cores 8`)."
    )


def test_drift_check_catches_a_hand_edit(tmp_path):
    root = tmp_path / "repo"
    (root / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", root / "config" / "config.yaml")
    write_grid_results(root / RESULTS, grid_config(seeds=[0, 1]))
    assert table_drift(root, tmp_path / "none")[0] == sorted(output_files(load_config(root / "config" / "config.yaml")))
    table_drift(root, root / TABLES)  # what `snakemake tables` writes and a commit would hold
    assert table_drift(root, tmp_path / "again") == ([], [])
    edited = root / TABLES / "main_clean.md"
    edited.write_text(edited.read_text().replace("0.", "0,", 1))
    assert table_drift(root, tmp_path / "third") == ([], ["main_clean.md"])


def test_readme_results_block_is_rendered_not_typed():
    from fedem.report.readme import BEGIN, END, render

    text = (REPO / "README.md").read_text()
    block = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END
    assert block == render(REPO / TABLES, REPO / RESULTS, load_config(REPO / "config" / "config.yaml")), (
        "README.md's results block differs from the committed tables/timings: run "
        "`python -m fedem.report readme` (the tables step does it)"
    )


@pytest.mark.slow
def test_a_full_run_on_a_fresh_clone_leaves_the_tree_clean(tmp_path):
    """`snakemake --cores 2` on a fresh clone, offline (ml-1m cannot be had): every render job runs (the
    results are made newer than the tables, as a checkout's file order can do) and must write exactly the
    committed bytes, with no machine-specific text and no untracked file."""
    from workflow_helpers import clone, snakemake

    root = clone(tmp_path / "clone")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "clone"], cwd=root, check=True)
    for path in (root / RESULTS).rglob("*.json"):
        path.touch()
    out = snakemake(root, "--cores", "2", mirror=None, timeout=600)
    assert "LEFT OUT" in out.stderr and "ml-1m" in out.stderr  # the banner goes to the console...
    assert "ml-1m" in (root / "logs" / "left_out.txt").read_text()  # ...and to the log
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"the run changed or added committed files:\n{status.stdout}"
