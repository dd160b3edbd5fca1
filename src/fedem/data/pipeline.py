"""prepare = fetch + verify + parse + preprocess + write the artifact and its stats."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fedem.data.dataset import FederatedDataset, atomic_write_bytes, load_dataset, save_dataset
from fedem.data.fetch import ensure_raw, resolve_mirror
from fedem.data.preprocess import PREPROCESS_VERSION, dataset_stats, preprocess
from fedem.data.registry import get_spec
from fedem.errors import DataError

log = logging.getLogger(__name__)


# every config value that shapes a processed artifact: its file name carries them all, and a loaded
# artifact must have been made with them (its meta records them)
SHAPING_KEYS = ("data_seed", "min_user_interactions", "num_eval_negatives")


def artifact_settings(config: dict, dataset: str, dedupe: bool) -> dict:
    """What an artifact of (dataset, dedupe) must record in its meta under this config."""
    data = config["data"]
    return {
        "dataset": dataset,
        "dedupe": dedupe,
        **{k: data[k] for k in SHAPING_KEYS},
        "preprocess_version": PREPROCESS_VERSION,
    }


def variant_name(config: dict, dedupe: bool) -> str:
    """e.g. `dups-seed0-min10-neg99-v1`: one name per combination of shaping settings."""
    data = config["data"]
    return (
        f"{'dedupe' if dedupe else 'dups'}-seed{data['data_seed']}-min{data['min_user_interactions']}"
        f"-neg{data['num_eval_negatives']}-v{PREPROCESS_VERSION}"
    )


def artifact_path(config: dict, dataset: str, dedupe: bool) -> Path:
    return Path(config["data"]["processed_dir"]) / dataset / f"{variant_name(config, dedupe)}.npz"


def prepare_command(dataset: str, dedupe: bool) -> str:
    """The command that (re)builds the artifact of (dataset, dedupe), as error messages give it."""
    return f"python -m fedem prepare {dataset}{' --dedupe' if dedupe else ''}"


def check_artifact(ds: FederatedDataset, path: Path, want: dict) -> None:
    """A cached artifact made with other settings (renamed, copied, or from older code) is refused."""
    found = {k: ds.meta.get(k) for k in want}
    wrong = [f"{k}={found[k]!r} (the config asks for {want[k]!r})" for k in want if found[k] != want[k]]
    if wrong:
        raise DataError(
            f"processed dataset '{path}' was made with other settings: {', '.join(wrong)}; delete it and run "
            f"`{prepare_command(want['dataset'], want['dedupe'])}` again"
        )


def stats_path(artifact: Path) -> Path:
    return artifact.with_suffix(".stats.json")


def raw_file(config: dict, dataset: str) -> Path:
    data = config["data"]
    return ensure_raw(
        get_spec(dataset),
        Path(data["raw_dir"]),
        resolve_mirror(data["mirror"]),
        data["allow_download"],
        data["download_timeout_s"],
    )


def prepare(config: dict, dataset: str, dedupe: bool, force: bool = False) -> tuple[FederatedDataset, dict]:
    """Returns the processed dataset (building it if absent) and its stats (with build seconds)."""
    spec = get_spec(dataset)  # fails early, listing valid keys
    out = artifact_path(config, dataset, dedupe)
    want = artifact_settings(config, dataset, dedupe)
    if out.is_file() and stats_path(out).is_file() and not force:
        ds = load_dataset(out)
        check_artifact(ds, out, want)
        stats = json.loads(stats_path(out).read_text())
        if stats.get("content_hash") != ds.content_hash:
            raise DataError(
                f"'{stats_path(out)}' does not describe '{out}' (content hash differs); run "
                f"`{prepare_command(dataset, dedupe)} --force`"
            )
        return ds, stats
    start = time.perf_counter()
    raw = raw_file(config, dataset)
    rows = spec.parser(raw)
    data = config["data"]
    ds = preprocess(
        rows,
        dataset=dataset,
        dedupe=dedupe,
        min_user_interactions=data["min_user_interactions"],
        num_eval_negatives=data["num_eval_negatives"],
        data_seed=data["data_seed"],
    )
    ds.meta["raw_sha256"] = spec.sha256
    check_artifact(ds, out, want)  # preprocess must record exactly the settings the name promises
    save_dataset(ds, out)
    stats = dataset_stats(ds)
    stats["settings"] = want
    stats["preprocess_seconds"] = round(time.perf_counter() - start, 3)
    atomic_write_bytes(stats_path(out), (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    log.info("prepared %s (dedupe=%s) -> %s", dataset, dedupe, out)
    return ds, stats
