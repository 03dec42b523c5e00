"""Generated classifiers: LEO's meta-gradient through its latent inner loop (against finite differences), its
regularizers against hand computations, VERSA's loss against a slow loop over draws, any number of ways, and
the refusal of an empty latent code."""

from __future__ import annotations

import math

import pytest
import torch
from test_learners import SPEC, episodes, learner

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.errors import SelfmetaError
from selfmeta.meta.generated import (
    episode_features,
    gaussian_kl,
    orthogonality_penalty,
    task_cross_entropy,
)

D, T = 6, 4  # the items' size and the tasks of test_learners.episodes()


def grads_of(model, x, modules):
    model.zero_grad()
    model(x, torch.arange(len(x))).loss.backward()
    return {name: [p.grad.clone() for p in getattr(model, name).parameters()] for name in modules}


# --- LEO -----------------------------------------------------------------------------------------------------------

def test_leo_trains_encoder_relation_and_decoder_through_the_latent_loop():
    x = episodes()
    model = learner("leo", latent=4, inner_steps=3, inner_lr=0.5, finetune_steps=2)
    grads = grads_of(model, x, ("encoder", "relation", "decoder"))  # training mode: sampled codes and weights
    for name, gs in grads.items():
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in gs), name
    assert model.inner_lr.grad.abs() > 0 and model.finetune_lr.grad.abs() > 0
    # deterministic (eval: the means) with and without the latent steps: the loop changes the meta-gradient
    model.eval()
    with_steps = grads_of(model, x, ("decoder",))["decoder"][0]
    model.inner_steps = 0
    without = grads_of(model, x, ("decoder",))["decoder"][0]
    assert (with_steps - without).abs().max() > 1e-6


def test_leo_meta_gradient_matches_finite_differences():
    """The exact meta-gradient (second order through both loops) of every generator part."""
    x = episodes(tasks=2)
    model = learner("leo", latent=4, inner_steps=3, inner_lr=0.5, finetune_steps=2, finetune_lr=0.1).eval()
    for param in (model.decoder.weight, model.encoder.weight, model.relation[0].weight, model.inner_lr):
        model.zero_grad()
        model(x, None).loss.backward()
        grad = param.grad.clone()
        eps = 1e-6
        for i in [()] if param.ndim == 0 else [(0, 0), (2, 1), (3, 3)]:
            with torch.no_grad():
                param[i] += eps
                up = model(x, None).loss.item()
                param[i] -= 2 * eps
                down = model(x, None).loss.item()
                param[i] += eps
            assert grad[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_leo_latent_loop_lowers_the_support_loss():
    model = learner("leo", latent=4, inner_steps=5, inner_lr=0.5, finetune_steps=0).eval()
    support, query = SPEC.split(episodes())
    s_y, _ = SPEC.labels()
    with torch.no_grad():
        s_feat, _ = episode_features(model.backbone, support, query, torch.float64)
    with torch.enable_grad():
        weights, z_init, z, _, _ = model.adapt(s_feat, s_y, SPEC.ways, create_graph=False)
    before = task_cross_entropy(s_feat, model.decode(z_init), s_y)
    after = task_cross_entropy(s_feat, weights, s_y)
    assert (after < before).all(), (before, after)
    assert not torch.equal(z, z_init)


def test_gaussian_kl_against_a_hand_computation():
    mean = torch.tensor([[0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
    std = torch.tensor([[2.0, 0.5], [1.0, 0.1]], dtype=torch.float64)
    hand = [0.5 * (m * m + s * s - 1) - math.log(s) for m, s in zip(mean.flatten().tolist(), std.flatten().tolist())]
    assert gaussian_kl(mean, std).item() == pytest.approx(sum(hand) / 4, rel=1e-12)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std), torch.distributions.Normal(0.0, 1.0))
    assert gaussian_kl(mean, std).item() == pytest.approx(ref.mean().item(), rel=1e-12)
    assert gaussian_kl(torch.zeros(3, 5), torch.ones(3, 5)).item() == 0


def test_orthogonality_penalty():
    q, _ = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert orthogonality_penalty(q.T).item() == pytest.approx(0, abs=1e-12)      # orthonormal rows
    assert orthogonality_penalty(3 * q.T).item() == pytest.approx(0, abs=1e-12)  # a correlation: scale-free
    rows = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)         # cosine 1/sqrt(2) off the diagonal
    assert orthogonality_penalty(rows).item() == pytest.approx(2 * 0.5 / 4, rel=1e-12)
    # the model penalizes its decoder's Z latent directions (its weight's columns)
    model = learner("leo", latent=4)
    columns, _ = torch.linalg.qr(torch.randn(16, 4, dtype=torch.float64))  # (2F, Z), orthonormal columns
    with torch.no_grad():
        model.decoder.weight.copy_(columns)
    assert orthogonality_penalty(model.decoder.weight.T).item() == pytest.approx(0, abs=1e-12)


def test_latent_size_zero_is_refused_in_one_line():
    from selfmeta.engine.config import TrainConfig

    with pytest.raises(SelfmetaError, match=r"^meta-learner 'leo' option latent takes an integer >= 1, got 0") as info:
        TrainConfig(method="leo", tasks="labels", steps=1, method_options={"latent": 0})
    assert "\n" not in str(info.value)
    for bad in (0, 17):  # the API bypasses the config check; 17 > 2 x the 8 features
        with pytest.raises(SelfmetaError, match="leo: latent must be between 1 and 2 x the 8 features") as info:
            learner("leo", latent=bad)
        assert "\n" not in str(info.value)


# --- VERSA-style hypernet -------------------------------------------------------------------------------------------

def reference_versa_loss(model, x, spec, noise):
    """Loops over tasks, classes, draws and queries: -log (1/L sum_l softmax(W_l q + b_l)[y])."""
    with torch.no_grad():
        feats = model.backbone(x).view(T, spec.ways, spec.per_class, -1)  # the same batch: same BN statistics
    f = feats.shape[-1]
    losses = []
    for t in range(T):
        params = []
        for n in range(spec.ways):
            out = model.generator(feats[t, n, : spec.shots].mean(0))
            mean, logvar = out[: f + 1], out[f + 1:]
            params.append([mean + torch.exp(0.5 * logvar) * noise[t, l, n] for l in range(model.samples)])
        for n in range(spec.ways):
            for q in range(spec.shots, spec.per_class):
                probs = []
                for l in range(model.samples):
                    logits = torch.stack([params[c][l][:f] @ feats[t, n, q] + params[c][l][f] for c in range(spec.ways)])
                    probs.append(torch.softmax(logits, 0)[n])
                losses.append(-torch.log(torch.stack(probs).mean()))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("ways", [2, 3, 5])
def test_hypernet_loss_against_a_slow_loop_over_draws(ways):
    spec = EpisodeSpec(ways=ways, shots=2, queries=3)
    model = learner("hypernet", spec, samples=4)
    x = episodes(tasks=T, spec=spec)
    torch.manual_seed(7)
    out = model(x, torch.arange(len(x)))
    torch.manual_seed(7)
    noise = torch.randn(T, 4, ways, 9, dtype=torch.float64)  # the one draw the forward makes: (T, L, N, F+1)
    assert out.loss.item() == pytest.approx(reference_versa_loss(model, x, spec, noise).item(), rel=1e-10)


@pytest.mark.parametrize("ways", [2, 4, 7])
def test_hypernet_adapts_to_any_number_of_ways(ways):
    model = learner("hypernet")  # trained with 3 ways
    spec = EpisodeSpec(ways=ways, shots=3, queries=2)
    support, query = spec.split(episodes(tasks=2, spec=spec))
    s_y, _ = spec.labels()
    model.eval()
    with torch.no_grad():
        log_p = model.adapt_predict(support, s_y, query)
    assert log_p.shape == (2, ways * 2, ways)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(2, ways * 2, dtype=torch.float64))  # a predictive
