"""The one place the look of every figure is set: seaborn theme, sizes, colours, and saving."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

COLUMN_WIDTH_IN = 3.3  # one column of the AAAI two-column layout
PAGE_WIDTH_IN = 7.0  # both columns
PANEL_HEIGHT_IN = 1.45
PROTOCOL_ORDER = ("authors", "clean")
PROBE_MODELS = ("local", "aggregated", "merged")

_PALETTE = sns.color_palette("colorblind")
PROTOCOL_COLORS = {"authors": _PALETTE[3], "clean": _PALETTE[0]}
PROBE_MODEL_COLORS = {"local": _PALETTE[2], "aggregated": _PALETTE[3], "merged": _PALETTE[0]}
SANITY_COLOR = (0.45, 0.45, 0.45)
# methods: the colour-blind palette without its grey (the sanity floor's), then black: ten colours
METHOD_PALETTE = [c for i, c in enumerate(_PALETTE) if i != 7] + [(0.0, 0.0, 0.0)]


def apply() -> None:
    sns.set_theme(
        context="paper",
        style="whitegrid",
        palette="colorblind",
        rc={
            "font.size": 7,
            "axes.titlesize": 7,
            "axes.labelsize": 7,
            "xtick.labelsize": 6,
            "ytick.labelsize": 6,
            "legend.fontsize": 6,
            "legend.title_fontsize": 6,
            "lines.linewidth": 1.0,
            "lines.markersize": 3,
            "axes.linewidth": 0.6,
            "grid.linewidth": 0.4,
            "pdf.fonttype": 42,  # embed TrueType: editable text, accepted by paper checkers
            "ps.fonttype": 42,
            "savefig.dpi": 300,
            "figure.dpi": 150,
        },
    )


def method_colors(methods: list[str], configured: list[str], sanity: tuple[str, ...]) -> dict[str, tuple]:
    """Stable colours: a method keeps its colour (by its place among the configured methods) whatever else
    is plotted; sanity floors are grey."""
    learned = [m for m in configured if m not in sanity] + sorted(set(methods) - set(configured) - set(sanity))
    colors = {m: METHOD_PALETTE[i % len(METHOD_PALETTE)] for i, m in enumerate(learned)}
    colors.update({m: SANITY_COLOR for m in sanity})
    return {m: colors[m] for m in methods}


def figure(rows: int = 1, cols: int = 1, height_in: float | None = None, width_in: float = COLUMN_WIDTH_IN, **kwargs):
    height = height_in if height_in is not None else PANEL_HEIGHT_IN * rows + 0.35
    return plt.subplots(rows, cols, figsize=(width_in, height), layout="constrained", squeeze=False, **kwargs)


def placeholder(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=7, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig, base: str | Path) -> list[Path]:
    """Write base.pdf and base.png, each atomically (deterministic: no creation date in the PDF)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, metadata in (("pdf", {"CreationDate": None, "ModDate": None}), ("png", None)):
        path = base.with_name(f"{base.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            fig.savefig(tmp, format=fmt, metadata=metadata)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        paths.append(path)
    plt.close(fig)
    return paths
