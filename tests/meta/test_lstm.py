"""The LSTM meta-learner: SGD at its initial gates, the gradient preprocessing against its definition, the
meta-gradient's reach, encoder adaptation, and its option errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.encoders import Backbone, Normalize, build_encoder
from selfmeta.errors import SelfmetaError
from selfmeta.meta import METALEARNERS, batch_statistics
from selfmeta.meta.lstm import preprocess
from selfmeta.meta.maml import HEAD_B, HEAD_W
from selfmeta.modalities.table import TableViews

D = 6
SPEC = EpisodeSpec(ways=3, shots=2, queries=2)


def learner(name: str = "lstm", **options):
    torch.manual_seed(0)
    encoder = build_encoder("mlp", (D,), "table", widths=(8,))
    backbone = Backbone(Normalize(torch.zeros(1, D), torch.ones(1, D)), encoder).double()
    views = TableViews((D,), mean=torch.zeros(D), std=torch.ones(D))
    return METALEARNERS.get(name)(backbone, views, SPEC, **options).double()


def episodes(tasks: int = 4) -> torch.Tensor:
    """(T * N * (K+Q), D) items in episode layout: class n of every task lies around its own centre."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(tasks, SPEC.ways, 1, D, generator=g, dtype=torch.float64) * 2
    x = centres + 0.3 * torch.randn(tasks, SPEC.ways, SPEC.per_class, D, generator=g, dtype=torch.float64)
    return x.reshape(-1, D)


def adapted(model, steps: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The initial weights and one task's weights after ``steps`` inner steps."""
    support, _ = SPEC.split(episodes())
    params = dict(model.backbone.named_parameters())
    with batch_statistics(model.backbone):
        return params, model.adapt(params, support[0], SPEC.labels()[0], SPEC.ways, steps, first_order=True)


def test_initial_gates_take_sgd_steps():
    model = learner(inner_lr=0.1)
    params, fast = adapted(model, steps=4)
    assert all(fast[k] is p for k, p in params.items())  # the body stays fixed in the inner loop
    support, _ = SPEC.split(episodes())
    with torch.no_grad(), batch_statistics(model.backbone):
        feats = model.backbone(support[0])                                  # (N*K, F), the same batch statistics
    forget, rate = torch.sigmoid(model.forget.bias).item(), torch.sigmoid(model.input.bias).item()
    assert rate == pytest.approx(0.1, rel=1e-6)                             # b_i made in float32

    def sgd(decay: float, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.zeros(SPEC.ways, feats.shape[1], dtype=feats.dtype, requires_grad=True)
        b = torch.zeros(SPEC.ways, dtype=feats.dtype, requires_grad=True)
        for _ in range(4):
            gw, gb = torch.autograd.grad(F.cross_entropy(feats @ w.T + b, SPEC.labels()[0]), [w, b])
            w, b = decay * w - lr * gw, decay * b - lr * gb
        return w, b

    w, b = sgd(forget, rate)  # exactly SGD with the forget gate's decay
    torch.testing.assert_close(fast[HEAD_W], w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast[HEAD_B], b, rtol=1e-12, atol=1e-14)
    w, b = sgd(1.0, 0.1)      # and plain SGD within the decay's 1 - sigmoid(8) = 3.4e-4 per step
    torch.testing.assert_close(fast[HEAD_W], w, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(fast[HEAD_B], b, rtol=2e-3, atol=1e-6)


def test_preprocessing_against_its_definition():
    values = [3.0, -2.5, 1e-3, -0.2, 1e-4, 5e-5, 4e-5, -1e-6, 1e-12, 0.0]  # e^-10 = 4.54e-5 separates the cases

    def definition(x: float) -> tuple[float, float]:
        if abs(x) >= math.exp(-10):
            return math.log(abs(x)) / 10, math.copysign(1.0, x)
        return -1.0, math.exp(10) * x

    out = preprocess(torch.tensor(values, dtype=torch.float64))
    assert out.shape == (len(values), 2)
    torch.testing.assert_close(out, torch.tensor([definition(v) for v in values], dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)


def test_meta_gradient_reaches_the_optimizer_the_head_init_and_the_encoder():
    model = learner(inner_steps=3)
    x = episodes()
    head = [model.head_weight, model.head_bias]
    # At initialization the gates ignore the weights, and a head init shared by all ways shifts every logit
    # equally: its meta-gradient is zero (the class docstring's point).
    loss = model(x, torch.arange(len(x))).loss
    assert all(g.abs().max() < 1e-12 for g in torch.autograd.grad(loss, head))
    with torch.no_grad():  # gates that read h, theta and the previous gate, as after some meta-training
        for gate in (model.forget, model.input):
            gate.weight.normal_(0, 0.3)
    loss = model(x, torch.arange(len(x))).loss
    optimizer = [*model.lstm.parameters(), *model.forget.parameters(), *model.input.parameters()]
    body = list(model.backbone.parameters())
    grads = torch.autograd.grad(loss, optimizer + head + body)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_adapt_encoder_updates_the_body_like_sgd():
    model = learner(inner_lr=0.2, adapt_encoder=True)
    params, fast = adapted(model, steps=3)
    assert all(not torch.equal(fast[k], p) for k, p in params.items())
    # at its initial gates: first-order MAML's SGD steps on every weight, within the forget gate's decay
    _, sgd = adapted(learner("fomaml", inner_lr=0.2), steps=3)
    for k, w in sgd.items():
        torch.testing.assert_close(fast[k], w, rtol=5e-3, atol=1e-5)  # 3 decays of 3.4e-4
    x = episodes()
    loss = model(x, torch.arange(len(x))).loss
    gates = [*model.forget.parameters(), *model.input.parameters()]  # the first layer's: zero, the gates ignore h
    grads = torch.autograd.grad(loss, gates + list(model.backbone.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


def test_adapt_predict_under_no_grad():
    model = learner(inner_steps=2, eval_steps=6).eval()
    support, query = SPEC.split(episodes(tasks=2))
    with torch.no_grad():
        logits = model.adapt_predict(support, SPEC.labels()[0], query)
    assert logits.shape == (2, SPEC.ways * SPEC.queries, SPEC.ways) and not logits.requires_grad
    accuracy = (logits.argmax(-1) == SPEC.labels()[1]).double().mean()
    assert accuracy > 1 / SPEC.ways  # separated classes: six SGD-like steps on the head fit them


def test_option_errors_are_one_line():
    from selfmeta.engine.config import TrainConfig

    for bad, message in [({"inner_lr": 1.0}, "inner_lr takes a number > 0 and < 1"),
                         ({"inner_lr": 0}, "inner_lr takes a number > 0 and < 1"),
                         ({"hidden": 0}, "hidden takes an integer >= 1, got 0"),
                         ({"eval_steps": 0}, "eval_steps takes null or an integer >= 1"),
                         ({"first_order": False}, "unknown option 'first_order'")]:
        with pytest.raises(SelfmetaError, match=message) as error:
            TrainConfig(method="lstm", tasks="labels", steps=1, method_options=bad)
        assert "\n" not in str(error.value)
    with pytest.raises(SelfmetaError, match=r"inner_lr, .* must lie in \(0, 1\), got 1.5") as error:
        learner(inner_lr=1.5)
    assert "\n" not in str(error.value)
