"""A run's code hash covers exactly the code that makes its numbers."""

from pathlib import Path

from fedem.engine.results import _PACKAGE_DIR, _RUN_ENTRY, _source_closure, training_code_hash
from fedem.methods import METHODS, module_file


def closure(method):
    files = _source_closure([_PACKAGE_DIR / _RUN_ENTRY, module_file(method)])
    return {p.relative_to(_PACKAGE_DIR).as_posix() for p in files}


def test_closure_follows_imports_and_skips_registry_and_report():
    fedem, fedmf = closure("fedem"), closure("fedmf")
    assert {
        "methods/adapter.py",
        "methods/aggregation.py",
        "numerics/simplex.py",
        "training/fcf_fast.py",
        "training/optim.py",
        "training/schedule.py",
        "training/trainer.py",
        "engine/evaluation.py",
        "metrics.py",
    } <= fedem
    assert "methods/adapter.py" not in fedmf and "methods/fedem.py" not in fedmf
    for files in (fedem, fedmf):
        assert not any(f.startswith("report") or f in ("cli.py", "methods/__init__.py") for f in files)


def test_closure_holds_the_native_sources_a_method_builds():
    fedem, fedmf = closure("fedem"), closure("fedmf")
    native = {
        "numerics/native/__init__.py",
        "numerics/native/kernels.h",
        "numerics/native/fcf_train.py",
        "numerics/native/fcf_train.cpp",
    }
    assert native <= fedmf and native <= fedem
    assert {"numerics/native/merged_train.py", "numerics/native/merged_train.cpp"} <= fedem
    assert not any("merged_train" in f for f in fedmf)


def test_hashes_differ_per_method_and_are_stable():
    hashes = {m: training_code_hash(m) for m in METHODS}
    assert len(set(hashes.values())) == len(hashes)
    assert hashes == {m: training_code_hash(m) for m in METHODS}


def test_the_report_and_the_code_hash_import_no_torch():
    """Rendering tables (and hashing the training code) reads files only: no method, no torch."""
    import subprocess
    import sys

    from conftest import REPO

    script = (
        "import sys\n"
        "from fedem.config import load_config\n"
        "from fedem.engine.results import training_code_hash\n"
        "from fedem.report.collect import collect\n"
        "from fedem.report.tables import build_tables\n"
        "from fedem.report import figures, probe_figures\n"
        "training_code_hash()\n"
        "build_tables(collect('results', load_config('config/config.yaml')))\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('fedem.methods.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_package_folder_is_a_regular_package():
    """setuptools' find_packages (pyproject) installs only folders with an __init__.py: a folder without one
    works from a checkout and is missing from a wheel."""
    from setuptools import find_packages

    from conftest import REPO

    folders = {p.parent for p in (REPO / "src" / "fedem").rglob("*.py") if "__pycache__" not in p.parts}
    packages = {REPO / "src" / Path(*name.split(".")) for name in find_packages(REPO / "src")}
    assert folders <= packages, sorted(str(f) for f in folders - packages)
