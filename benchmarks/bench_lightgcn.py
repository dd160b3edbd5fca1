"""LightGCN's propagation with its backward (what every training batch pays): torch's own sparse CSR
autograd against `lightgcn.propagate` (the symmetric product, which reuses A for the backward), on a
dataset's real training graph.

    python benchmarks/bench_lightgcn.py --dataset ml-100k --repeats 30

Prints the median milliseconds of one forward + backward for each, 1 thread by default, and whether
their gradients are bit-identical."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedem.methods.lightgcn import normalised_adjacency, propagate


def builtin_propagate(adjacency, ego, layers):
    out, h = ego, ego
    for _ in range(layers):
        h = adjacency @ h  # torch's CSR autograd: A^T is rebuilt in every backward
        out = out + h
    return out / (layers + 1)


def grad_and_ms(prop, adjacency, ego, weights, layers, repeats):
    times = []
    for _ in range(repeats + 1):
        leaf = ego.clone().requires_grad_()
        start = time.perf_counter()
        (prop(adjacency, leaf, layers) * weights).sum().backward()
        times.append(time.perf_counter() - start)
    return leaf.grad, 1e3 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--protocol", default="authors")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fedem.config import load_config
    from fedem.data.pipeline import prepare

    ds, _ = prepare(load_config(), args.dataset, dedupe=args.protocol == "clean")
    adjacency = normalised_adjacency(ds.train_users, ds.train_items, ds.num_users, ds.num_items)
    gen = torch.Generator().manual_seed(0)
    ego = torch.randn(ds.num_users + ds.num_items, args.dim, generator=gen)
    weights = torch.randn(ego.shape, generator=gen)
    results = {
        name: grad_and_ms(prop, adjacency, ego, weights, args.layers, args.repeats)
        for name, prop in (("torch CSR autograd", builtin_propagate), ("symmetric product", propagate))
    }
    print(
        f"{args.dataset}: {ds.num_users} users + {ds.num_items} items, nnz {adjacency.values().numel()}, "
        f"d={args.dim}, {args.layers} layers, {args.threads} thread(s)"
    )
    for name, (_, ms) in results.items():
        print(f"  {name:20s} {ms:8.2f} ms per forward + backward")
    (g0, _), (g1, _) = results.values()
    print(f"  gradients bit-identical: {torch.equal(g0, g1)}")


if __name__ == "__main__":
    main()
