"""Seconds per federated round and peak memory, per (dataset, method), on whatever device is here.

    python benchmarks/bench_round.py --datasets ml-100k filmtrust --methods fedem fedmf local --rounds 6

Reports the median over rounds after the first (which pays one-off costs: torch.compile, caches).
A round = waiting for its prefetched data + local training of every client + the server step
(the `round_seconds` of a run); evaluation is timed separately. Alternatives in the same table:
`--compare` adds the engine with the other training.kernels choices (compiled, eager, and autograd:
the training layer's generic path, without any fast path), and the per-client reference loop
(tests/reference.py, the authors' structure) timed on a sample of clients and scaled up.

`--profile R` instead runs torch.profiler over round R of each (dataset, method) and prints where
that round's time goes: the method's own sections (fedem's plain group, merged group, in-place
merge, server step; evaluation) and the top operators by self time.

    python benchmarks/bench_round.py --datasets ml-100k --methods fedem --profile 3"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def bench_engine(ds, method, config, rounds, kernels=None):
    from fedem.config import run_config
    from fedem.engine.federation import run_federation

    rc = run_config(config, "authors", method)
    rc["training"]["rounds"] = rounds
    if kernels is not None:
        rc["training"]["kernels"] = kernels
    rc["training"]["full_ranking"] = True
    start = time.perf_counter()
    body = run_federation(ds, method, rc, seed=0, progress=False)
    wall = time.perf_counter() - start
    secs = body["round_seconds"][1:] or body["round_seconds"]
    eval_s = (wall - sum(body["round_seconds"])) / rounds
    return statistics.median(secs), eval_s


def bench_reference(ds, method, config, clients=60):
    """The authors' per-client loop (one module + torch.optim.Adam per client), one round, on
    `clients` clients; scaled to all clients by their share of the round's samples."""
    sys.path.insert(0, str(REPO / "tests"))
    from fedem.config import run_config
    from fedem.data.negatives import TrainNegativeSampler
    from fedem.training.backbones import init_fcf
    from fedem.training.schedule import make_round_samples

    from reference import Reference, train_client

    rc = run_config(config, "authors", method)
    tr = rc["training"]
    items, user = init_fcf(ds.num_items, tr["latent_dim"], 0)
    neg = TrainNegativeSampler(ds, "unobserved", tr["num_negatives"]).sample(0, 0)
    samples = make_round_samples(
        ds.train_indptr, ds.train_items, neg, tr["local_epochs"], tr["batch_size"], 0, 0, torch.device("cpu")
    )
    picked = torch.arange(0, ds.num_users, max(1, ds.num_users // clients))
    plan = samples.plan(picked)
    ref = Reference("local", ds, rc, 0, items, user)
    start = time.perf_counter()
    for rank, client in enumerate(plan.clients.tolist()):
        ref.models[client].item_embeddings.weight.data.copy_(items)
        train_client(
            ref.models[client],
            plan.client_batches(rank),
            rc["method"]["optimizer"]["lr"]["embedding"],
            None,
            int(plan.batches_per_epoch[rank]),
            tr["early_stop_threshold"],
        )
    elapsed = time.perf_counter() - start
    share = float(plan.sample_counts.sum()) / float(samples.counts.sum())
    return elapsed / share


# methods' sections worth timing apart in a profile (whichever the method has)
_SECTIONS = ("train_plain", "_train_merged", "_merge_tables_in_place", "_merge_tables", "_aggregate")


def profile_round(ds, method, config, round_index, top=15):
    """torch.profiler over training round `round_index` and its evaluation. The method class is
    wrapped here (record_function around its sections), so the engine itself stays untouched."""
    from torch.profiler import ProfilerActivity, profile, record_function

    import fedem.engine.federation as federation
    from fedem.config import base_of, run_config
    from fedem.engine.evaluation import Evaluator

    rc = run_config(config, "authors", method)
    key = base_of(config, method)  # a variant runs its base's class
    rc["training"]["rounds"] = round_index + 1
    rc["training"]["full_ranking"] = True
    base = federation.get_method(key)
    state = {"profiler": None}

    def labelled(name, fn):
        def wrapper(self, *args, **kwargs):
            with record_function(f"[fedem] {name}"):
                return fn(self, *args, **kwargs)

        return wrapper

    attrs = {name: labelled(name, getattr(base, name)) for name in _SECTIONS if hasattr(base, name)}

    def train_round(self, t, samples, negatives):
        if t == round_index:
            state["profiler"] = profile(
                activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            )
            state["profiler"].__enter__()
        with record_function("[fedem] train_round"):
            return base.train_round(self, t, samples, negatives)

    attrs["train_round"] = train_round
    wrapped = type(base.__name__, (base,), attrs)
    evaluate = {name: getattr(Evaluator, name) for name in ("sampled", "full")}
    original_get = federation.get_method
    federation.get_method = lambda name: wrapped if name == key else original_get(name)
    for name, fn in evaluate.items():
        setattr(Evaluator, name, labelled(f"eval.{name}", fn))
    try:
        federation.run_federation(ds, method, rc, seed=0, progress=False)
    finally:
        federation.get_method = original_get
        for name, fn in evaluate.items():
            setattr(Evaluator, name, fn)
    prof = state["profiler"]
    prof.__exit__(None, None, None)
    events = prof.key_averages()
    sections = sorted((e for e in events if e.key.startswith("[fedem] ")), key=lambda e: -e.cpu_time_total)
    print(f"  sections of round {round_index} (CPU wall incl. children, ms):")
    for e in sections:
        print(f"    {e.key[8:]:<26}{e.cpu_time_total / 1e3:>10.1f}  x{e.count}")
    ops = sorted((e for e in events if not e.key.startswith("[fedem] ")), key=lambda e: -e.self_cpu_time_total)[:top]
    print(f"  top {top} operators by self CPU time (ms):")
    for e in ops:
        print(f"    {e.key[:58]:<60}{e.self_cpu_time_total / 1e3:>10.1f}  x{e.count}")
    return {
        "round": round_index,
        "sections_ms": {e.key[8:]: e.cpu_time_total / 1e3 for e in sections},
        "top_ops_self_ms": {e.key: e.self_cpu_time_total / 1e3 for e in ops},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "filmtrust"])
    parser.add_argument("--methods", nargs="+", default=["fedem", "fedmf", "local", "neg-count"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--compare", action="store_true", help="also time the other training.kernels choices and the per-client loop"
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=["native", "compiled", "eager", "autograd"],
        help="with --compare: the training.kernels choices to time besides the config's "
        "(autograd = the training layer's generic path, no fast path)",
    )
    parser.add_argument("--profile", type=int, metavar="ROUND", help="profile this round instead of timing")
    parser.add_argument("--json", type=Path, help="write the table as JSON too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fedem.config import load_config
    from fedem.data.pipeline import prepare

    config = load_config(REPO / "config" / "config.yaml")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    print(f"device={device} threads={args.threads} torch={torch.__version__}")
    if args.profile is None:
        print(f"{'dataset':<13}{'method':<11}{'s/round':>9}{'eval s':>8}{'peak GB':>9}  alternatives")
    for dataset in args.datasets:
        ds, _ = prepare(config, dataset, dedupe=False)
        for method in args.methods:
            if args.profile is not None:
                print(f"{dataset} {method}")
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method,
                        "device": device,
                        **profile_round(ds, method, config, args.profile),
                    }
                )
                continue
            per_round, eval_s = bench_engine(ds, method, config, args.rounds)
            row = {
                "dataset": dataset,
                "method": method,
                "device": device,
                "seconds_per_round": per_round,
                "eval_seconds_per_round": eval_s,
                "peak_rss_gb": peak_rss_gb(),
            }
            if device == "cuda":
                row["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024**3
            extra = ""
            row["kernels"] = config["training"]["kernels"]
            if args.compare and method in ("fedmf", "local", "fedem"):
                for other in args.kernels:
                    if other != row["kernels"]:
                        row[f"{other}_kernels_seconds_per_round"], _ = bench_engine(
                            ds, method, config, args.rounds, other
                        )
                        extra += f"{other} {row[f'{other}_kernels_seconds_per_round']:.2f}s  "
                if method == "local":
                    row["per_client_loop_seconds_per_round"] = bench_reference(ds, method, config)
                    extra += f"per-client loop {row['per_client_loop_seconds_per_round']:.1f}s"
            rows.append(row)
            print(
                f"{dataset:<13}{method:<11}{per_round:>9.3f}{eval_s:>8.3f}{row['peak_rss_gb']:>9.2f}  {extra}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
