"""constraints.txt locks the whole environment: it agrees with pyproject.toml's pins, covers every package
they pull in, matches what is installed, and is what the README's commands and CI install with."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

REGENERATE = "regenerate constraints.txt with the command in its header"


def locked() -> dict[str, str]:
    versions: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and " " not in line, f"constraints.txt: {line!r} is not a plain `name==version` line"
        key = canonicalize_name(name)
        assert key not in versions, f"constraints.txt locks {name} twice"
        versions[key] = version
    return versions


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(r) for r in [*project["dependencies"], *(r for group in extras.values() for r in group)]]


def base(version: str) -> Version:
    """2.13.0+cpu and 2.13.0+cu128 are both torch 2.13.0: a local label names the build, not the release (and only
    the label goes: 1.0.post1+cpu is 1.0.post1)."""
    return Version(Version(version).public)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    reproduce, test = commands
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines() if line.startswith("python3 ")]
    assert ci == [test]
    assert "-c constraints.txt" in reproduce and "-c constraints.txt" in test
    assert reproduce.split(" && ")[:2] == test.split(" && ")[:2], "both commands must set up the same environment"


def test_every_pin_in_pyproject_is_exact_and_agrees_with_the_lock():
    lock = locked()
    for req in project_requirements():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"pyproject.toml: {req} is not an exact pin"
        (spec,) = specs
        key = canonicalize_name(req.name)
        assert key in lock, f"{req.name} is pinned in pyproject.toml but not locked: {REGENERATE}"
        assert base(lock[key]) == Version(spec.version), (
            f"{req.name}: pyproject.toml pins {spec.version}, constraints.txt locks {lock[key]}: {REGENERATE}"
        )


def test_the_lock_covers_every_package_the_project_pulls_in():
    """Walks the installed dependency tree of the project and its extras, markers evaluated for this machine."""
    lock = locked()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = project_requirements()
    while todo:
        req = todo.pop()
        key = canonicalize_name(req.name)
        if (key, frozenset(req.extras)) in seen:
            continue
        seen.add((key, frozenset(req.extras)))
        assert key in lock, f"{req.name} is installed as a dependency but not locked: {REGENERATE}"
        for dep in map(Requirement, metadata.requires(req.name) or []):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(dep)
    assert len(seen) > 50  # the walk reached the transitive dependencies, not only the direct pins


def test_the_installed_packages_are_the_locked_versions():
    """What a fresh `pip install -c constraints.txt` gives; a mismatch means the committed figures may not re-render
    byte for byte."""
    wrong = []
    for key, version in locked().items():
        try:
            installed = metadata.version(key)
        except metadata.PackageNotFoundError:
            continue  # locked for another platform or an extra this environment did not install
        if base(installed) != base(version):
            wrong.append(f"{key} {installed} (locked: {version})")
    assert not wrong, (
        "installed versions differ from constraints.txt: "
        + ", ".join(wrong)
        + ". Reinstall with `pip install -c constraints.txt -e '.[test]'`"
    )
