"""The native CPU kernels: same numbers for any thread count, and a clear error when they cannot be built.
(That they equal the per-client reference is tests/test_engine_reference.py, kernels=native.)"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedem.data.negatives import TrainNegativeSampler
from fedem.errors import ConfigError
from fedem.numerics import native
from fedem.numerics.native.fcf_train import train_fcf_clients
from fedem.training.backbones import init_fcf
from fedem.training.schedule import make_round_samples

from conftest import tiny_run_config


def test_clients_split_over_threads_give_identical_numbers(tiny_dataset):
    ds = tiny_dataset
    rc = tiny_run_config("local")
    tr = rc["training"]
    items, user = init_fcf(ds.num_items, tr["latent_dim"], 0)
    negatives = TrainNegativeSampler(ds, "unobserved", tr["num_negatives"]).sample(0, 0)
    samples = make_round_samples(
        ds.train_indptr, ds.train_items, negatives, tr["local_epochs"], tr["batch_size"], 0, 0, torch.device("cpu")
    )
    plan = samples.plan()
    outputs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            pool, users = items[plan.pool_items].clone(), user.expand(plan.num_clients, -1).clone()
            losses = train_fcf_clients(plan, users, pool, 0.1, rc["adam"], tr["early_stop_threshold"])
            outputs.append((losses, pool, users))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outputs):
        assert torch.equal(a, b)
    assert not torch.equal(outputs[0][1], items[plan.pool_items])  # it trained


def test_a_failed_build_names_the_setting_and_the_fix(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    native.load.cache_clear()
    try:
        with pytest.raises(ConfigError) as err:
            native.load("fcf_train")
    finally:
        native.load.cache_clear()
    message = str(err.value)
    assert "training.kernels=native" in message and "Ninja is required" in message
    assert "training.kernels=compiled" in message and "g++" in message
    assert not list(tmp_path.rglob(native._BUILT_MARK)), "a failed build must not be marked as built"


def test_a_build_killed_midway_blocks_no_later_build(tmp_path, monkeypatch):
    """A build killed mid-way (SIGKILL: no handler runs) leaves torch's lock file, on which torch waits
    forever; it once hung CI for 90 minutes. The flock dies with its holder, and the next build goes on."""
    from torch.utils import cpp_extension

    seen = {}

    def fake_build(name, build_directory, **kwargs):
        seen["torch_lock_left"] = (Path(build_directory) / "lock").exists()
        (Path(build_directory) / f"{name}.so").write_bytes(b"")
        return "module"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", fake_build)
    native.load.cache_clear()
    try:
        assert native.load("fcf_train") == "module"  # learns the build folder's name
        (build_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        (build_dir / native._BUILT_MARK).unlink()  # as if the build had never finished
        holder = subprocess.Popen(  # a builder that holds the flock and torch's lock file, then is killed
            [
                sys.executable,
                "-c",
                KILLED_BUILDER,
                str(build_dir.parent / f"{build_dir.name}.lock"),
                str(build_dir / "lock"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout.readline().strip() == "building"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert (build_dir / "lock").exists()
        native.load.cache_clear()
        started = time.monotonic()
        assert native.load("fcf_train") == "module"
        assert time.monotonic() - started < 30 and not seen["torch_lock_left"]
        assert (build_dir / native._BUILT_MARK).is_file()
    finally:
        native.load.cache_clear()


KILLED_BUILDER = """
import fcntl, pathlib, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
pathlib.Path(sys.argv[2]).touch()
print("building", flush=True)
time.sleep(600)
"""


def test_a_finished_build_is_imported_without_building_again(monkeypatch):
    """Later processes (and other checkouts: the build compiles copies of the sources) import the
    library directly: no torch build step, so no lock file and no ninja run."""
    from torch.utils import cpp_extension

    native.load.cache_clear()
    native.load("fcf_train")  # built by now (or built here)

    def must_not_build(**kwargs):
        raise AssertionError("a finished build was built again")

    monkeypatch.setattr(cpp_extension, "load", must_not_build)
    native.load.cache_clear()
    try:
        assert hasattr(native.load("fcf_train"), "train_fcf_clients")
    finally:
        native.load.cache_clear()
