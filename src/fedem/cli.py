"""`fedem prepare|train` (or `python -m fedem ...`): the command line the workflow and users call."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

import fedem
from fedem.config import load_config, run_config
from fedem.errors import ConfigError, FedemError, TrainingError

log = logging.getLogger("fedem")

# fedem.engine.federation's message for a run stopped by a non-finite loss or score
_DIVERGED_IN_ROUND = re.compile(r"diverged in round (\d+)")
# torch's binary_cross_entropy refuses a NaN probability with this RuntimeError, inside the step and
# so before the local loop's finite-loss check can see the loss: the same divergence, reached earlier
# (FedRAP + EM on amazon-video, authors protocol). A sigmoid's output is never outside [0, 1] otherwise.
_NAN_PROBABILITY = "all elements of input should be between 0 and 1"


def _divergence(exc: Exception, method: str, run_federation) -> tuple[int, TrainingError] | None:
    """(round, the engine's divergence error) when `exc` is a divergence, else None. A NaN probability is
    recognised here rather than in the training code so that the numbers' code hash, and with it every
    committed result, stays as it is; its round is the engine's round loop's `t` when it was raised."""
    if isinstance(exc, TrainingError):
        diverged = _DIVERGED_IN_ROUND.search(str(exc))
        return (int(diverged.group(1)), exc) if diverged else None
    if not (isinstance(exc, RuntimeError) and _NAN_PROBABILITY in str(exc)):
        return None
    rounds = [
        f.f_locals.get("t") for f, _ in traceback.walk_tb(exc.__traceback__) if f.f_code is run_federation.__code__
    ]
    if not rounds or not isinstance(rounds[0], int):
        return None
    return rounds[0], TrainingError(
        f"method '{method}' diverged in round {rounds[0]}: NaN probability in the loss ({exc})"
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/config.yaml", help="config file (default: %(default)s)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set training.rounds=5 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedem", description=__doc__)
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {fedem.__version__}",
        help="print the package version and exit",
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{prepare,train}",
        help="what to do (`fedem COMMAND --help` lists its options)",
    )

    prep = sub.add_parser("prepare", help="fetch, verify and preprocess a dataset; print its stats")
    prep.add_argument("dataset", help="a dataset key, e.g. ml-100k or filmtrust (an unknown key lists the valid ones)")
    prep.add_argument("--dedupe", action="store_true", help="keep each (user, item) pair's earliest row")
    prep.add_argument("--force", action="store_true", help="rebuild even if the artifact exists")
    _common(prep)

    train = sub.add_parser("train", help="train and evaluate one (dataset, method, protocol, seed)")
    train.add_argument(
        "--dataset",
        required=True,
        help="a dataset key, e.g. ml-100k or filmtrust (an unknown key lists the valid ones)",
    )
    train.add_argument(
        "--method", required=True, help="a method key, e.g. fedem or fedmf (an unknown key lists the valid ones)"
    )
    train.add_argument("--seed", type=int, required=True, help="training seed, an integer >= 0")
    train.add_argument(
        "--protocol",
        default="authors",
        help="a key of `protocols` in the config, e.g. authors or clean (default: %(default)s)",
    )
    train.add_argument("--rounds", type=int, help="shortcut for --set training.rounds=N")
    train.add_argument("--probe-out", type=Path, help="also record aggregation-bottleneck probes here")
    train.add_argument("--out", type=Path, required=True, help="result JSON path (written atomically)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    _common(train)
    return parser


def cmd_prepare(args) -> int:
    from fedem.data.pipeline import prepare

    config = load_config(args.config, args.overrides)
    start = time.perf_counter()
    _, stats = prepare(config, args.dataset, args.dedupe, force=args.force)
    stats = dict(stats, wall_seconds=round(time.perf_counter() - start, 3))
    print(json.dumps(stats, indent=1))
    return 0


def _check_train_args(args) -> None:
    """What would otherwise fail only after training (or deep inside it), refused up front."""
    from fedem.engine.results import timing_path

    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: a training seed is an integer >= 0")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: give a number of CPU threads >= 1 (or leave it out)")
    outputs = [("--out", args.out), ("--out", timing_path(args.out))]
    if args.probe_out is not None:
        outputs.append(("--probe-out", args.probe_out))
    for flag, path in outputs:
        if path.is_dir():
            raise ConfigError(
                f"{flag} {path} is a directory: give the path of the file to write, e.g. {path / 'r.json'}"
            )
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(f"{flag} {path}: {blocking} is a file, not a directory")


def _build_native_kernels(method: str, rc: dict) -> None:
    """training.kernels=native on the CPU: build (once per machine) or load the method's C++ kernels
    now, so that neither the first round's time nor the run's wall time includes a compile."""
    from fedem.engine.federation import resolve_device
    from fedem.engine.results import native_kernels

    if rc["training"]["kernels"] != "native" or resolve_device(rc["training"]["device"]).type != "cpu":
        return
    from fedem.numerics import native

    for name in native_kernels(method):
        native.load(name)


def _cpu_model() -> str:
    """The CPU's model name (platform.processor() is empty on Linux): run times, and the float32 subnormal
    penalty that slows some runs several-fold on one machine kind and not another, depend on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_model(device: str) -> str | None:
    """The GPU's name when the run trained on one (None on the CPU): the compute tables then do not
    file a GPU run's times under its host CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def cmd_train(args) -> int:
    from fedem.data.pipeline import prepare
    from fedem.engine.federation import run_federation
    from fedem.engine.results import (
        code_version,
        divergence_path,
        provenance,
        training_code_hash,
        write_divergence,
        write_probe,
        write_result,
    )
    from fedem.methods import get_method

    _check_train_args(args)
    overrides = list(args.overrides)
    if args.rounds is not None:
        overrides.append(f"training.rounds={args.rounds}")
    if args.probe_out is not None:
        overrides.append("probe.enabled=true")
    config = load_config(args.config, overrides)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rc = run_config(config, args.protocol, args.method)
    get_method(rc["method"]["base"])  # unknown methods fail before any data work
    code_hash = training_code_hash(rc["method"]["base"])  # before training: the code that makes the numbers
    _build_native_kernels(rc["method"]["base"], rc)
    start = time.perf_counter()
    ds, stats = prepare(config, args.dataset, rc["protocol"]["dedupe"])
    try:
        body = run_federation(ds, args.method, rc, args.seed, progress=not args.quiet)
    except (TrainingError, RuntimeError) as exc:
        found = _divergence(exc, args.method, run_federation)
        if found is None:
            raise
        round_index, divergence = found
        # an outcome of this code and config, recorded so that the workflow does not retry it
        record = provenance(args.protocol, args.dataset, args.method, args.seed, rc, ds.content_hash, code_hash)
        record["diverged"] = {"round": round_index, "error": str(divergence)}
        write_divergence(args.out, record)
        if divergence is exc:
            raise
        raise divergence from exc
    divergence_path(args.out).unlink(missing_ok=True)  # a finished run supersedes an earlier divergence
    probe_records = body.pop("probe_records")
    result = provenance(args.protocol, args.dataset, args.method, args.seed, rc, ds.content_hash, code_hash)
    result["device"] = body.pop("device")
    round_seconds = body.pop("round_seconds")
    result.update(body)
    timing = {
        "wall_seconds": round(time.perf_counter() - start, 3),
        "train_seconds": round(sum(round_seconds), 3),
        "median_round_seconds": round(statistics.median(round_seconds), 4),
        "round_seconds": [round(x, 4) for x in round_seconds],
        "code_version": code_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu": _cpu_model(),
        "gpu": _gpu_model(result["device"]),
        "python": platform.python_version(),
    }
    if args.probe_out is not None:
        probe = {
            k: result[k] for k in ("protocol", "dataset", "method", "seed", "config_hash", "data_hash", "code_hash")
        }
        probe["rho_quantile_levels"] = [0.05, 0.25, 0.5, 0.75, 0.95]
        probe["records"] = probe_records
        write_probe(args.probe_out, probe)
    write_result(args.out, result, timing)
    sel = result["selected"]
    print(
        f"{args.method} on {args.dataset} ({args.protocol}, seed {args.seed}): best-validation round "
        f"{sel['round']}: test HR@10 {sel['test']['hr@10']:.4f} NDCG@10 {sel['test']['ndcg@10']:.4f} -> {args.out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"prepare": cmd_prepare, "train": cmd_train}[args.command](args)
    except FedemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
