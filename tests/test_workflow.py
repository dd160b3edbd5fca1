"""The Snakemake workflow on a copy of the working tree: which jobs each target plans, offline
behaviour, config validation. Dry runs only (plus the plotting targets), so each test takes seconds."""

from __future__ import annotations

import pytest
import yaml

from fedem.config import experiment_methods, load_config, planned_methods, planned_seeds
from fedem.data.pipeline import artifact_path, stats_path
from fedem.report import layout

from conftest import REPO
from report_fixtures import write_grid_probes, write_json, write_planned_results
from workflow_helpers import SMOKE, clone, planned_jobs, snakemake

DATA_JOBS = {"prepare", "train", "probe", "data_stats"}


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    return clone(tmp_path_factory.mktemp("clone"))


def smoke_settings(root):
    merged = yaml.safe_load((root / "config" / "workflow.yaml").read_text())["workflow"]
    merged.update(yaml.safe_load((root / "config" / "smoke_workflow.yaml").read_text())["workflow"])
    return merged


def commit_smoke_results(root):
    """What a clone with committed smoke results holds: runs, probes, stats copies."""
    config = load_config(root / "config" / "smoke.yaml")
    results = root / smoke_settings(root)["results_dir"]
    write_planned_results(results, config, rounds=config["training"]["rounds"])
    write_grid_probes(results, config)
    for dataset in config["grid"]["datasets"]:
        for spec in config["protocols"].values():
            variant = artifact_path(config, dataset, spec["dedupe"]).stem
            write_json(layout.data_stats_path(results, dataset, variant), {"content_hash": "0" * 64, "users": 1})
    return results


@pytest.mark.parametrize("target", ["figures", "tables"])
def test_plot_targets_never_plan_data_or_training(repo_copy, target):
    for args in ([], SMOKE):
        out = snakemake(repo_copy, "-n", target, *args, mirror=None)
        assert planned_jobs(out.stdout) == {target: 1}, out.stdout[-3000:]
        assert "LEFT OUT" not in out.stderr  # availability is not even asked


def test_fresh_clone_with_committed_results_trains_nothing(tmp_path):
    root = clone(tmp_path / "clone")
    results = commit_smoke_results(root)
    out = snakemake(root, "-n", *SMOKE, mirror=None)
    planned = planned_jobs(out.stdout)
    assert not DATA_JOBS & set(planned), planned
    assert "LEFT OUT" not in out.stderr

    # and the plot targets really run there, offline, without touching any data folder
    out = snakemake(root, "--cores", "1", "tables", "figures", *SMOKE, mirror=None)
    settings = smoke_settings(root)
    assert (root / settings["tables_dir"] / "main_clean.md").is_file()
    assert (root / settings["figures_dir"] / "probe_rho_filmtrust.png").is_file()
    assert not (root / "data").exists() and not (root / "resources").exists()
    assert "STALE" not in out.stderr, "synthetic results carry the current hashes"
    assert not (results / "grid.json").exists()  # the run leaves no untracked file in the results folder


def test_a_missing_run_is_planned_after_its_dataset_was_prepared_again(tmp_path):
    """Preparing a dataset again leaves its statistics newer than their copy under results/. One
    `snakemake <run file>` call must still plan that missing run (Snakemake 9 dropped it while it
    re-copied the statistics, snakemake/snakemake#4166)."""
    root = clone(tmp_path / "clone")
    results = commit_smoke_results(root)
    config = load_config(root / "config" / "smoke.yaml")
    for dataset in config["grid"]["datasets"]:
        for spec in config["protocols"].values():
            stats = root / stats_path(artifact_path(config, dataset, spec["dedupe"]))
            write_json(stats, {"content_hash": "0" * 64, "users": 1})  # written after the copies
    _, run = layout.find_runs(results)[0]
    run.unlink()
    planned = planned_jobs(snakemake(root, "-n", str(run.relative_to(root)), *SMOKE).stdout)
    assert planned.get("train") == 1, planned


def test_full_plan_covers_the_grid(repo_copy):
    out = snakemake(repo_copy, "-n", *SMOKE)
    planned = planned_jobs(out.stdout)
    config = load_config(repo_copy / "config" / "smoke.yaml")
    grid = config["grid"]
    # Table 1 and the experiments, dataset by dataset (grid.fewer_seeds)
    runs = sum(len(planned_seeds(config, m, d)) for m in planned_methods(config) for d in grid["datasets"])
    assert runs > len(grid["methods"]) * len(grid["seeds"]) * len(grid["datasets"])
    assert planned["train"] == len(grid["protocols"]) * runs
    assert planned["probe"] == len(grid["protocols"]) * len(grid["probe_datasets"]) * len(grid["probe_seeds"])
    assert {"render_tables", "render_convergence", "render_probe_figures", "render_protocol_gap"} <= set(planned)
    assert {"render_experiment_tables", "render_sensitivity_figure", "render_tsne"} <= set(planned)
    assert planned["render_experiment_tables"] == 4  # ablation, plugin, ldp, sensitivity


def test_the_table1_target_plans_the_grid_and_none_of_the_experiments(repo_copy):
    planned = planned_jobs(snakemake(repo_copy, "-n", "table1", *SMOKE).stdout)
    config = load_config(repo_copy / "config" / "smoke.yaml")
    grid = config["grid"]
    runs = sum(len(planned_seeds(config, m, d)) for m in grid["methods"] for d in grid["datasets"])
    assert planned["train"] == len(grid["protocols"]) * runs
    assert planned["probe"] == len(grid["protocols"]) * len(grid["probe_datasets"]) * len(grid["probe_seeds"])
    assert planned["table1"] == 1
    assert not {"render_tables", "render_experiment_tables", "render_sensitivity_figure"} & set(planned)


@pytest.mark.parametrize("target", ["ablation", "plugin", "ldp", "sensitivity", "tsne", "convergence"])
def test_an_experiment_target_plans_only_its_runs(repo_copy, target):
    planned = planned_jobs(snakemake(repo_copy, "-n", target, *SMOKE).stdout)
    config = load_config(repo_copy / "config" / "smoke.yaml")
    assert "render_tables" not in planned and planned[target] == 1
    if target in ("ablation", "plugin", "ldp", "sensitivity"):
        methods = experiment_methods(config)[target]
        seeds = config["experiments"][target]["seeds"]
        assert planned["train"] == len(config["grid"]["protocols"]) * len(methods) * len(seeds)
        assert planned["render_experiment_tables"] == 1
    if target == "tsne":
        assert planned["probe"] == 2 and "train" not in planned


def test_unobtainable_dataset_is_left_out_with_a_warning(repo_copy, tmp_path):
    offline = tmp_path / "offline.yaml"
    offline.write_text("data: {allow_download: false}\n")
    out = snakemake(repo_copy, "-n", *SMOKE, str(offline), mirror=None)
    assert "DATASET(S) LEFT OUT" in out.stderr
    assert "filmtrust: no cached resources/raw/filmtrust/ratings.txt; no offline mirror is set" in out.stderr
    assert "To supply it: put the raw file 'ratings.txt'" in out.stderr and "FEDEM_DATA_MIRROR" in out.stderr
    planned = planned_jobs(out.stdout)
    assert not DATA_JOBS & set(planned) and planned.get("render_tables") == 1


@pytest.mark.parametrize(
    "override,needle",
    [
        ("training={rounds: 0}", "'training.rounds': '0' is not of type 'integer'. Note: Snakemake passes nested"),
        ("methods={fedem: {alpha: -1}}", "'methods.fedem.alpha'"),
        ("grid={methods: [fedem, nope]}", "'grid.methods': 'nope' is not one of"),
        ("grid={datasets: [movielens-7]}", "'grid.datasets': 'movielens-7'"),
        ("workflow={threads_per_train_job: 0}", "'workflow.threads_per_train_job'"),
        ("surprise=1", "'<top level>'"),
    ],
)
def test_bad_config_fails_naming_the_key(repo_copy, override, needle):
    out = snakemake(repo_copy, "-n", "--config", override, check=False)
    assert out.returncode != 0
    assert needle in out.stdout + out.stderr, (out.stdout + out.stderr)[-2000:]


def test_smoke_config_is_the_paper_config_on_a_tiny_grid():
    paper = load_config(REPO / "config" / "config.yaml")
    smoke = load_config(REPO / "config" / "smoke.yaml")  # complete on its own: validates
    differ = {section for section in paper if paper[section] != smoke[section]}
    assert differ == {"training", "grid", "experiments", "methods"}
    assert {k for k in paper["training"] if paper["training"][k] != smoke["training"][k]} == {"rounds"}
    # FedCIA's alignment steps only (config/smoke.yaml says why)
    assert {m for m in paper["methods"] if paper["methods"][m] != smoke["methods"].get(m)} == {"fedcia"}
    fedcia = {k for k in paper["methods"]["fedcia"] if paper["methods"]["fedcia"][k] != smoke["methods"]["fedcia"][k]}
    assert fedcia == {"align_steps"}
    settings = yaml.safe_load((REPO / "config" / "smoke_workflow.yaml").read_text())["workflow"]
    assert all(settings[k].startswith("tmp/") for k in ("results_dir", "tables_dir", "figures_dir", "logs_dir"))


def test_a_data_setting_overlay_plans_the_prepare_jobs_it_needs(tmp_path):
    """Another data setting is another artifact: the workflow prepares it instead of reusing the cached one."""
    root = clone(tmp_path / "clone")
    commit_smoke_results(root)
    overlay = tmp_path / "min40.yaml"
    overlay.write_text("data: {min_user_interactions: 40}\n")
    planned = planned_jobs(snakemake(root, "-n", *SMOKE, str(overlay)).stdout)
    config = load_config(root / "config" / "smoke.yaml")
    variants = {spec["dedupe"] for spec in config["protocols"].values()}
    assert planned.get("prepare") == len(config["grid"]["datasets"]) * len(variants), planned


def test_the_workflow_reads_floats_as_typed(repo_copy, tmp_path):
    """Snakemake's own YAML reader takes `1e-3` for a string; the workflow reads it as the number it is."""
    overlay = tmp_path / "lr.yaml"
    overlay.write_text("methods: {fedmf: {optimizer: {name: adam, lr: {embedding: 1e-3}}}}\n")
    out = snakemake(repo_copy, "-n", *SMOKE, str(overlay))
    assert out.returncode == 0 and "not of type" not in out.stdout + out.stderr
