"""Bad input gets a clear error before any work, and no result file; same seed, same bytes."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from fedem.config import load_config
from fedem.engine.federation import run_federation
from fedem.errors import ConfigError, TrainingError

from conftest import REPO, tiny_run_config

CONFIG = REPO / "config" / "config.yaml"


def fedem_cli(*args, env_mirror=None, cwd=REPO, timeout=600):
    """`python -m fedem ARGS`; one that runs past `timeout` is aborted, and its Python stack (dumped
    by faulthandler on SIGABRT) is the failure message, so a hang in CI says where it hung."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    if env_mirror is not None:
        env["FEDEM_DATA_MIRROR"] = str(env_mirror)
    with subprocess.Popen(
        [sys.executable, "-m", "fedem", *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stdout, stderr = proc.communicate()
            raise AssertionError(f"fedem {' '.join(args)} ran past {timeout} s:\n{stderr[-6000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("methods.fedem.optimizer.lr.embedding=-0.1", "methods.fedem.optimizer.lr.embedding"),
        ("methods.fedem.agg_clients_ratio=1.5", "methods.fedem.agg_clients_ratio"),
        ("methods.fedem.agg_clients_ratio=0", "must lie in (0, 1]"),
        ("methods.fedem.agg_mode=median", "methods.fedem.agg_mode"),
        ("training.rounds=0", "training.rounds"),
        ("protocols.authors.train_negatives_from=everything", "protocols.authors.train_negatives_from"),
    ],
)
def test_invalid_hyperparameters_are_rejected_with_the_key_named(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, [override])
    assert needle in str(err.value)


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(CONFIG.read_text().replace("  latent_dim: 16", "  latent_dim: 16\n  learning_rate: 3"))
    with pytest.raises(ConfigError, match="training.*learning_rate"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        load_config(CONFIG, ["methods.fedem.lr=0.1"])


def test_cli_unknown_method_and_dataset_list_valid_keys(tmp_path):
    out = tmp_path / "r.json"
    r = fedem_cli("train", "--dataset", "filmtrust", "--method", "fedavg", "--seed", "0", "--out", str(out))
    assert r.returncode == 2 and "method 'fedavg' has no block under 'methods'" in r.stderr
    assert "configured: colr, fedcia, fedem, fedem-L1," in r.stderr and "fedfast, fedmf, fedmf-em, fedncf," in r.stderr
    r = fedem_cli("train", "--dataset", "netflix", "--method", "fedem", "--seed", "0", "--out", str(out))
    assert r.returncode == 2 and "netflix" in r.stderr and "ml-100k" in r.stderr and "filmtrust" in r.stderr
    r = fedem_cli(
        "train",
        "--dataset",
        "filmtrust",
        "--method",
        "fedem",
        "--seed",
        "0",
        "--out",
        str(out),
        "--set",
        "methods.fedem.optimizer.lr.adapter=-1",
    )
    assert r.returncode == 2 and "methods.fedem.optimizer.lr.adapter" in r.stderr
    assert not out.exists()


def test_nan_loss_stops_with_round_and_method_named(tiny_dataset):
    rc = tiny_run_config("local")
    rc["method"]["optimizer"]["lr"]["embedding"] = 3.0e38  # legal but absurd: parameters overflow, then inf - inf = NaN
    with pytest.raises(TrainingError, match=r"'local'.*round 0"):
        run_federation(tiny_dataset, "local", rc, seed=0, progress=False)


def test_cli_failed_run_writes_no_result(tmp_path, mirror):
    out = tmp_path / "r.json"
    r = fedem_cli(
        "train",
        "--dataset",
        "filmtrust",
        "--method",
        "local",
        "--seed",
        "0",
        "--rounds",
        "1",
        "--set",
        "methods.local.optimizer.lr.embedding=3.0e+38",
        "--out",
        str(out),
        "--quiet",
        "--set",
        f"data.raw_dir={tmp_path}/raw",
        "--set",
        f"data.processed_dir={tmp_path}/p",
        env_mirror=mirror,
    )
    assert r.returncode == 2 and "diverged in round 0" in r.stderr, r.stderr
    # no result and no timing sidecar: only the divergence record (tests/test_divergence_record.py)
    assert [p.name for p in tmp_path.glob("*.json")] == ["r.diverged.json"]


@pytest.mark.slow
def test_same_seed_gives_bit_identical_result_file(tmp_path, mirror):
    paths = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        r = fedem_cli(
            "train",
            "--dataset",
            "filmtrust",
            "--method",
            "fedem",
            "--seed",
            "1",
            "--rounds",
            "2",
            "--out",
            str(out),
            "--quiet",
            "--set",
            f"data.raw_dir={tmp_path}/raw",
            "--set",
            f"data.processed_dir={tmp_path}/p{name}",
            env_mirror=mirror,
        )
        assert r.returncode == 0, r.stderr
        paths.append(out)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    timing = json.loads(paths[0].with_suffix(".timing.json").read_text())  # the machine goes to the sidecar
    assert timing["cpu"] and (timing["gpu"] is None) == (not torch.cuda.is_available())  # device: auto
    other = tmp_path / "c.json"
    r = fedem_cli(
        "train",
        "--dataset",
        "filmtrust",
        "--method",
        "fedem",
        "--seed",
        "2",
        "--rounds",
        "2",
        "--out",
        str(other),
        "--quiet",
        "--set",
        f"data.raw_dir={tmp_path}/raw",
        "--set",
        f"data.processed_dir={tmp_path}/pa",
        env_mirror=mirror,
    )
    assert r.returncode == 0 and other.read_bytes() != paths[0].read_bytes()
