"""`python -m fedem.report tables|figures|readme|copy-stats`: what the workflow's report rules call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedem.config import load_config
from fedem.data.dataset import atomic_write_bytes
from fedem.errors import FedemError
from fedem.report.layout import TABLE_SETS

FIGURE_KINDS = ("convergence", "probes", "protocol-gap", "sensitivity", "tsne", "all")
TIMING_KEYS = ("preprocess_seconds", "wall_seconds")  # machine-dependent: kept out of committed copies


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml", help="package config (default: %(default)s)")
    p.add_argument("--results", default="results", help="results folder to read (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="folder to write into")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedem.report", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tab = sub.add_parser("tables", help="every table (.md/.tex/.csv), provenance.md and all_runs.csv")
    _common(tab)
    tab.add_argument(
        "--set",
        dest="table_set",
        choices=TABLE_SETS,
        help="only one set: main (Table 1 and its companions, provenance, all runs) or one experiment's",
    )
    fig = sub.add_parser("figures", help="figures (.pdf/.png)")
    _common(fig)
    fig.add_argument("--kind", choices=FIGURE_KINDS, default="all")
    fig.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="dataset(s) to plot (default: every grid dataset with current results)",
    )
    rd = sub.add_parser("readme", help="re-render README.md's results block from the tables and timings")
    rd.add_argument("--readme", type=Path, default=Path("README.md"))
    rd.add_argument("--tables", type=Path, default=Path("paper_tables"))
    rd.add_argument("--results", type=Path, default=Path("results"))
    rd.add_argument("--config", default="config/config.yaml", help="package config (default: %(default)s)")
    cp = sub.add_parser("copy-stats", help="copy a dataset's stats JSON without its timings")
    cp.add_argument("src", type=Path)
    cp.add_argument("dst", type=Path)
    return parser


def cmd_tables(args) -> int:
    from fedem.report.collect import collect
    from fedem.report.tables import write_tables

    coll = collect(args.results, load_config(args.config))
    paths = write_tables(coll, args.out, args.table_set)
    print(f"wrote {len(paths)} table files to {args.out} from {len(coll.runs)} current runs")
    return 0


def cmd_figures(args) -> int:
    from fedem.report.collect import collect
    from fedem.report.experiment_figures import plot_sensitivity, plot_tsne
    from fedem.report.figures import plot_convergence, plot_protocol_gap
    from fedem.report.probe_figures import plot_probes
    from fedem.report.tables import warn_excluded

    coll = collect(args.results, load_config(args.config))
    warn_excluded(coll)
    paths = []
    if args.kind in ("convergence", "all"):
        for dataset in args.dataset or coll.datasets_with_files("runs"):
            paths += plot_convergence(coll, dataset, args.out)
    if args.kind in ("probes", "all"):
        for dataset in args.dataset or coll.datasets_with_files("probes"):
            paths += plot_probes(coll, dataset, args.out)
    if args.kind in ("protocol-gap", "all"):
        paths += plot_protocol_gap(coll, args.out)
    if args.kind in ("sensitivity", "all"):
        paths += plot_sensitivity(coll, args.out)
    if args.kind in ("tsne", "all"):
        for dataset in args.dataset or coll.datasets_with_files("probes"):
            paths += plot_tsne(coll, dataset, args.out)
    print(f"wrote {len(paths)} figure files to {args.out}")
    if args.kind == "all" and not args.dataset:
        # a full render owns the folder's figures: one it did not write now belongs to a dataset with
        # no result file at all (removed), so it goes rather than linger beside the new ones
        written = {Path(p).resolve() for p in paths}
        for old in sorted(figure_files(args.out)):
            if old.resolve() not in written:
                old.unlink()
                print(f"removed {old}: its results are no longer current (see paper_tables/provenance.md)")
    return 0


def figure_files(out_dir) -> list[Path]:
    """The files in out_dir named as this package names its figures."""
    from fedem.report import layout

    out = Path(out_dir)
    if not out.is_dir():
        return []
    stems = (
        layout.convergence_figure("*"),
        layout.PROTOCOL_GAP_FIGURE,
        layout.SENSITIVITY_FIGURE,
        layout.tsne_figure("*"),
        *(layout.probe_figure(kind, "*") for kind in layout.PROBE_FIGURE_KINDS),
    )
    return [p for stem in stems for suffix in layout.FIGURE_SUFFIXES for p in out.glob(f"{stem}{suffix}")]


def cmd_readme(args) -> int:
    from fedem.report.readme import update_readme

    changed = update_readme(args.readme, args.tables, args.results, load_config(args.config))
    print(f"{args.readme}: results block {'updated' if changed else 'already current'}")
    return 0


def cmd_copy_stats(args) -> int:
    stats = json.loads(args.src.read_text())
    for key in TIMING_KEYS:
        stats.pop(key, None)
    atomic_write_bytes(args.dst, (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"tables": cmd_tables, "figures": cmd_figures, "copy-stats": cmd_copy_stats, "readme": cmd_readme}[
            args.command
        ](args)
    except FedemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
