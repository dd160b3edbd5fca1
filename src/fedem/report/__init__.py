"""Tables, figures and checks built from the result files only (never re-training anything).

collect.py       read results/, sort files into current / stale / ignored (provenance.py)
tables.py        the paper tables (.md/.tex/.csv via tablefmt.py), provenance.md, all_runs.csv
figures.py       convergence curves, protocol gap;  probe_figures.py: the probe figures
check.py         CI tolerance check against stored expectations
layout.py        where files live under results/ (shared with the Snakemake workflow)
`python -m fedem.report {tables,figures,copy-stats}` and `python -m fedem.report.check` run them.
"""
