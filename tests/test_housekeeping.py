"""What a user expects of a package: `fedem --version`, help on every argument, a licence, a citation."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import yaml

import fedem
import fedem.cli

from conftest import REPO

PAPER_TITLE = "Breaking the Aggregation Bottleneck in Federated Recommendation: A Personalized Model Merging Approach"


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        fedem.cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fedem {fedem.__version__}\n"
    out = subprocess.run([sys.executable, "-m", "fedem", "--version"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == f"fedem {fedem.__version__}"


def test_every_argument_of_every_command_has_help():
    parser = fedem.cli.build_parser()
    subs = commands(parser)
    assert set(subs) == {"prepare", "train"}
    for name, sub in [("fedem", parser), *subs.items()]:
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"
        sub.format_help()  # every %(default)s in a help text expands


def test_help_advertises_only_commands_that_exist():
    parser = fedem.cli.build_parser()
    advertised = re.search(r"`fedem ([\w|-]+)`", fedem.cli.__doc__).group(1).split("|")
    assert sorted(advertised) == sorted(commands(parser))
    usage = re.search(r"\{([\w,-]+)\}", parser.format_usage()).group(1).split(",")
    assert sorted(usage) == sorted(commands(parser))


def test_license_is_mit():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the fedem-repro authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_citation_cff_parses_with_the_required_keys():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff[key], key
    assert cff["type"] == "software" and str(cff["version"]) == fedem.__version__ and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["title"] == PAPER_TITLE and paper["year"] == 2026
    assert "AAAI" in paper["conference"]["name"] and "github.com/jundongchen13/FedEM" in paper["url"]
    for person in cff["authors"] + paper["authors"]:
        assert person.get("name") or person.get("family-names"), person
