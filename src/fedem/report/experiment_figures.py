"""Figures of the paper's other experiments: the sensitivity sweeps (Fig. 6) and the t-SNE of one
client's item tables (Fig. 5). Each reads a Collection (current files only) and writes .pdf and .png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedem.config import experiment_datasets
from fedem.report import layout, style
from fedem.report.collect import Collection
from fedem.report.experiments import SWEEP_LABEL, sweep_value, test_cell

TSNE_PERPLEXITY = 30.0
TSNE_SEED = 0
TSNE_MAX_ITEMS = 1000  # items embedded (a seeded sample when a table has more): 3 x 1000 points, ~20 s a panel


def plot_sensitivity(coll: Collection, out_dir: str | Path) -> list[Path]:
    """Fig. 6: test HR@10 against each swept hyper-parameter (one row each), one column per protocol, a
    line per dataset (mean over the experiment's seeds, ±1 std band); the default value is marked."""
    style.apply()
    exp = coll.config["experiments"]["sensitivity"]
    sweeps, seeds = exp["sweeps"], exp["seeds"]
    protocols = coll.grid["protocols"]
    datasets = experiment_datasets(coll.config, "sensitivity")
    palette = dict(zip(coll.grid["datasets"], style.METHOD_PALETTE))  # a dataset keeps its colour across figures
    fig, axes = style.figure(rows=len(sweeps), cols=len(protocols), width_in=style.PAGE_WIDTH_IN)
    for row, (sweep, variants) in enumerate(sweeps.items()):
        xs = np.array([sweep_value(coll, sweep, m) for m in variants], dtype=float)
        default = sweep_value(coll, sweep, "fedem")
        for col, protocol in enumerate(protocols):
            ax = axes[row, col]
            drawn = False
            for dataset in datasets:
                cells = [test_cell(coll, protocol, dataset, m, "hr@10", seeds) for m in variants]
                have = [i for i, c in enumerate(cells) if c.mean is not None]
                if not have:
                    continue
                drawn = True
                x = xs[have]
                mean = np.array([cells[i].mean for i in have])
                std = np.array([cells[i].std or 0.0 for i in have])
                ax.plot(x, mean, marker="o", color=palette[dataset], label=dataset)
                ax.fill_between(x, mean - std, mean + std, color=palette[dataset], alpha=0.2, linewidth=0)
            if not drawn:
                style.placeholder(ax, f"no current sensitivity runs, {protocol} protocol")
                continue
            ax.axvline(default, color="0.6", linewidth=0.6, dashes=(3, 2))
            ax.set_title(f"{SWEEP_LABEL[sweep]}, {protocol} protocol")
            ax.set_xlabel(SWEEP_LABEL[sweep])
            ax.set_ylabel("test HR@10")
            ax.set_xticks(xs)
    found = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    if found:
        fig.legend(list(found.values()), list(found), loc="outside lower center", ncol=len(found), frameon=False)
    return style.save(fig, Path(out_dir) / layout.SENSITIVITY_FIGURE)


def snapshot(coll: Collection, protocol: str, dataset: str) -> dict | None:
    """The probe record holding one client's three tables (the proposed method's first probe seed)."""
    for key, probe in sorted(coll.probes.items()):
        if (key.protocol, key.dataset, key.method) != (protocol, dataset, coll.proposed):
            continue
        for rec in probe["records"]:
            if "tables" in rec:
                return rec
    return None


def tsne_embedding(tables: dict[str, list], seed: int = TSNE_SEED) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE (scikit-learn, PCA start, a fixed random_state) of the rows of every table, jointly
    (the same seeded sample of TSNE_MAX_ITEMS items from each when there are more): (points [n, 2], the
    model index of each point)."""
    from sklearn.manifold import TSNE

    blocks = [np.asarray(tables[m], dtype=np.float64) for m in style.PROBE_MODELS]
    n_items = len(blocks[0])
    if n_items > TSNE_MAX_ITEMS:
        keep = np.sort(np.random.default_rng(seed).choice(n_items, TSNE_MAX_ITEMS, replace=False))
        blocks = [b[keep] for b in blocks]
    x = np.concatenate(blocks)
    which = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])
    perplexity = min(TSNE_PERPLEXITY, (len(x) - 1) / 3)
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return points, which


def plot_tsne(coll: Collection, dataset: str, out_dir: str | Path) -> list[Path]:
    """Fig. 5: t-SNE of a client's local, aggregated (what the server sends) and merged item tables, one
    panel per protocol: every item row of the three tables, embedded together, coloured by table."""
    style.apply()
    protocols = coll.grid["protocols"]
    fig, axes = style.figure(cols=len(protocols), width_in=style.PAGE_WIDTH_IN, height_in=2.6)
    for ax, protocol in zip(axes[0], protocols):
        rec = snapshot(coll, protocol, dataset)
        if rec is None:
            style.placeholder(ax, f"no current probe with a table snapshot, {dataset}, {protocol} protocol")
            continue
        points, which = tsne_embedding(rec["tables"])
        # local as rings, aggregated and merged as dots: where the tables coincide the rings show through
        for i, model in enumerate(style.PROBE_MODELS):
            sel = which == i
            color = style.PROBE_MODEL_COLORS[model]
            if i == 0:
                look = {"facecolors": "none", "edgecolors": [color], "linewidths": 0.4, "s": 6}
            else:
                look = {"color": color, "s": 1.2, "linewidths": 0}
            ax.scatter(points[sel, 0], points[sel, 1], label=model, alpha=0.7, rasterized=True, **look)
        ax.set_title(
            f"{dataset}, {protocol}: client {rec['client']} ({rec['data_size']} training items), "
            f"round {rec['round'] + 1}\n||G - L|| / ||L|| = {rec['divergence']:.3f}, mean rho = {rec['rho_mean']:.4f}"
        )
        ax.set_xticks([])
        ax.set_yticks([])
    found = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            found.setdefault(lab, h)
    if found:
        fig.legend(
            list(found.values()), list(found), loc="outside lower center", ncol=len(found), frameon=False, markerscale=6
        )
    return style.save(fig, Path(out_dir) / layout.tsne_figure(dataset))
