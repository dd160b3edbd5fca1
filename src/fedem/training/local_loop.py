"""The multi-client local-training loop: lockstep steps over a RoundPlan with the authors'
per-client early stop (running epoch loss, counters never reset between epochs)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedem.training.schedule import RoundPlan, StepBatch

# step_fn(k, batch, active) -> per-client mean batch loss [C_k]; active [C_k] bool marks clients
# that have not stopped early (the others must not change).
StepFn = Callable[[int, StepBatch, torch.Tensor], torch.Tensor]


def run_local_training(plan: RoundPlan, threshold: float, step_fn: StepFn) -> torch.Tensor:
    """Runs every step of the plan; returns each client's final running loss [C] (float64),
    the value the authors' code reports as the client's training loss."""
    C = plan.num_clients
    device = plan.steps[0].rows.device if plan.steps else torch.device("cpu")
    loss_sum = torch.zeros(C, dtype=torch.float64, device=device)
    sample_sum = torch.zeros(C, dtype=torch.float64, device=device)
    prev_avg = torch.zeros(C, dtype=torch.float64, device=device)
    stopped = torch.zeros(C, dtype=torch.bool, device=device)
    bpe = plan.batches_per_epoch.to(device)
    for k, batch in enumerate(plan.steps):
        ck = plan.active_counts[k]
        active = ~stopped[:ck]
        losses = step_fn(k, batch, active)
        if not torch.isfinite(losses[active]).all():
            raise FloatingPointError(f"non-finite training loss at local step {k}")
        act = active.to(torch.float64)
        loss_sum[:ck] += losses.double() * batch.count.double() * act
        sample_sum[:ck] += batch.count.double() * act
        ends = active & ((k + 1) % bpe[:ck] == 0)
        if bool(ends.any()):
            avg = loss_sum[:ck] / sample_sum[:ck]
            epoch = (k + 1) // bpe[:ck] - 1
            prev = prev_avg[:ck]
            rel = (avg - prev).abs() / (prev + 1e-5).abs()
            stop_now = ends & (epoch > 0) & (rel < threshold)
            prev_avg[:ck] = torch.where(ends, avg, prev)
            stopped[:ck] |= stop_now
        if k + 1 < len(plan.steps) and bool(stopped[: plan.active_counts[k + 1]].all()):
            break
    return loss_sum / sample_sum
