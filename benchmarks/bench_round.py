"""Seconds per federated round and peak memory, per (dataset, method), on whatever device is here.

    python benchmarks/bench_round.py --datasets ml-100k filmtrust --methods fedem fedmf local --rounds 6

Reports the median over rounds after the first (which pays one-off costs: torch.compile, caches).
A round = waiting for its prefetched data + local training of every client + the server step
(the `round_seconds` of a run); evaluation is timed separately. Alternatives in the same table:
`--compare` adds the engine with eager kernels (training.compiled_kernels=false), and the per-client reference loop
(tests/reference.py, the authors' structure) timed on a sample of clients and scaled up."""

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


def bench_engine(ds, method, config, rounds, compiled=True):
    from fedem.config import run_config
    from fedem.engine.federation import run_federation

    rc = run_config(config, "authors", method)
    rc["training"]["rounds"] = rounds
    rc["training"]["compiled_kernels"] = compiled
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
    from reference import Reference, train_client

    from fedem.batching import make_round_samples
    from fedem.config import run_config
    from fedem.data.negatives import TrainNegativeSampler
    from fedem.methods.fcf import init_fcf

    rc = run_config(config, "authors", method)
    tr = rc["training"]
    items, user = init_fcf(ds.num_items, tr["latent_dim"], 0)
    neg = TrainNegativeSampler(ds, "unobserved", tr["num_negatives"]).sample(0, 0)
    samples = make_round_samples(ds.train_indptr, ds.train_items, neg, tr["local_epochs"], tr["batch_size"], 0, 0,
                                 torch.device("cpu"))
    picked = torch.arange(0, ds.num_users, max(1, ds.num_users // clients))
    plan = samples.plan(picked)
    ref = Reference("local", ds, rc, 0, items, user)
    start = time.perf_counter()
    for rank, client in enumerate(plan.clients.tolist()):
        ref.models[client].item_embeddings.weight.data.copy_(items)
        train_client(ref.models[client], plan.client_batches(rank), rc["method"]["lr_embedding"], None,
                     int(plan.batches_per_epoch[rank]), tr["early_stop_threshold"])
    elapsed = time.perf_counter() - start
    share = float(plan.sample_counts.sum()) / float(samples.counts.sum())
    return elapsed / share


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "filmtrust"])
    parser.add_argument("--methods", nargs="+", default=["fedem", "fedmf", "local", "neg-count"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also time eager kernels and the per-client loop")
    parser.add_argument("--json", type=Path, help="write the table as JSON too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fedem.config import load_config
    from fedem.data.pipeline import prepare

    config = load_config(REPO / "config" / "config.yaml")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    print(f"device={device} threads={args.threads} torch={torch.__version__}")
    print(f"{'dataset':<13}{'method':<11}{'s/round':>9}{'eval s':>8}{'peak GB':>9}  alternatives")
    for dataset in args.datasets:
        ds, _ = prepare(config, dataset, dedupe=False)
        for method in args.methods:
            per_round, eval_s = bench_engine(ds, method, config, args.rounds)
            row = {"dataset": dataset, "method": method, "device": device, "seconds_per_round": per_round,
                   "eval_seconds_per_round": eval_s, "peak_rss_gb": peak_rss_gb()}
            if device == "cuda":
                row["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1024**3
            extra = ""
            if args.compare and method in ("fedmf", "local", "fedem"):
                row["eager_kernels_seconds_per_round"], _ = bench_engine(ds, method, config, args.rounds, compiled=False)
                extra += f"eager {row['eager_kernels_seconds_per_round']:.2f}s  "
                if method == "local":
                    row["per_client_loop_seconds_per_round"] = bench_reference(ds, method, config)
                    extra += f"per-client loop {row['per_client_loop_seconds_per_round']:.1f}s"
            rows.append(row)
            print(f"{dataset:<13}{method:<11}{per_round:>9.3f}{eval_s:>8.3f}{row['peak_rss_gb']:>9.2f}  {extra}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
