"""`fedem train` refuses bad input before any data work or training, in one line; override values and
config files read floats as people type them; the native kernels are built before the timed rounds."""

from __future__ import annotations

import pytest

import fedem.cli
import fedem.data.pipeline
import fedem.engine.federation
import fedem.numerics.native
from fedem.config import _parse_override, load_config
from fedem.errors import ConfigError

from conftest import REPO

CONFIG = REPO / "config" / "config.yaml"


class ReachedTraining(Exception):
    pass


@pytest.fixture
def events(monkeypatch, tiny_dataset):
    """What cmd_train reaches, in order; training itself is never run (the fake run_federation stops)."""
    seen: list[str] = []

    def fake_load(name):
        seen.append(f"build {name}")

    def fake_prepare(config, dataset, dedupe, force=False):
        seen.append("prepare")
        return tiny_dataset, {}

    def fake_run_federation(*args, **kwargs):
        seen.append("train")
        raise ReachedTraining

    monkeypatch.setattr(fedem.numerics.native, "load", fake_load)
    monkeypatch.setattr(fedem.data.pipeline, "prepare", fake_prepare)
    monkeypatch.setattr(fedem.engine.federation, "run_federation", fake_run_federation)
    return seen


def train_argv(tmp_path, *extra, method="fedem"):
    return [
        "train",
        "--dataset",
        "filmtrust",
        "--method",
        method,
        "--config",
        str(CONFIG),
        "--quiet",
        "--set",
        "training.device=cpu",
        *(() if "--out" in extra else ("--out", str(tmp_path / "r.json"))),
        *(() if "--seed" in extra else ("--seed", "0")),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--set", "training.selection_metric=hr@50"), "training.selection_metric"),
        (("--set", "training.selection_metric=ndcg@50"), "valid: hr@5, hr@10, hr@20, ndcg@5"),
        (("--seed", "-1"), "--seed -1"),
        (("--threads", "0"), "--threads 0"),
        (("--out", "{tmp}"), "is a directory"),
        (("--probe-out", "{tmp}"), "--probe-out"),
        (("--out", "{tmp}/file.txt/r.json"), "is a file, not a directory"),
    ],
)
def test_bad_train_input_is_one_line_error_before_any_work(tmp_path, capsys, events, extra, needle):
    (tmp_path / "file.txt").write_text("x")
    extra = tuple(a.replace("{tmp}", str(tmp_path)) for a in extra)
    assert fedem.cli.main(train_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert events == [], "refused only after data work or training started"


def test_selection_metric_must_be_a_computed_metric():
    with pytest.raises(ConfigError, match=r"'training.selection_metric': 'hr@50' is not computed"):
        load_config(CONFIG, ["training.selection_metric=hr@50"])
    assert load_config(CONFIG, ["training.selection_metric=ndcg@20"])["training"]["selection_metric"] == "ndcg@20"
    cfg = load_config(CONFIG, ["training.eval_ks=[10, 50]", "training.selection_metric=hr@50"])
    assert cfg["training"]["selection_metric"] == "hr@50"


@pytest.mark.parametrize(
    "raw,value",
    [("1e-3", 1e-3), ("1E-3", 1e-3), ("-2.5e+4", -2.5e4), (".5", 0.5), ("5.", 5.0), ("1.0e-4", 1e-4), ("+3e2", 300.0)],
)
def test_override_floats_as_typed(raw, value):
    parsed = _parse_override(f"methods.fedem.optimizer.lr.embedding={raw}")[1]
    assert type(parsed) is float and parsed == value
    assert load_config(CONFIG, [f"adam.eps={raw.lstrip('-')}"])["adam"]["eps"] == abs(value)


@pytest.mark.parametrize(
    "raw,value",
    [
        ("5", 5),
        ("-3", -3),
        ("hr@10", "hr@10"),
        ("1e", "1e"),
        ("e5", "e5"),
        ("ml-1m", "ml-1m"),
        ("1.5.2", "1.5.2"),
        ("true", True),
        ("[1e-3, 2]", [1e-3, 2]),
    ],
)
def test_override_other_values_keep_their_type(raw, value):
    parsed = _parse_override(f"x.y={raw}")[1]
    assert parsed == value and type(parsed) is type(value)


def test_config_file_floats_as_typed(tmp_path):
    path = tmp_path / "c.yaml"
    text = CONFIG.read_text()
    assert "lr: {embedding: 0.1, adapter: 0.1}" in text
    path.write_text(text.replace("lr: {embedding: 0.1, adapter: 0.1}", "lr: {embedding: 1e-3, adapter: 0.1}"))
    cfg = load_config(path)
    assert cfg["methods"]["fedem"]["optimizer"]["lr"]["embedding"] == 1e-3 and cfg["training"]["rounds"] == 100
    loaded = load_config(CONFIG, ["methods.fedem.optimizer.lr.embedding=1e-3"])
    assert loaded["methods"]["fedem"]["optimizer"]["lr"]["embedding"] == 1e-3


@pytest.mark.parametrize(
    "method,kernels", [("fedem", ["fcf_train", "merged_train"]), ("fedmf", ["fcf_train"]), ("neg-count", [])]
)
def test_native_kernels_are_built_before_training(tmp_path, events, method, kernels):
    with pytest.raises(ReachedTraining):
        fedem.cli.main(train_argv(tmp_path, method=method))
    assert events == [f"build {k}" for k in kernels] + ["prepare", "train"]


def test_no_native_build_for_other_kernels(tmp_path, events):
    with pytest.raises(ReachedTraining):
        fedem.cli.main(train_argv(tmp_path, "--set", "training.kernels=compiled"))
    assert events == ["prepare", "train"]
