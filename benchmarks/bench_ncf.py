"""The NCF tower's forward and backward at a training step's shape: the concatenated input
(`backbones.NCF`) against the split first layer (`ncf_tower.SplitNCF`, what fedncf and gpfedrec run).

    python benchmarks/bench_ncf.py --clients 900 --batch 256 --repeats 20

Prints the median seconds of one step (forward, backward of the summed logits) for each, 1 thread by
default, and the largest difference of their logits."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedem.training.backbones import NCF, init_linear_stack
from fedem.training.ncf_tower import SplitNCF


def step_seconds(backbone, inputs, repeats):
    times = []
    for _ in range(repeats + 1):
        leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
        start = time.perf_counter()
        torch.autograd.grad(backbone.logits(leaves).sum(), list(leaves.values()))
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=900)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--layers", type=int, nargs="+", default=[32, 16, 8, 1], help="hidden sizes after 2*dim")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers = [2 * args.dim, *args.layers]
    gen = torch.Generator().manual_seed(0)
    names = NCF(layers).mlp_names
    tower = init_linear_stack(layers, 0, "init-mlp")
    inputs = {
        "user": torch.randn(args.clients, args.dim, generator=gen),
        "items": torch.randn(args.clients, args.batch, args.dim, generator=gen),
        **{n: t.expand((args.clients,) + t.shape).clone() for n, t in zip(names, tower)},
    }
    for label, backbone in (("concat (NCF)", NCF(layers)), ("split (SplitNCF)", SplitNCF(layers))):
        print(f"{label:18s} {step_seconds(backbone, inputs, args.repeats) * 1e3:8.1f} ms per step")
    diff = (NCF(layers).logits(inputs) - SplitNCF(layers).logits(inputs)).abs().max().item()
    print(f"max |logit difference| {diff:.2e}")


if __name__ == "__main__":
    main()
