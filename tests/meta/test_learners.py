"""Meta-learners: ProtoNet against a hand computation, MAML's second-order meta-gradient against plain
autograd, first-order MAML's against its definition, Meta-SGD's learned rates, Reptile's direction, and the
contract every registered learner keeps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.table import TableViews
from selfmeta.encoders import Backbone, Normalize, build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.meta import METALEARNERS, batch_statistics
from selfmeta.meta.maml import HEAD_B, HEAD_W

D = 6
SPEC = EpisodeSpec(ways=3, shots=2, queries=2)


def learner(name: str, spec: EpisodeSpec = SPEC, **options):
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (D,), "table", widths=(8,))
    backbone = Backbone(Normalize(torch.zeros(1, D), torch.ones(1, D)), encoder).double()
    views = TableViews((D,), mean=torch.zeros(D), std=torch.ones(D))
    return METALEARNERS.get(name)(backbone, views, spec, **options).double()


def episodes(tasks: int = 4, spec: EpisodeSpec = SPEC) -> torch.Tensor:
    """(T * N * (K+Q), D) items in episode layout: class n of every task lies around its own centre."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(tasks, spec.ways, 1, D, generator=g, dtype=torch.float64) * 2
    x = centres + 0.3 * torch.randn(tasks, spec.ways, spec.per_class, D, generator=g, dtype=torch.float64)
    return x.reshape(-1, D)


# --- ProtoNet ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_protonet_loss_against_a_hand_computation(distance):
    model = learner("protonet", distance=distance, scale=7.0)
    x = episodes()
    out = model(x, torch.arange(len(x)))
    with torch.no_grad():
        feats = model.backbone(x).view(4, SPEC.ways, SPEC.per_class, -1)  # the same batch: same BN statistics
    losses, correct = [], 0
    for t in range(4):
        protos = [feats[t, n, : SPEC.shots].mean(0) for n in range(SPEC.ways)]
        for n in range(SPEC.ways):
            for q in range(SPEC.shots, SPEC.per_class):
                f = feats[t, n, q]
                if distance == "euclidean":
                    logits = torch.stack([-((f - p) ** 2).sum() for p in protos])
                else:
                    logits = torch.stack([7.0 * F.cosine_similarity(f, p, dim=0) for p in protos])
                losses.append(-torch.log_softmax(logits, 0)[n])
                correct += int(logits.argmax() == n)
    assert out.loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6)
    assert out.logs["accuracy"] == pytest.approx(correct / len(losses))


# --- MAML family: a plain-autograd reference -------------------------------------------------------------------

def reference_meta_gradient(model, x, steps, lr, first_order, rates=None):
    """Loop over tasks; inner SGD with torch.autograd.grad(create_graph=not first_order); mean query loss."""
    params = dict(model.backbone.named_parameters())
    buffers = dict(model.backbone.named_buffers())
    support, query = SPEC.split(x)
    s_y, q_y = SPEC.labels()
    losses = []
    with batch_statistics(model.backbone):
        for t in range(support.shape[0]):
            fast = {**params, HEAD_W: torch.zeros(SPEC.ways, 8, dtype=x.dtype), HEAD_B: torch.zeros(SPEC.ways, dtype=x.dtype)}
            fast[HEAD_W].requires_grad_(True)
            fast[HEAD_B].requires_grad_(True)

            def logits(w, inputs):
                body = {k: v for k, v in w.items() if k not in (HEAD_W, HEAD_B)}
                return functional_call(model.backbone, {**body, **buffers}, (inputs,)) @ w[HEAD_W].T + w[HEAD_B]

            for _ in range(steps):
                names = list(fast)
                grads = torch.autograd.grad(F.cross_entropy(logits(fast, support[t]), s_y), [fast[k] for k in names],
                                            create_graph=not first_order)
                step = {k: (rates[k] if rates else lr) for k in names}
                fast = {k: fast[k] - step[k] * (g.detach() if first_order else g) for k, g in zip(names, grads)}
            losses.append(F.cross_entropy(logits(fast, query[t]), q_y))
    loss = torch.stack(losses).mean()
    return loss, torch.autograd.grad(loss, list(params.values()))


def meta_gradient(model, x):
    out = model(x, torch.arange(len(x)))
    return out.loss, torch.autograd.grad(out.loss, list(model.backbone.parameters()))


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_second_order_meta_gradient_matches_plain_autograd(steps):
    model = learner("maml", inner_steps=steps, inner_lr=0.3)
    x = episodes()
    loss, grads = meta_gradient(model, x)
    ref_loss, ref_grads = reference_meta_gradient(model, x, steps, 0.3, first_order=False)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_maml_meta_gradient_matches_finite_differences():
    model = learner("maml", inner_steps=2, inner_lr=0.3)
    x = episodes(tasks=2)
    _, grads = meta_gradient(model, x)
    weight = model.backbone.encoder.body[1].weight  # a linear layer's weight
    index = list(model.backbone.parameters()).index(weight)
    eps = 1e-6
    for i, j in [(0, 0), (3, 2), (7, 5)]:
        with torch.no_grad():
            weight[i, j] += eps
            up = model(x, None).loss.item()
            weight[i, j] -= 2 * eps
            down = model(x, None).loss.item()
            weight[i, j] += eps
        assert grads[index][i, j].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_first_order_maml_drops_the_second_order_terms():
    x = episodes()
    fo = learner("fomaml", inner_steps=3, inner_lr=0.3)
    _, grads = meta_gradient(fo, x)
    _, ref = reference_meta_gradient(fo, x, 3, 0.3, first_order=True)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)
    _, second = meta_gradient(learner("maml", inner_steps=3, inner_lr=0.3), x)
    # same loss value, different gradient: the terms through the inner gradients are gone
    differences = [float((a - b).abs().max()) for a, b in zip(grads, second)]
    assert max(differences) > 1e-4


def test_meta_sgd_learns_its_rates():
    model = learner("metasgd", inner_steps=2, inner_lr=0.3)
    x = episodes()
    out = model(x, torch.arange(len(x)))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rates.values())
    # at their initial values the rates give MAML's loss and gradient
    maml = learner("maml", inner_steps=2, inner_lr=0.3)
    assert out.loss.item() == pytest.approx(maml(x, None).loss.item(), rel=1e-6)  # rates made in float32
    with torch.no_grad():
        for p in model.rates.values():
            p.mul_(torch.rand_like(p) + 0.5)
    rates = {k.replace("__", "."): v for k, v in model.rates.items()}
    loss, grads = meta_gradient(model, x)
    ref_loss, ref_grads = reference_meta_gradient(model, x, 2, None, False, rates)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_reptile_gradient_is_theta_minus_the_mean_adapted_weights():
    model = learner("reptile", inner_steps=3, inner_lr=0.2)
    x = episodes()
    out = model(x, torch.arange(len(x)))
    grads = torch.autograd.grad(out.loss, list(model.backbone.parameters()))
    params = dict(model.backbone.named_parameters())
    buffers = dict(model.backbone.named_buffers())
    tasks = x.view(4, SPEC.size, D)
    y = torch.arange(SPEC.ways).repeat_interleave(SPEC.per_class)
    adapted = []
    with batch_statistics(model.backbone):
        for t in range(4):
            fast = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            w = torch.zeros(SPEC.ways, 8, dtype=x.dtype, requires_grad=True)
            b = torch.zeros(SPEC.ways, dtype=x.dtype, requires_grad=True)
            for _ in range(3):
                loss = F.cross_entropy(functional_call(model.backbone, {**fast, **buffers}, (tasks[t],)) @ w.T + b, y)
                g = torch.autograd.grad(loss, [*fast.values(), w, b])
                fast = {k: (v - 0.2 * gk).detach().requires_grad_(True) for (k, v), gk in zip(fast.items(), g)}
                w, b = (w - 0.2 * g[-2]).detach().requires_grad_(True), (b - 0.2 * g[-1]).detach().requires_grad_(True)
            adapted.append(fast)
    for (k, p), g in zip(params.items(), grads):
        mean_phi = torch.stack([a[k] for a in adapted]).mean(0)
        torch.testing.assert_close(g, (p - mean_phi).detach(), rtol=1e-8, atol=1e-10)


# --- the contract of every registered learner -------------------------------------------------------------------

PAIRS = EpisodeSpec(ways=3, shots=1, queries=1)  # learners that train on two views per item
CONTRACT = {"psco": (PAIRS, {"queue_size": 48, "support_shots": 2}),
            "memory": (SPEC, {"margin": 1.0})}  # (the toy classes meet the paper's margin of 0.1 at once: no loss)


@pytest.mark.parametrize("name", METALEARNERS.names())
def test_contract(name):
    spec, options = CONTRACT.get(name, (SPEC, {}))
    model = learner(name, spec, **options)
    x = episodes(spec=spec)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = model(x, torch.arange(len(x)))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert all(isinstance(v, float) for v in out.logs.values())
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    # adapting to a new task, with another number of ways than training used
    spec = EpisodeSpec(ways=4, shots=2, queries=3)
    support, query = spec.split(episodes(tasks=2, spec=spec))
    s_y, q_y = spec.labels()
    model.eval()
    logits = model.adapt_predict(support, s_y, query)
    assert logits.shape == (2, 12, 4) and torch.isfinite(logits).all()
    assert METALEARNERS.get(name).paper and METALEARNERS.get(name).description


def test_option_errors():
    from selfmeta.engine.config import TrainConfig

    for name, bad, message in [("protonet", {"distance": "manhattan"}, "distance takes one of: euclidean, cosine"),
                               ("maml", {"inner_steps": 0}, "inner_steps takes an integer >= 1, got 0"),
                               ("maml", {"inner_lr": -1.0}, "inner_lr takes a number > 0"),
                               ("triplet", {"mining": "all"}, "mining takes one of: batch_hard, semi_hard"),
                               ("contrastive", {"margin": 0}, "margin takes a number > 0"),
                               ("reptile", {"eval_steps": 2.5}, "eval_steps takes null or an integer >= 1")]:
        with pytest.raises(SelfmetaError, match=f"meta-learner '{name}' option {message}"):
            TrainConfig(method=name, tasks="labels", steps=1, method_options=bad)
