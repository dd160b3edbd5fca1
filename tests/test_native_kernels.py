"""The native CPU kernels: same numbers for any thread count, and a clear error when they cannot be built.
(That they equal the per-client reference is tests/test_engine_reference.py, kernels=native.)"""

import pytest
import torch

from fedem.batching import make_round_samples
from fedem.data.negatives import TrainNegativeSampler
from fedem.errors import ConfigError
from fedem.methods.fcf import init_fcf
from fedem.numerics import native
from fedem.numerics.native.fcf_train import train_fcf_clients

from conftest import tiny_run_config


def test_clients_split_over_threads_give_identical_numbers(tiny_dataset):
    ds = tiny_dataset
    rc = tiny_run_config("local")
    tr = rc["training"]
    items, user = init_fcf(ds.num_items, tr["latent_dim"], 0)
    negatives = TrainNegativeSampler(ds, "unobserved", tr["num_negatives"]).sample(0, 0)
    samples = make_round_samples(ds.train_indptr, ds.train_items, negatives, tr["local_epochs"], tr["batch_size"], 0,
                                 0, torch.device("cpu"))
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


def test_a_failed_build_names_the_setting_and_the_fix(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

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


def test_a_lock_left_by_a_killed_build_is_cleared(tmp_path, monkeypatch):
    import os
    import time

    from torch.utils import cpp_extension

    built = {}

    def fake_load(name, build_directory, **kwargs):
        built["lock_present"] = (tmp_path / name / "lock").exists()
        return "module"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    native.load.cache_clear()
    try:
        native.load("fcf_train")  # learns the build folder's name
        lock = next(tmp_path.iterdir()) / "lock"
        lock.touch()
        native.load.cache_clear()
        native.load("fcf_train")
        assert built["lock_present"]  # a fresh lock: maybe another process building right now
        old = time.time() - native.STALE_LOCK_S - 5
        os.utime(lock, (old, old))
        native.load.cache_clear()
        native.load("fcf_train")
        assert not built["lock_present"] and not lock.exists()
    finally:
        native.load.cache_clear()
