"""Figures from the training runs: convergence per dataset (Fig. 4), and the protocol gap.

Every figure reads a Collection (current result files only) and writes <name>.pdf and <name>.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from fedem.report import layout, style
from fedem.report.collect import Collection
from fedem.report.summary import Cell, survival
from fedem.report.tables import CLEAN, REFERENCE, method_label, ordered_methods

convergence_name = layout.convergence_figure
PROTOCOL_GAP = layout.PROTOCOL_GAP_FIGURE


def curve(
    coll: Collection, protocol: str, dataset: str, method: str, split: str = "val", metric: str = "hr@10"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rounds, mean and std over seeds of `split` `metric` per round (seeds truncated to a common length)."""
    series = [
        [entry[split][metric] for entry in result["rounds"]]
        for key, result in sorted(coll.runs.items())
        if (key.protocol, key.dataset, key.method) == (protocol, dataset, method)
    ]
    if not series:
        return np.array([]), np.array([]), np.array([]), 0
    length = min(len(s) for s in series)
    values = np.array([s[:length] for s in series], dtype=float)
    std = values.std(axis=0, ddof=1) if len(series) > 1 else np.zeros(length)
    return np.arange(1, length + 1), values.mean(axis=0), std, len(series)


CONVERGENCE_OTHERS = 7  # Fig. 4: FedEM and the seven strongest other methods
SPLIT_AXIS = {"val": "validation HR@10", "test": "test HR@10"}


def convergence_methods(coll: Collection, protocol: str, dataset: str) -> list[str]:
    """FedEM, the CONVERGENCE_OTHERS strongest other federated methods by their Table-1 score here (test
    HR@10 at the best-validation round; grid order on ties), then the sanity floors."""
    federated = [m for m in ordered_methods(coll) if m not in coll.unranked_methods]
    score = {m: Cell(coll.values(protocol, dataset, m, ("selected", "test", "hr@10"))).mean for m in federated}
    others = [m for m in federated if m != coll.proposed and score[m] is not None]
    others.sort(key=lambda m: -score[m])  # stable: grid order on ties
    head = [coll.proposed] if score.get(coll.proposed) is not None else []
    return head + others[:CONVERGENCE_OTHERS] + [m for m in coll.sanity_methods if m in ordered_methods(coll)]


def plot_convergence(coll: Collection, dataset: str, out_dir: str | Path) -> list[Path]:
    """Fig. 4: validation and test HR@10 per round (mean over seeds, ±1 std band), one row per protocol,
    for FedEM, the strongest other methods of that row and the sanity floor."""
    style.apply()
    protocols = coll.grid["protocols"]
    colors = style.method_colors(ordered_methods(coll), coll.grid["methods"], coll.sanity_methods)
    fig, axes = style.figure(rows=len(protocols), cols=2, sharex=True, width_in=style.PAGE_WIDTH_IN)
    shown: list[str] = []
    for row, protocol in enumerate(protocols):
        methods = convergence_methods(coll, protocol, dataset)
        for col, split in enumerate(SPLIT_AXIS):
            ax = axes[row, col]
            drawn = False
            for method in methods:
                rounds, mean, std, n = curve(coll, protocol, dataset, method, split)
                if n == 0:
                    continue
                drawn = True
                dashes = (2, 1) if method in coll.sanity_methods else ()
                ax.plot(rounds, mean, color=colors[method], label=method, dashes=dashes)
                if n > 1:
                    ax.fill_between(rounds, mean - std, mean + std, color=colors[method], alpha=0.2, linewidth=0)
                if method not in shown:
                    shown.append(method)
            if not drawn:
                style.placeholder(ax, f"no current results for {dataset}, {protocol} protocol")
                continue
            ax.set_title(f"{dataset}, {protocol} protocol")
            ax.set_ylabel(SPLIT_AXIS[split])
            ax.set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    found = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    order = [m for m in ordered_methods(coll) if m in found]
    if order:
        labels = [method_label(coll, m) for m in order]
        fig.legend(
            [found[m] for m in order], labels, loc="outside lower center", ncol=min(len(order), 5), frameon=False
        )
    return style.save(fig, Path(out_dir) / convergence_name(dataset))


def plot_protocol_gap(coll: Collection, out_dir: str | Path) -> list[Path]:
    """Test HR@10 under the authors' and the clean protocol, per dataset and method, with the share kept."""
    style.apply()
    rows = []
    for dataset in coll.datasets_with_runs():
        for method in ordered_methods(coll):
            ref = Cell(coll.values(REFERENCE, dataset, method, ("selected", "test", "hr@10")))
            clean = Cell(coll.values(CLEAN, dataset, method, ("selected", "test", "hr@10")))
            if ref.mean is not None or clean.mean is not None:
                rows.append((dataset, method, ref.mean, clean.mean, survival(ref, clean)))
    height = max(1.2, 0.6 + 0.14 * len(rows))
    fig, axes = style.figure(height_in=height)
    ax = axes[0, 0]
    if not rows:
        style.placeholder(ax, "no current results under both protocols")
        return style.save(fig, Path(out_dir) / PROTOCOL_GAP)
    colors = style.PROTOCOL_COLORS
    y = np.arange(len(rows))[::-1]
    for yi, (_dataset, _method, ref, clean, kept) in zip(y, rows):
        if ref is not None and clean is not None:
            ax.plot([ref, clean], [yi, yi], color="0.6", linewidth=0.8, zorder=1)
        if ref is not None:
            ax.scatter([ref], [yi], s=14, facecolors="white", edgecolors=[colors[REFERENCE]], linewidths=0.9, zorder=2)
        if clean is not None:
            ax.scatter([clean], [yi], s=14, color=[colors[CLEAN]], zorder=3)
        ax.annotate(
            "—" if kept is None else f"{kept * 100:.0f}%",
            xy=(1.0, yi),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=5.5,
        )
    ax.set_yticks(y, [f"{d}  {m}" for d, m, *_ in rows])
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("test HR@10 (best-validation round)")
    ax.annotate(
        "kept",
        xy=(1.0, 1.0),
        xycoords="axes fraction",
        xytext=(3, 2),
        textcoords="offset points",
        fontsize=5.5,
        va="bottom",
    )
    boundaries = [i for i in range(1, len(rows)) if rows[i][0] != rows[i - 1][0]]
    for b in boundaries:
        ax.axhline(y[b] + 0.5, color="0.8", linewidth=0.5)
    ax.scatter([], [], s=14, facecolors="white", edgecolors=[colors[REFERENCE]], label=f"{REFERENCE} protocol")
    ax.scatter([], [], s=14, color=[colors[CLEAN]], label=f"{CLEAN} protocol")
    fig.legend(loc="outside upper center", ncol=2, frameon=False)
    ax.grid(axis="y", visible=False)
    return style.save(fig, Path(out_dir) / PROTOCOL_GAP)
