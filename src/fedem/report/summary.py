"""Numbers behind the tables: mean ± std over seeds, ranks, and FedEM vs the best baseline."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

from scipy import stats as scipy_stats

# Which method is the paper's, which are sanity floors (shown, never ranked): each method block's
# `role` in the config (fedem.config.methods_with_role), passed in by the tables.


@dataclass(frozen=True)
class Cell:
    values: dict[int, float]  # seed -> value

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over seeds (None below two seeds)."""
        return statistics.stdev(self.values.values()) if self.n >= 2 else None


def fmt_mean_std(cell: Cell, digits: int = 4) -> str:
    if cell.mean is None:
        return "—"
    if cell.std is None:
        return f"{cell.mean:.{digits}f}"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """`p=0.031`, `p<0.001`, or `p n/a` (fewer than two paired seeds)."""
    if p is None:
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def ranks(cells: dict[str, Cell], sanity: tuple[str, ...], top: int | None = 2) -> dict[str, int]:
    """1 for the best mean, 2 for the second best, ... down to `top` (None: every method with a mean);
    ties share a rank; sanity methods unranked."""
    means = sorted(
        {round(c.mean, 12) for m, c in cells.items() if m not in sanity and c.mean is not None}, reverse=True
    )
    out = {}
    for method, cell in cells.items():
        if method in sanity or cell.mean is None:
            continue
        position = means.index(round(cell.mean, 12)) + 1
        if top is None or position <= top:
            out[method] = position
    return out


@dataclass(frozen=True)
class Comparison:
    baseline: str | None  # best non-FedEM, non-sanity method by mean
    relative: float | None  # (FedEM - baseline) / baseline
    p_value: float | None  # paired t-test over the seeds both have
    n_pairs: int


def paired_p(a: dict[int, float], b: dict[int, float]) -> tuple[float | None, int]:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None, len(seeds)
    x, y = [a[s] for s in seeds], [b[s] for s in seeds]
    if all(u == v for u, v in zip(x, y)):
        return 1.0, len(seeds)
    with warnings.catch_warnings():  # near-identical differences: scipy warns, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(scipy_stats.ttest_rel(x, y).pvalue)
    return (p if math.isfinite(p) else None), len(seeds)


def compare_to_best_baseline(cells: dict[str, Cell], proposed_method: str, sanity: tuple[str, ...]) -> Comparison:
    proposed = cells.get(proposed_method)
    baselines = {m: c for m, c in cells.items() if m not in sanity and m != proposed_method and c.mean is not None}
    if proposed is None or proposed.mean is None or not baselines:
        return Comparison(None, None, None, 0)
    best = max(baselines, key=lambda m: (baselines[m].mean, -list(baselines).index(m)))
    base = baselines[best]
    relative = (proposed.mean - base.mean) / base.mean if base.mean else None
    p, n = paired_p(proposed.values, base.values)
    return Comparison(best, relative, p, n)


def survival(authors: Cell, clean: Cell) -> float | None:
    """The share of the authors'-protocol score that the clean protocol keeps."""
    if authors.mean is None or clean.mean is None or authors.mean == 0:
        return None
    return clean.mean / authors.mean
