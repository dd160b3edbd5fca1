"""The client-training layer: the autograd path equals each fast path, and a method written here (its
own backbone, its own loss term, dense rows, SGD with weight decay and a per-step schedule) trains
through the unchanged engine and layer exactly as a per-client torch loop does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedem.engine import federation
from fedem.methods.adapter import MERGED_STEPS, MergedFCF, adapter_names, init_adapter
from fedem.methods.base import Method
from fedem.methods.merging import ElasticRule
from fedem.training.backbone import Backbone, ParamSpec
from fedem.training.backbones import FCF, NCF, ItemLinear, init_fcf, init_linear_stack
from fedem.training.optim import OptimizerSpec
from fedem.training.state import ClientState
from fedem.training.trainer import DENSE, train_clients

from conftest import round_data, tiny_run_config

ATOL = 1e-4
FAST_KERNELS = ["native", "compiled", "eager"]


def round_samples(ds, rc, seed=3, t=0):
    return round_data(ds, rc, seed, t)[1]


def fcf_round(ds):
    """A round's plan on the tiny dataset and the FCF clients' stacked state at their shared init."""
    plan = round_samples(ds, tiny_run_config("local")).plan()
    items, user = init_fcf(ds.num_items, 16, 3)
    return plan, FCF(items_shared=False), ClientState.from_template({"user": user, "items": items}, ds.num_users, "cpu")


def adam(lrs):
    return OptimizerSpec(name="adam", lrs=lrs)


def run(backbone, plan, tensors, optimizer, kernels, **kw):
    tensors = {k: v.clone() for k, v in tensors.items()}
    losses = train_clients(backbone, plan, tensors, optimizer, 0.05, kernels, **kw)
    return losses, tensors


def assert_same(a, b):
    (loss_a, ta), (loss_b, tb) = a, b
    torch.testing.assert_close(loss_a, loss_b, atol=ATOL, rtol=1e-4)
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kernels", FAST_KERNELS)
def test_fcf_fast_path_equals_autograd(tiny_dataset, kernels):
    plan, backbone, state = fcf_round(tiny_dataset)
    tensors = state.for_plan(plan, backbone)
    opt = adam({"embedding": 0.1})
    assert backbone.fast_path(kernels, torch.device("cpu"), opt, "pool", (("embedding",),)) is not None
    assert backbone.fast_path("autograd", torch.device("cpu"), opt, "pool", (("embedding",),)) is None
    assert_same(run(backbone, plan, tensors, opt, kernels), run(backbone, plan, tensors, opt, "autograd"))


@pytest.mark.parametrize("kernels", FAST_KERNELS)
def test_fedem_merged_fast_path_equals_autograd(tiny_dataset, kernels):
    ds = tiny_dataset
    rc = tiny_run_config("fedem")
    plan = round_samples(ds, rc).plan()
    layers = rc["method"]["adapter_layers"]
    items, user = init_fcf(ds.num_items, 16, 3)
    template = {"user": user, "items": items, **dict(zip(adapter_names(layers), init_adapter(layers, 3)))}
    backbone = MergedFCF(ElasticRule(layers))
    state = ClientState.from_template(template, ds.num_users, "cpu")
    tensors = state.for_plan(plan, backbone)
    # G_u a perturbed copy of L_u. With larger perturbations some positives saturate (p - 1 ~ 1e-8, near
    # Adam's eps, where the update lr*g/(|g|+eps) has slope lr/eps): the closed form rounds p - 1 a ulp
    # apart from torch's BCE backward, and Adam turns that into row differences up to lr (seen: 0.05 at
    # scale 0.5, for one row). The autograd path then still matches the per-client torch reference
    # (test_engine_reference, kernels=autograd), as it uses torch's own kernels.
    gen = torch.Generator().manual_seed(0)
    tensors["global_items"] = tensors["items"] + 0.1 * torch.randn(tensors["items"].shape, generator=gen)
    opt = adam({"embedding": 0.1, "adapter": 0.1})
    fast = run(backbone, plan, tensors, opt, kernels, step_groups=MERGED_STEPS)
    slow = run(backbone, plan, tensors, opt, "autograd", step_groups=MERGED_STEPS)
    torch.testing.assert_close(fast[0], slow[0], atol=ATOL, rtol=1e-4)
    for name in ("user", "items"):
        torch.testing.assert_close(fast[1][name], slow[1][name], atol=ATOL, rtol=1e-4, msg=name)
    for name in adapter_names(layers):  # see test_engine_reference: Adam amplifies 1e-12 gradient roundoff
        torch.testing.assert_close(fast[1][name], slow[1][name], atol=5e-3, rtol=1e-3, msg=name)


def test_dense_rows_equal_pool_rows_when_nothing_else_moves(tiny_dataset):
    """Without decay or extra terms only touched rows move: the dense layout gives the pool's numbers."""
    plan, backbone, state = fcf_round(tiny_dataset)
    pool_state, dense_state = copy.deepcopy(state), copy.deepcopy(state)
    for st, rows in ((pool_state, "pool"), (dense_state, DENSE)):
        tensors = st.for_plan(plan, backbone, rows=rows)
        train_clients(backbone, plan, tensors, adam({"embedding": 0.1}), 0.05, "autograd", rows=rows)
        st.write_back(plan, backbone, tensors, rows=rows)
    for name in ("user", "items"):
        torch.testing.assert_close(pool_state[name], dense_state[name], atol=ATOL, rtol=1e-4)


def test_pool_rows_refuse_what_moves_untouched_rows(tiny_dataset):
    from fedem.errors import ConfigError

    plan, backbone, state = fcf_round(tiny_dataset)
    tensors = state.for_plan(plan, backbone)
    decayed = OptimizerSpec(name="adam", lrs={"embedding": 0.1}, weight_decay={"embedding": 1e-3})
    with pytest.raises(ConfigError, match="weight decay on item rows"):
        train_clients(backbone, plan, tensors, decayed, 0.05, "autograd")


@pytest.mark.parametrize("backbone_name", ["ncf", "item-linear"])
def test_other_backbones_score_and_train(tiny_dataset, backbone_name):
    ds = tiny_dataset
    plan = round_samples(ds, tiny_run_config("local")).plan()
    items, user = init_fcf(ds.num_items, 16, 3)
    if backbone_name == "ncf":
        backbone = NCF([32, 32, 16, 8, 1])
        template = {
            "user": user,
            "items": items,
            **dict(zip(backbone.mlp_names, init_linear_stack([32, 32, 16, 8, 1], 3, "mlp"))),
        }
        opt = adam({"embedding": 0.1, "mlp": 0.01})
    else:
        backbone = ItemLinear()
        template = {"head.weight": user, "head.bias": torch.zeros(1), "items": items}
        opt = OptimizerSpec(name="sgd", lrs={"head": 0.1, "items": 0.5})
    state = ClientState.from_template(template, ds.num_users, "cpu")
    tensors = state.for_plan(plan, backbone)
    before = {k: v.clone() for k, v in tensors.items()}
    groups = None if backbone_name == "ncf" else (("head",), ("items",))
    losses = train_clients(backbone, plan, tensors, opt, 1e-4, "native", step_groups=groups)
    assert torch.isfinite(losses).all()
    assert all(not torch.equal(before[k], tensors[k]) for k in tensors)


# ---- a method written outside the package: its own backbone, loss term, dense rows, optimizer ------

LAMBDA = 0.05


class ToyBackbone(Backbone):
    """<p_u, q_i> + b_i with an L2 pull of the whole item table toward zero (a full-table term)."""

    specs = (ParamSpec("user"), ParamSpec("items", item_rows=True), ParamSpec("bias", item_rows=True))

    def logits(self, p):
        return torch.bmm(p["items"], p["user"].unsqueeze(2)).squeeze(2) + p["bias"].squeeze(-1)

    def extra_loss(self, p):
        return LAMBDA * p["items"].pow(2).mean(dim=(1, 2))


TOY_OPT = OptimizerSpec(name="sgd", lrs={"embedding": 0.5}, weight_decay={"embedding": 1e-3}, step_decay=0.97)


class Toy(Method):
    name = "toy"

    def __init__(self, ctx):
        super().__init__(ctx)
        items, user = init_fcf(self.num_items, ctx.training["latent_dim"], ctx.seed)
        self.backbone = ToyBackbone()
        self.state = ClientState.from_template(
            {"user": user, "items": items, "bias": torch.zeros(self.num_items, 1)}, self.num_users, self.device
        )

    def train_round(self, round_index, samples, negatives):
        plan = samples.plan()
        tensors = self.state.for_plan(plan, self.backbone, rows=DENSE)
        losses = train_clients(
            self.backbone,
            plan,
            tensors,
            TOY_OPT,
            self.ctx.training["early_stop_threshold"],
            self.ctx.training["kernels"],
            rows=DENSE,
        )
        self.state.write_back(plan, self.backbone, tensors, rows=DENSE)
        out = torch.empty(self.num_users, dtype=torch.float64)
        out[plan.clients] = losses
        return out

    def _logits(self, users, items):
        st = self.state
        p = {
            "user": st["user"][users],
            "items": st["items"][users.unsqueeze(1), items],
            "bias": st["bias"][users.unsqueeze(1), items],
        }
        return self.backbone.logits(p)

    def score(self, users, items):
        return torch.sigmoid(self._logits(users, items))

    def score_all(self, users):
        items = torch.arange(self.num_items).expand(len(users), -1)
        return self.score(users, items)


def toy_reference(ds, rc, seed):
    """One torch model and one torch.optim.SGD (+ ExponentialLR stepped per batch) per client and round."""
    tr = rc["training"]
    items, user = init_fcf(ds.num_items, tr["latent_dim"], seed)
    models = [
        {"user": user.clone(), "items": items.clone(), "bias": torch.zeros(ds.num_items, 1)}
        for _ in range(ds.num_users)
    ]
    crit = torch.nn.BCELoss()
    for t in range(tr["rounds"]):
        plan = round_samples(ds, rc, seed, t).plan()
        for rank, client in enumerate(plan.clients.tolist()):
            params = {k: v.clone().requires_grad_() for k, v in models[client].items()}
            opt = torch.optim.SGD(list(params.values()), lr=0.5, weight_decay=1e-3)
            sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.97)
            batches, bpe = plan.client_batches(rank), int(plan.batches_per_epoch[rank])
            loss_sum, n_sum, history = 0.0, 0, []
            for epoch in range(len(batches) // bpe):
                for items_b, labels in batches[epoch * bpe : (epoch + 1) * bpe]:
                    opt.zero_grad()
                    logit = params["items"][items_b] @ params["user"] + params["bias"][items_b].squeeze(-1)
                    loss = crit(torch.sigmoid(logit), labels) + LAMBDA * params["items"].pow(2).mean()
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += loss.item() * len(items_b)
                    n_sum += len(items_b)
                history.append(loss_sum / n_sum)
                if epoch > 0 and abs(history[-1] - history[-2]) / abs(history[-2] + 1e-5) < tr["early_stop_threshold"]:
                    break
            models[client] = {k: v.detach() for k, v in params.items()}
    return models


def test_a_method_written_outside_the_package_trains_through_the_unchanged_engine(tiny_dataset, monkeypatch):
    ds = tiny_dataset
    rc = tiny_run_config("local", early_stop_threshold=0.05, kernels="native")
    rc["method"] = {"base": "toy"}
    created = []

    def get_toy(key):
        assert key == "toy"

        class Recorded(Toy):
            def __init__(self, ctx):
                super().__init__(ctx)
                created.append(self)

        return Recorded

    monkeypatch.setattr(federation, "get_method", get_toy)
    body = federation.run_federation(ds, "toy", rc, seed=3, progress=False)
    assert len(body["rounds"]) == rc["training"]["rounds"] and body["selected"]["test"]["hr@10"] >= 0
    engine = created[0]
    ref = toy_reference(ds, rc, seed=3)
    for u in range(ds.num_users):
        for name in ("user", "items", "bias"):
            torch.testing.assert_close(engine.state[name][u], ref[u][name], atol=ATOL, rtol=1e-4, msg=f"{name} of {u}")
    untouched = np.setdiff1d(np.arange(ds.num_items), ds.user_train_items(0))
    assert not torch.equal(engine.state["items"][0, untouched[0]], init_fcf(ds.num_items, 16, 3)[0][untouched[0]])


@pytest.mark.parametrize("layers", [[8, 1], [8, 6, 3, 1]])
def test_split_ncf_equals_the_concatenated_tower(layers):
    """SplitNCF (fedncf's and gpfedrec's tower) computes NCF's function on concat(p_u, q_i): the same
    logits and the same gradient for every parameter, up to float rounding."""
    from fedem.training.ncf_tower import SplitNCF

    gen = torch.Generator().manual_seed(5)
    clients, batch, d = 3, 7, layers[0] // 2
    tower = [t.expand((clients,) + t.shape).clone() for t in init_linear_stack(layers, 0, "init-mlp")]
    names = NCF(layers).mlp_names
    inputs = {"user": torch.randn(clients, d, generator=gen), "items": torch.randn(clients, batch, d, generator=gen)}
    inputs.update({n: t + 0.1 * torch.randn(t.shape, generator=gen) for n, t in zip(names, tower)})
    outputs = []
    for backbone in (NCF(layers), SplitNCF(layers)):
        leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
        logits = backbone.logits(leaves)
        grads = torch.autograd.grad((logits * torch.arange(batch)).sum(), list(leaves.values()))
        outputs.append((logits, grads))
    (concat, concat_grads), (split, split_grads) = outputs
    assert concat.shape == split.shape == (clients, batch)
    torch.testing.assert_close(split, concat, rtol=0, atol=1e-5)
    for name, a, b in zip(inputs, split_grads, concat_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
