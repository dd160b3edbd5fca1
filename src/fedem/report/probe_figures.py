"""Figures of the aggregation-bottleneck probes (ARCHITECTURE.md, last section).

A probe file holds per round and per probed client: its data size, the divergence
||G_u - L_u||_F / ||L_u||_F between the aggregated and the local model, the learned rho (mean and
5 quantiles), and HR/NDCG under the local model (just after local training), the aggregated model
(static replacement) and FedEM's merged model. Four figures per dataset, each with every protocol:
    probe_models_<d>      val HR@10 of the three models over rounds
    probe_divergence_<d>  divergence over rounds (median and interquartile band over clients)
    probe_change_<d>      per-client change from aggregation, binned by divergence and by data size
    probe_rho_<d>         the rho distribution over rounds

The change from aggregation is measured on a smooth score, not on HR@10 (which is 0 or 1 per client
and hides most moves): the gain 1 / log2(1 + rank) of the client's validation item among its 100
candidates, i.e. its NDCG without the top-10 cut-off. Aggregated minus local: below zero,
replacing the local model by the aggregated one pushes the held-out item down. Probe files without
ranks fall back to HR@10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from fedem.report import layout, style
from fedem.report.collect import Collection

KINDS = layout.PROBE_FIGURE_KINDS
METRIC = "val_hr@10"
probe_name = layout.probe_figure


def probe_frame(coll: Collection, dataset: str) -> pd.DataFrame:
    """One row per (protocol, seed, round, client) record, flattened."""
    rows = []
    for key, probe in sorted(coll.probes.items()):
        if key.dataset != dataset:
            continue
        for rec in probe["records"]:
            row = {
                "protocol": key.protocol,
                "seed": key.seed,
                "round": rec.get("round"),
                "client": rec.get("client"),
                "data_size": rec.get("data_size"),
                "divergence": rec.get("divergence"),
                "rho_mean": rec.get("rho_mean"),
            }
            quantiles = rec.get("rho_quantiles") or [None] * 5
            for i, q in enumerate(quantiles[:5]):
                row[f"rho_q{i}"] = q
            for model in style.PROBE_MODELS:
                for metric, value in (rec.get(model) or {}).items():
                    row[f"{model}:{metric}"] = value
            rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["round"] = pd.to_numeric(frame["round"]) + 1  # 1-based rounds, as in the convergence figures
    return frame


def _protocols(coll: Collection, frame: pd.DataFrame) -> list[str]:
    present = set(frame["protocol"]) if not frame.empty else set()
    return [p for p in coll.grid["protocols"] if p in present] or list(coll.grid["protocols"][:1])


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return np.nan, np.nan
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return float(values.mean()), float(half)


def _empty(coll: Collection, dataset: str, kind: str, out_dir: Path) -> list[Path]:
    fig, axes = style.figure()
    style.placeholder(axes[0, 0], f"no current probe results for {dataset}")
    return style.save(fig, out_dir / probe_name(kind, dataset))


def plot_models(coll: Collection, frame: pd.DataFrame, dataset: str, out_dir: Path) -> list[Path]:
    protocols = _protocols(coll, frame)
    fig, axes = style.figure(rows=len(protocols), sharex=True)
    for ax, protocol in zip(axes[:, 0], protocols):
        part = frame[frame["protocol"] == protocol]
        for model in style.PROBE_MODELS:
            column = f"{model}:{METRIC}"
            if column not in part:
                continue
            stats = part.groupby("round")[column].apply(_mean_ci)
            rounds = stats.index.to_numpy()
            mean = np.array([m for m, _ in stats])
            half = np.array([h for _, h in stats])
            color = style.PROBE_MODEL_COLORS[model]
            ax.plot(rounds, mean, color=color, label=model)
            ax.fill_between(rounds, mean - half, mean + half, color=color, alpha=0.15, linewidth=0)
        ax.set_title(f"{dataset}, {protocol} protocol")
        ax.set_ylabel("probed clients'\nval HR@10")
    return _finish_over_rounds(fig, axes, ncol=3, path=out_dir / probe_name("models", dataset))


def _finish_over_rounds(fig, axes, ncol: int, path: Path) -> list[Path]:
    """Shared x axis (integer rounds) and one legend above the panels, then save."""
    axes[-1, 0].set_xlabel("round")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=ncol, frameon=False)
    return style.save(fig, path)


def plot_divergence(coll: Collection, frame: pd.DataFrame, dataset: str, out_dir: Path) -> list[Path]:
    fig, axes = style.figure()
    ax = axes[0, 0]
    for protocol in _protocols(coll, frame):
        part = frame[frame["protocol"] == protocol]
        q = part.groupby("round")["divergence"].quantile([0.25, 0.5, 0.75]).unstack()
        color = style.PROTOCOL_COLORS.get(protocol)
        ax.plot(q.index, q[0.5], color=color, label=f"{protocol} protocol")
        ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.2, linewidth=0)
    ax.set_title(dataset)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(r"$\|G_u - L_u\|_F \,/\, \|L_u\|_F$")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False)
    return style.save(fig, out_dir / probe_name("divergence", dataset))


def binned(x: pd.Series, y: pd.Series, bins: int = 8) -> pd.DataFrame:
    """Mean of y (with a 95% CI half-width) in quantile bins of x; x of a bin is its median."""
    data = pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}).dropna()
    if data.empty:
        return pd.DataFrame(columns=["x", "mean", "half", "n"])
    data["bin"] = pd.qcut(data["x"].rank(method="first"), q=min(bins, len(data)), labels=False)
    out = []
    for _, group in data.groupby("bin"):
        mean, half = _mean_ci(group["y"])
        out.append({"x": float(group["x"].median()), "mean": mean, "half": half, "n": len(group)})
    return pd.DataFrame(out)


def _plain_number(value: float, _pos=None) -> str:
    return f"{value:g}"


def rank_gain(rank: pd.Series) -> pd.Series:
    """1 / log2(1 + rank): NDCG of one relevant item without the top-k cut-off (1 at rank 1)."""
    return 1.0 / np.log2(1.0 + pd.to_numeric(rank, errors="coerce"))


def aggregation_change(frame: pd.DataFrame) -> tuple[pd.Series, str]:
    """Per record: aggregated minus local, on the smooth rank gain when ranks were recorded."""
    if "aggregated:val_rank" in frame and "local:val_rank" in frame:
        change = rank_gain(frame["aggregated:val_rank"]) - rank_gain(frame["local:val_rank"])
        return change, "Δ 1/log2(1+val rank)\n(aggregated − local)"
    change = frame.get(f"aggregated:{METRIC}", pd.Series(np.nan, index=frame.index)) - frame.get(
        f"local:{METRIC}", pd.Series(np.nan, index=frame.index)
    )
    return change, "Δ val HR@10\n(aggregated − local)"


def plot_change(coll: Collection, frame: pd.DataFrame, dataset: str, out_dir: Path) -> list[Path]:
    fig, axes = style.figure(rows=2)
    change, ylabel = aggregation_change(frame)
    for ax, column, label in (
        (axes[0, 0], "divergence", "divergence (binned)"),
        (axes[1, 0], "data_size", "client train interactions (binned)"),
    ):
        for protocol in _protocols(coll, frame):
            mask = frame["protocol"] == protocol
            b = binned(frame.loc[mask, column], change[mask])
            if b.empty:
                continue
            color = style.PROTOCOL_COLORS.get(protocol)
            ax.errorbar(
                b["x"],
                b["mean"],
                yerr=b["half"],
                color=color,
                marker="o",
                capsize=1.5,
                elinewidth=0.7,
                label=f"{protocol} protocol",
            )
        ax.axhline(0, color="0.3", linewidth=0.6, dashes=(3, 2))
        ax.set_xlabel(label)
        ax.set_ylabel(ylabel)
        if column == "data_size":
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(_plain_number))
            ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0, 0].set_title(dataset)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncol=2, frameon=False)
    return style.save(fig, out_dir / probe_name("change", dataset))


def plot_rho(coll: Collection, frame: pd.DataFrame, dataset: str, out_dir: Path) -> list[Path]:
    protocols = _protocols(coll, frame)
    fig, axes = style.figure(rows=len(protocols), sharex=True)
    for ax, protocol in zip(axes[:, 0], protocols):
        part = frame[frame["protocol"] == protocol]
        if "rho_q0" not in part:
            style.placeholder(ax, "no rho recorded")
            continue
        q = part.groupby("round")[[f"rho_q{i}" for i in range(5)] + ["rho_mean"]].mean()
        color = style.PROTOCOL_COLORS.get(protocol)
        ax.fill_between(
            q.index, q["rho_q0"], q["rho_q4"], color=color, alpha=0.15, linewidth=0, label="outer quantiles"
        )
        ax.fill_between(q.index, q["rho_q1"], q["rho_q3"], color=color, alpha=0.3, linewidth=0, label="inner quantiles")
        ax.plot(q.index, q["rho_q2"], color=color, label="median")
        ax.plot(q.index, q["rho_mean"], color="0.2", dashes=(2, 1), linewidth=0.8, label="mean")
        ax.set_title(f"{dataset}, {protocol} protocol")
        ax.set_ylabel(r"$\rho$ (client average)")
    return _finish_over_rounds(fig, axes, ncol=4, path=out_dir / probe_name("rho", dataset))


PLOTTERS = {"models": plot_models, "divergence": plot_divergence, "change": plot_change, "rho": plot_rho}


def plot_probes(coll: Collection, dataset: str, out_dir: str | Path) -> list[Path]:
    """All four probe figures of `dataset` (placeholders when it has no current probe file)."""
    style.apply()
    out_dir = Path(out_dir)
    frame = probe_frame(coll, dataset)
    paths = []
    for kind in KINDS:
        if frame.empty:
            paths += _empty(coll, dataset, kind, out_dir)
        else:
            paths += PLOTTERS[kind](coll, frame, dataset, out_dir)
    return paths
