"""Figures from (synthetic, tmp-only) result and probe files: every file written, column-sized."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import yaml

from fedem.engine.results import sealed
from fedem.report import layout, style
from fedem.report.__main__ import main
from fedem.report.collect import collect
from fedem.report.figures import PROTOCOL_GAP, convergence_name, plot_convergence
from fedem.report.layout import RunKey
from fedem.report.probe_figures import KINDS, aggregation_change, binned, probe_frame, probe_name

from report_fixtures import grid_config, make_probe, write_grid_probes, write_grid_results, write_json


@pytest.fixture
def config():
    return grid_config(datasets=["filmtrust"], seeds=[0, 1], probe_datasets=["filmtrust"], probe_seeds=[0])


@pytest.fixture
def results(tmp_path, config):
    out = tmp_path / "results"
    write_grid_results(out, config)
    write_grid_probes(out, config)
    return out


def png_width_in(path) -> float:
    return mpimg.imread(path).shape[1] / 300  # saved at 300 dpi


def test_figures_command_writes_every_figure_pdf_and_png(tmp_path, results, config):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "figures"
    assert main(["figures", "--config", str(cfg), "--results", str(results), "--out", str(out)]) == 0
    column = [PROTOCOL_GAP] + [probe_name(k, "filmtrust") for k in KINDS]
    page = [convergence_name("filmtrust"), layout.SENSITIVITY_FIGURE, layout.tsne_figure("filmtrust")]
    names = column + page
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{e}" for n in names for e in ("pdf", "png"))
    for name in names:
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        width = style.COLUMN_WIDTH_IN if name in column else style.PAGE_WIDTH_IN
        assert png_width_in(out / f"{name}.png") == pytest.approx(width, abs=0.02)


def test_a_full_render_removes_figures_whose_results_are_gone(tmp_path, results, config):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "figures"
    out.mkdir()
    stale = [out / f"{convergence_name('ml-100k')}.png", out / f"{probe_name('rho', 'ml-100k')}.pdf"]
    mine = out / "notes.txt"  # not a figure name of this package: left alone
    for path in stale + [mine]:
        path.write_text("old")
    assert (
        main(["figures", "--kind", "convergence", "--config", str(cfg), "--results", str(results), "--out", str(out)])
        == 0
    )
    assert all(p.exists() for p in stale)  # a partial render removes nothing
    assert main(["figures", "--config", str(cfg), "--results", str(results), "--out", str(out)]) == 0
    assert not any(p.exists() for p in stale) and mine.exists()
    assert (out / f"{convergence_name('filmtrust')}.png").is_file()


def test_pdf_is_deterministic(tmp_path, results, config):
    coll = collect(results, config)
    a = plot_convergence(coll, "filmtrust", tmp_path / "a")[0].read_bytes()
    b = plot_convergence(coll, "filmtrust", tmp_path / "b")[0].read_bytes()
    assert a == b


def test_placeholder_when_a_dataset_has_no_current_results(tmp_path, config):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "figures"
    empty = tmp_path / "results"
    empty.mkdir()
    assert (
        main(
            [
                "figures",
                "--kind",
                "convergence",
                "--dataset",
                "filmtrust",
                "--config",
                str(cfg),
                "--results",
                str(empty),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "figures",
                "--kind",
                "probes",
                "--dataset",
                "filmtrust",
                "--config",
                str(cfg),
                "--results",
                str(empty),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "convergence_filmtrust.png").is_file() and (out / "probe_rho_filmtrust.png").is_file()


def test_probe_frame_flattens_records(results, config):
    frame = probe_frame(collect(results, config), "filmtrust")
    probe = make_probe(RunKey("authors", "filmtrust", "fedem", 0), seed=0)
    assert len(frame) == 2 * len(probe["records"])
    assert {
        "divergence",
        "data_size",
        "rho_q0",
        "rho_q4",
        "local:val_hr@10",
        "aggregated:val_hr@10",
        "merged:val_hr@10",
    } <= set(frame.columns)
    assert frame["round"].min() == 1


def test_binned_means():
    import pandas as pd

    b = binned(pd.Series(range(100)), pd.Series([0.0] * 50 + [1.0] * 50), bins=2)
    assert list(b["mean"]) == [0.0, 1.0] and list(b["n"]) == [50, 50]


def test_probe_without_its_result_file_is_invalid(tmp_path, config):
    results = tmp_path / "results"
    key = RunKey("clean", "filmtrust", "fedem", 0)
    write_json(layout.probe_path(results, key), make_probe(key))
    coll = collect(results, config)
    assert not coll.probes and coll.problems[0].kind == "invalid"


def test_aggregation_change_is_the_smooth_rank_gain():
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            "local:val_rank": [1, 3, 50],
            "aggregated:val_rank": [1, 7, 20],
            "local:val_hr@10": [1.0, 1.0, 0.0],
            "aggregated:val_hr@10": [1.0, 1.0, 0.0],
        }
    )
    change, label = aggregation_change(frame)
    assert "log2" in label
    assert change.tolist() == pytest.approx([0.0, 1 / np.log2(8) - 1 / np.log2(4), 1 / np.log2(21) - 1 / np.log2(51)])
    change, label = aggregation_change(frame.drop(columns=["local:val_rank", "aggregated:val_rank"]))
    assert "HR@10" in label and change.tolist() == [0.0, 0.0, 0.0]


def test_probe_from_another_run_than_its_result_is_invalid(tmp_path, config):
    results = tmp_path / "results"
    write_grid_probes(results, config)
    key = RunKey("clean", "filmtrust", "fedem", 0)
    probe = json.loads(layout.probe_path(results, key).read_text())
    probe["config_hash"] = "0" * 16
    write_json(layout.probe_path(results, key), sealed(probe))  # a genuine probe file of another run
    coll = collect(results, config)
    assert RunKey("authors", "filmtrust", "fedem", 0) in coll.probes and key not in coll.probes
    assert "different runs" in coll.problems[0].detail
