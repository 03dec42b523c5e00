"""Few-shot evaluation: batched solvers against per-episode references (a loop, scikit-learn), the
confidence interval, and fixed episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from selfmeta.data.episodes import EpisodeSpec
from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.fewshot import (
    cosine_logits,
    episode_accuracy,
    fewshot_episodes,
    finetune_logits,
    learner_episode_accuracy,
    logreg_logits,
    prototype_logits,
    summarize,
)


def features_and_labels(classes=12, per_class=10, dim=8, spread=0.8):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g) * 2
    y = torch.arange(classes).repeat_interleave(per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def test_prototype_accuracy_against_a_loop_over_episodes():
    feats, y = features_and_labels(spread=2.0)
    spec = EpisodeSpec(5, 2, 4)
    episodes = fewshot_episodes(y, spec, 40)
    acc = episode_accuracy(feats, episodes, spec.shots, "prototype")
    for e in range(40):
        protos = torch.stack([feats[episodes[e, n, :2]].mean(0) for n in range(5)])
        correct = 0
        for n in range(5):
            for i in episodes[e, n, 2:]:
                correct += int(int(torch.argmin(((feats[i] - protos) ** 2).sum(1))) == n)
        assert acc[e].item() == pytest.approx(correct / 20)
    assert 0.2 < acc.mean() < 1.0  # the spread makes some queries wrong, centres make most right


def test_cosine_accuracy_against_a_loop_over_episodes():
    feats, y = features_and_labels(spread=2.0)
    spec = EpisodeSpec(5, 3, 4)
    episodes = fewshot_episodes(y, spec, 40)
    acc = episode_accuracy(feats, episodes, spec.shots, "cosine")
    unit = feats / feats.norm(dim=1, keepdim=True)
    for e in range(40):
        protos = torch.stack([unit[episodes[e, n, :3]].mean(0) for n in range(5)])
        correct = 0
        for n in range(5):
            for i in episodes[e, n, 3:]:
                sims = [float(unit[i] @ p / p.norm()) for p in protos]
                correct += int(int(np.argmax(sims)) == n)
        assert acc[e].item() == pytest.approx(correct / 20)
    # Cosine ignores each item's length, the Euclidean prototype does not: scaling items changes only the latter.
    support, query = feats[:10].view(1, 5, 2, 8), feats[10:20].view(1, 10, 8)
    scaled = torch.linspace(0.1, 10, 10).view(1, 5, 2, 1) * support
    torch.testing.assert_close(cosine_logits(scaled, query), cosine_logits(support, query))
    assert not torch.equal(prototype_logits(scaled, query).argmax(-1), prototype_logits(support, query).argmax(-1))


def test_logreg_matches_scikit_learn():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(3, 5, 2, 8, generator=g), torch.randn(3, 10, 8, generator=g)
    logits = logreg_logits(support, query)
    for e in range(3):
        x = F.normalize(support[e].reshape(10, 8).double(), dim=-1).numpy()
        clf = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(x, np.repeat(np.arange(5), 2))
        ref = clf.decision_function(F.normalize(query[e].double(), dim=-1).numpy())
        np.testing.assert_allclose(logits[e].numpy(), ref, atol=1e-4)


def test_finetune_starts_at_the_prototype_classifier_and_fits_the_support():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(4, 5, 1, 16, generator=g), torch.randn(4, 30, 16, generator=g)
    start = finetune_logits(support, query, steps=0)
    assert torch.equal(start.argmax(-1), prototype_logits(support, query).argmax(-1))
    fitted = finetune_logits(support, support.flatten(1, 2), steps=50)
    assert (fitted.argmax(-1) == torch.arange(5)).all()


def test_summary_is_the_mean_and_1_96_standard_errors():
    acc = torch.tensor([1.0, 0.5, 0.75, 0.25])
    out = summarize(acc)
    assert out["accuracy"] == pytest.approx(0.625)
    assert out["ci95"] == pytest.approx(1.96 * float(np.std([1, 0.5, 0.75, 0.25], ddof=1)) / math.sqrt(4))


def test_episodes_are_fixed_and_errors_are_clear():
    _, y = features_and_labels()
    spec = EpisodeSpec(5, 1, 3)
    assert torch.equal(fewshot_episodes(y, spec, 10), fewshot_episodes(y, spec, 10))
    with pytest.raises(SelfmetaError, match="episodes must be"):
        fewshot_episodes(y, spec, 0)
    with pytest.raises(SelfmetaError, match="adaptation"):
        episode_accuracy(torch.zeros(len(y), 2), fewshot_episodes(y, spec, 2), 1, "knn")


def test_learner_adaptation_is_scored_in_chunks_like_the_batched_solver():
    feats, y = features_and_labels()
    spec = EpisodeSpec(4, 2, 3)
    episodes = fewshot_episodes(y, spec, 23)

    def adapt_predict(support, support_y, query):  # a nearest-prototype "learner" on the raw items
        protos = torch.stack([support[:, support_y == n].mean(1) for n in range(4)], 1)   # (T, N, F)
        return -torch.cdist(query, protos)

    acc = learner_episode_accuracy(adapt_predict, lambda index: feats[index], episodes, spec.shots, chunk=5)
    torch.testing.assert_close(acc, episode_accuracy(feats, episodes, spec.shots, "prototype"))
