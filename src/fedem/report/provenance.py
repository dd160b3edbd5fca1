"""Is a result file what the committed code and config would produce now?

A result file records the hash of its resolved run config and of the training code. Both are
recomputed here from the current config and sources; any difference makes the file stale, and
stale files are listed (with what differs) and kept out of every table and figure.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from fedem.config import base_of, run_config
from fedem.engine.results import RESULT_SCHEMA_VERSION, config_hash, digest_problem, training_code_hash
from fedem.engine.selection import selection_blocks

IDENTITY_KEYS = (  # what a result file and a divergence record both carry
    "schema_version",
    "protocol",
    "dataset",
    "method",
    "seed",
    "config",
    "config_hash",
    "code_hash",
    "data_hash",
)
REQUIRED_KEYS = IDENTITY_KEYS + ("rounds", "selected", "test_selected")


@dataclass(frozen=True)
class Expected:
    """What a current result file must carry."""

    code_hashes: dict  # base method -> training_code_hash(base)
    config: dict  # the package config the hashes are computed from

    def code_hash(self, method: str) -> str | None:
        """The training code hash a current result of `method` (a config block: a method or a variant)
        carries: its base's."""
        if method not in self.config["methods"]:
            return None
        return self.code_hashes.get(base_of(self.config, method))

    def run_config(self, protocol: str, method: str, probe: bool = False) -> dict:
        config = self.config
        if probe:
            config = copy.deepcopy(config)
            config["probe"]["enabled"] = True  # what `fedem train --probe-out` sets
        return run_config(config, protocol, method)

    def config_hash(self, protocol: str, method: str, probe: bool = False) -> str:
        return config_hash(self.run_config(protocol, method, probe))


def expected_for(config: dict) -> Expected:
    return Expected(code_hashes=current_code_hashes(), config=config)


def current_code_hashes() -> dict:
    from fedem.methods import METHODS

    return {method: training_code_hash(method) for method in METHODS}


def dict_diff(old: object, new: object, prefix: str = "") -> list[str]:
    """Human-readable differences `key: old -> new` between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{where}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{where}: {old[key]!r} -> (absent)")
            else:
                out.extend(dict_diff(old[key], new[key], where))
        return out
    return [] if old == new else [f"{prefix or '<value>'}: {old!r} -> {new!r}"]


def integrity_problem(result: dict) -> str | None:
    """Is this the file training wrote? Its content digest must match, and its `selected` and
    `test_selected` blocks must be what its own `rounds` curve gives (a hand-edited block is caught even
    where the digest was recomputed)."""
    problem = digest_problem(result)
    if problem:
        return problem
    try:
        derived = selection_blocks(result["rounds"], result["config"]["training"]["selection_metric"])
    except (KeyError, TypeError) as exc:
        return f"its rounds cannot be read ({exc!r})"
    for block in ("selected", "test_selected"):
        diff = dict_diff(result[block], derived[block], block)
        if diff:
            return f"its '{block}' block contradicts its own rounds ({'; '.join(diff[:3])})"
    return None


@dataclass
class Verdict:
    current: bool
    reasons: list[str] = field(default_factory=list)


def check_result(
    result: dict, expected: Expected, protocol: str, method: str, probe: bool = False, data_hash: str | None = None
) -> Verdict:
    """Compare one loaded result with what the current code and config would write.

    `data_hash`, when known (from the dataset's stats copy), is checked too."""
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        return Verdict(False, [f"not a complete result file (missing {', '.join(missing)})"])
    reasons = hash_reasons(result, expected, protocol, method, probe, data_hash)
    return Verdict(not reasons, reasons)


def hash_reasons(
    document: dict, expected: Expected, protocol: str, method: str, probe: bool = False, data_hash: str | None = None
) -> list[str]:
    """Why a document with IDENTITY_KEYS (a result file or a divergence record) is not what the current code,
    config and data would write: schema version, config hash (with what differs), code hash, data hash."""
    reasons = []
    if document["schema_version"] != RESULT_SCHEMA_VERSION:
        reasons.append(f"result schema version {document['schema_version']}, current {RESULT_SCHEMA_VERSION}")
    want = expected.config_hash(protocol, method, probe)
    if document["config_hash"] != want:
        diff = dict_diff(document["config"], expected.run_config(protocol, method, probe))
        shown = "; ".join(diff[:4]) + (f"; ... ({len(diff) - 4} more)" if len(diff) > 4 else "")
        reasons.append(
            f"config hash {document['config_hash']} != current {want} ({shown or 'same values, other hash'})"
        )
    if document["code_hash"] != expected.code_hash(method):
        reasons.append(f"training code hash {document['code_hash']} != current {expected.code_hash(method)}")
    if data_hash is not None and document["data_hash"] != data_hash:
        reasons.append(f"data hash {document['data_hash'][:16]} != current dataset {data_hash[:16]}")
    return reasons
