"""Which round a run reports (PROTOCOL.md §5). Pure Python on the `rounds` list of a result file, so
the report re-derives a file's `selected` and `test_selected` blocks from its own curve."""

from __future__ import annotations


def select_round(rounds: list[dict], split: str, metric: str, latest_on_ties: bool) -> dict:
    best = None
    for entry in rounds:
        value = entry[split][metric]
        if best is None or value > best[split][metric] or (latest_on_ties and value == best[split][metric]):
            best = entry
    return best


def selection_blocks(rounds: list[dict], metric: str) -> dict:
    """The `selected` (best validation `metric`, earliest on ties) and `test_selected` (the authors' rule,
    train.py `if hr >= best_test_hr`: best test HR@10, latest on ties) blocks of a result file."""
    selected = select_round(rounds, "val", metric, latest_on_ties=False)
    test_selected = select_round(rounds, "test", "hr@10", latest_on_ties=True)
    return {
        "selected": {
            "rule": f"best validation {metric}, earliest round on ties",
            "round": selected["round"],
            "val": selected["val"],
            "test": selected["test"],
            "test_full_ranking": selected.get("test_full_ranking"),
        },
        "test_selected": {
            "rule": "best TEST hr@10, latest round on ties (the authors' train.py; optimistic, leaky)",
            "round": test_selected["round"],
            "val": test_selected["val"],
            "test": test_selected["test"],
        },
    }
