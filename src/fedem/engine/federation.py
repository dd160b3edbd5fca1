"""One federated run: rounds of (negatives -> local training + server step -> evaluation)."""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from fedem.data.dataset import FederatedDataset
from fedem.data.negatives import TrainNegativeSampler
from fedem.engine.evaluation import Evaluator
from fedem.engine.selection import selection_blocks
from fedem.errors import ConfigError, TrainingError
from fedem.methods import get_method
from fedem.methods.base import Method, MethodContext
from fedem.training.schedule import make_round_samples

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def _round_entry(t, losses, method, method_key, evaluator, full_ranking) -> dict:
    finite = losses[~torch.isnan(losses)]
    train_loss = float(finite.mean()) if finite.numel() else None
    if train_loss is not None and not math.isfinite(train_loss):
        raise TrainingError(f"method '{method_key}' produced a non-finite loss in round {t}")
    entry = {
        "round": t,
        "train_loss": train_loss,
        "val": evaluator.sampled(method, "val"),
        "test": evaluator.sampled(method, "test"),
    }
    if full_ranking:
        entry["test_full_ranking"] = evaluator.full(method, "test")
    return entry


def run_federation(
    dataset: FederatedDataset,
    method_key: str,
    run_config: dict,
    seed: int,
    progress: bool = True,
) -> dict:
    """Trains and evaluates one (dataset, method, seed); returns the result body (no provenance)."""
    tr = run_config["training"]
    device = resolve_device(tr["device"])
    method_cls = get_method(run_config["method"]["base"])
    torch.manual_seed(0)  # nothing should draw from it; pinned so a stray draw is still deterministic
    method = method_cls(MethodContext(dataset=dataset, config=run_config, seed=seed, device=device))
    sampler = TrainNegativeSampler(dataset, run_config["protocol"]["train_negatives_from"], tr["num_negatives"])
    evaluator = Evaluator(dataset, device, tr["eval_ks"])
    needs_samples = getattr(method_cls, "needs_samples", True)
    probing = run_config["probe"]["enabled"]
    if probing and method_cls.probe_round is Method.probe_round:
        raise ConfigError(f"probe.enabled: method '{method_key}' has no aggregation probe (fedem has)")
    probe_records: list[dict] = []

    def prepare_round(t: int):
        """Everything of round t that depends only on (seed, t): negatives, samples, schedules."""
        negatives = sampler.sample(seed, t)
        if not needs_samples:
            return negatives, None
        samples = make_round_samples(
            dataset.train_indptr, dataset.train_items, negatives, tr["local_epochs"], tr["batch_size"], seed, t, device
        )
        method.prefetch(t, samples)
        return negatives, samples

    rounds = []
    round_seconds = []
    bar = tqdm(range(tr["rounds"]), desc=f"{method_key}", unit="round", disable=not progress, leave=False)
    # round t+1's data is built on a second thread while round t trains (torch ops release the GIL)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedem-prefetch") as prefetch:
        upcoming = prefetch.submit(prepare_round, 0)
        for t in bar:
            start = time.perf_counter()  # a round's time includes any wait for its data
            negatives, samples = upcoming.result()
            if t + 1 < tr["rounds"]:
                upcoming = prefetch.submit(prepare_round, t + 1)
            try:
                losses = method.train_round(t, samples, negatives)
            except FloatingPointError as exc:
                raise TrainingError(f"method '{method_key}' diverged in round {t}: {exc}") from exc
            round_seconds.append(time.perf_counter() - start)
            if probing:
                probe_records.extend(method.probe_round(t, evaluator.probe_items))
            try:
                rounds.append(_round_entry(t, losses, method, method_key, evaluator, tr["full_ranking"]))
            except FloatingPointError as exc:
                raise TrainingError(f"method '{method_key}' diverged in round {t}: {exc}") from exc
            bar.set_postfix(val_hr10=f"{rounds[-1]['val']['hr@10']:.4f}")
    body = {
        "rounds": rounds,
        **selection_blocks(rounds, tr["selection_metric"]),
        "device": str(device),
        "round_seconds": round_seconds,
        "probe_records": probe_records if probing else None,
    }
    return body
