"""Where the current runs were made: each result file records the device it trained on and the torch
version, and a run made elsewhere than the grid's usual setting is named in provenance.md, never hidden."""

from __future__ import annotations

from collections import defaultdict

from fedem.report.layout import RunKey

HEADING = "## Where the runs were made"


def seed_ranges(seeds: list[int]) -> str:
    """0, 1, 2, 4 -> '0–2, 4'."""
    seeds = sorted(set(seeds))
    starts = [s for i, s in enumerate(seeds) if i == 0 or seeds[i - 1] != s - 1]
    ends = [s for i, s in enumerate(seeds) if i == len(seeds) - 1 or seeds[i + 1] != s + 1]
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in zip(starts, ends))


def environments_md(runs: dict[RunKey, dict]) -> list[str]:
    """A table of (device, torch version) with its run count; every setting but the most common one lists
    its runs, cell by cell. Nothing when every run shares one setting."""
    groups: dict[tuple[str, str], dict[tuple[str, str, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    for key, result in runs.items():
        setting = (str(result.get("device", "not recorded")), str(result.get("torch_version", "not recorded")))
        groups[setting][(key.protocol, key.dataset, key.method)].append(key.seed)
    if len(groups) < 2:
        return []
    size = {g: sum(len(s) for s in cells.values()) for g, cells in groups.items()}
    usual = max(groups, key=lambda g: (size[g], g))
    out = [
        HEADING,
        "",
        "Each result file records the device it trained on and the torch version. Runs of one seed on two "
        "settings agree only as closely as float rounding over the rounds allows (README, 'Trusting a "
        "number'); every random draw comes from a CPU generator on any device, so they see the same "
        "initialisation, negatives and schedules, and a paired test over seeds still pairs them.",
        "",
        "| Device | torch | Runs | Which |",
        "|:--|:--|--:|:--|",
    ]
    for setting in sorted(groups, key=lambda g: (g != usual, g)):
        which = (
            "every other run"
            if setting == usual
            else "; ".join(
                f"`{p}/{d}/{m}` seed{'s' if len(s) > 1 else ''} {seed_ranges(s)}"
                for (p, d, m), s in sorted(groups[setting].items())
            )
        )
        out.append(f"| {setting[0]} | {setting[1]} | {size[setting]} | {which} |")
    out.append("")
    return out
