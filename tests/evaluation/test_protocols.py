"""Evaluation protocols and scores against naive references and synthetic data with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.evaluation import (
    PROTOCOLS,
    classification_scores,
    cluster_accuracy,
    cluster_probe,
    clustering_scores,
    few_labels,
    knn_predict,
    knn_probe,
    linear_probe,
    run_protocol,
    sample_per_class,
)


def blobs(n_per_class: int, classes: int = 3, d: int = 6, seed: int = 0, spread: float = 0.3):
    """Classes around orthogonal directions, far apart in both Euclidean and cosine terms."""
    rng = np.random.default_rng(seed)
    centres = 5.0 * np.eye(d)[:classes]
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), d))
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order]


# ------------------------------------------------------------------------------------------------ kNN


def naive_knn(train_x, train_y, test_x, k, temperature):
    out = []
    for q in test_x:
        sims = []
        for x, y in zip(train_x, train_y):
            cos = float(np.dot(q, x) / (np.linalg.norm(q) * np.linalg.norm(x)))
            sims.append((cos, int(y)))
        sims.sort(key=lambda s: -s[0])
        votes = {}
        for cos, y in sims[:k]:
            votes[y] = votes.get(y, 0.0) + math.exp(cos / temperature)
        out.append(max(votes, key=votes.get))
    return np.array(out)


@pytest.mark.parametrize("k,temperature,chunk", [(1, 0.07, 1024), (5, 0.07, 3), (7, 0.5, 4), (50, 0.1, 7)])
def test_knn_matches_naive_loop(k, temperature, chunk):
    rng = np.random.default_rng(k)
    train_x = rng.normal(size=(40, 5))
    train_y = rng.integers(0, 4, 40)
    test_x = rng.normal(size=(23, 5))
    pred = knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, chunk=chunk)
    assert pred.shape == (23,)
    assert np.array_equal(pred, naive_knn(train_x, train_y, test_x, min(k, 40), temperature))


def test_knn_accepts_tensors_and_k1_is_nearest_neighbour():
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(30, 4))
    train_y = np.arange(30) % 5
    pred = knn_predict(torch.tensor(train_x), torch.tensor(train_y), torch.tensor(train_x), k=1)
    assert np.array_equal(pred, train_y)  # each point is its own nearest neighbour


def test_knn_probe_scores():
    train_x, train_y = blobs(20, seed=1)
    test_x, test_y = blobs(10, seed=2)
    scores = knn_probe(train_x, train_y, test_x, test_y)
    assert scores["accuracy"] == 1.0 and scores["f1_macro"] == 1.0
    scores = knn_probe(train_x, train_y, test_x, (test_y + 1) % 3)
    assert scores["accuracy"] == 0.0


# --------------------------------------------------------------------------------------------- scores


def brute_force_cluster_accuracy(y, clusters):
    classes = sorted(set(y.tolist()))
    ids = sorted(set(clusters.tolist()))
    best = 0
    if len(ids) >= len(classes):
        for chosen in itertools.permutations(ids, len(classes)):
            mapping = dict(zip(chosen, classes))
            best = max(best, sum(mapping.get(c) == t for c, t in zip(clusters.tolist(), y.tolist())))
    else:
        for chosen in itertools.permutations(classes, len(ids)):
            mapping = dict(zip(ids, chosen))
            best = max(best, sum(mapping[c] == t for c, t in zip(clusters.tolist(), y.tolist())))
    return best / len(y)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("classes,clusters", [(3, 3), (4, 4), (3, 4), (4, 3)])
def test_cluster_accuracy_matches_brute_force(seed, classes, clusters):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, 30)
    # Clusters correlated with the classes, with noise, under arbitrary (non-contiguous) ids.
    c = np.where(rng.random(30) < 0.6, y % clusters, rng.integers(0, clusters, 30))
    ids = rng.permutation(100)[:clusters]
    c = ids[c]
    assert cluster_accuracy(y, c) == pytest.approx(brute_force_cluster_accuracy(y, c))


def test_clustering_scores_perfect_and_permuted():
    y = np.repeat(np.arange(4), 5)
    perfect = clustering_scores(y, y)
    permuted = clustering_scores(y, np.array([3, 0, 2, 1])[y] + 10)
    for scores in (perfect, permuted):
        assert scores == pytest.approx({"accuracy": 1.0, "nmi": 1.0, "ari": 1.0})
    one_cluster = clustering_scores(y, np.zeros_like(y))
    assert one_cluster["accuracy"] == pytest.approx(0.25)
    assert one_cluster["nmi"] == pytest.approx(0.0) and one_cluster["ari"] == pytest.approx(0.0)


def test_classification_scores():
    y = np.repeat(np.arange(3), 4)
    assert classification_scores(y, y) == pytest.approx(
        {"accuracy": 1.0, "precision_macro": 1.0, "recall_macro": 1.0, "f1_macro": 1.0}
    )
    # Predictions under a permutation of the classes are all wrong: the labels are not matched.
    wrong = classification_scores(y, (y + 1) % 3)
    assert wrong == pytest.approx({"accuracy": 0.0, "precision_macro": 0.0, "recall_macro": 0.0, "f1_macro": 0.0})
    # A hand-computed case: class 0 precision 1, recall 1/2; class 1 precision 2/3, recall 1.
    partial = classification_scores(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert partial["accuracy"] == pytest.approx(0.75)
    assert partial["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert partial["recall_macro"] == pytest.approx(0.75)
    assert partial["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert all(isinstance(v, float) for v in partial.values())


# ------------------------------------------------------------------------------------ few labels


def test_sample_per_class():
    y = np.array([0] * 5 + [1] * 8 + [2] * 3 + [7] * 4)
    rng = np.random.default_rng(0)
    y = y[rng.permutation(len(y))]
    idx = sample_per_class(y, 3, seed=0)
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert sorted(np.unique(y[idx], return_counts=True)[1].tolist()) == [3, 3, 3, 3]
    assert set(y[idx].tolist()) == {0, 1, 2, 7}
    assert np.array_equal(idx, sample_per_class(y, 3, seed=0))
    draws = {tuple(sample_per_class(y, 2, seed=s)) for s in range(6)}
    assert len(draws) > 1
    assert len(sample_per_class(y, 3, seed=5)) == 12


def test_sample_per_class_errors():
    y = np.array([0] * 5 + [1] * 2)
    with pytest.raises(SelfmetaError, match="class 1 has only 2 examples"):
        sample_per_class(y, 3, seed=0)
    with pytest.raises(SelfmetaError, match="at least 1"):
        sample_per_class(y, 0, seed=0)


def test_few_labels_on_separable_blobs():
    train_x, train_y = blobs(30, seed=3)
    test_x, test_y = blobs(10, seed=4)
    result = few_labels(knn_probe, train_x, train_y, test_x, test_y, labels_per_class=2, seeds=3, k=3)
    assert result["accuracy"] >= 0.95
    assert result["labels_per_class"] == 2 and result["seeds"] == 3
    assert 0 <= result["accuracy_std"] <= 0.05
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(result)


def test_few_labels_fit_only_on_the_sampled_items():
    """A probe that records what it was fitted on sees k items per class, different across seeds."""
    seen = []

    def probe(train_x, train_y, test_x, test_y):
        seen.append(train_x[:, 0].copy())
        assert np.bincount(train_y).tolist() == [2, 2, 2]
        return {"accuracy": 0.5}

    x = np.arange(60, dtype=np.float32).reshape(30, 2)
    y = np.arange(30) % 3
    result = few_labels(probe, x, y, x, y, labels_per_class=2, seeds=4)
    assert len(seen) == 4 and len({tuple(s) for s in seen}) > 1
    assert result["accuracy"] == 0.5 and result["accuracy_std"] == 0.0


@pytest.mark.parametrize("protocol", ["linear", "knn", "cluster"])
def test_run_protocol_on_separable_blobs(protocol):
    train_x, train_y = blobs(20, seed=5)
    test_x, test_y = blobs(10, seed=6)
    result = run_protocol(protocol, train_x, train_y, test_x, test_y)
    assert result["protocol"] == protocol
    assert result["accuracy"] >= 0.95
    if protocol == "cluster":
        assert result["nmi"] >= 0.9 and result["ari"] >= 0.9
    else:
        assert result["f1_macro"] >= 0.95


@pytest.mark.parametrize("protocol", ["linear", "knn"])
def test_run_protocol_few_labels(protocol):
    train_x, train_y = blobs(20, seed=7)
    test_x, test_y = blobs(10, seed=8)
    result = run_protocol(protocol, train_x, train_y, test_x, test_y, labels_per_class=3, seeds=2)
    assert result["protocol"] == protocol and result["labels_per_class"] == 3 and result["seeds"] == 2
    assert result["accuracy"] >= 0.95


def test_run_protocol_unknown():
    x, y = blobs(5)
    with pytest.raises(SelfmetaError, match="unknown protocol 'rbf'") as info:
        run_protocol("rbf", x, y, x, y)
    assert "linear, knn, svm, cluster" in str(info.value)
    assert PROTOCOLS == ("linear", "knn", "svm", "cluster")


def test_svm_probe_chooses_C_on_the_train_split_only(monkeypatch):
    """The UCR protocol: C by 5-fold cross-validation on train; a hard margin when a class has < 5 items."""
    import sklearn.model_selection

    x, y = blobs(20, seed=3)
    test_x, test_y = blobs(10, seed=4)
    seen = {}
    original = sklearn.model_selection.GridSearchCV.fit

    def spy(self, features, labels):
        seen["items"] = len(features)
        return original(self, features, labels)

    monkeypatch.setattr(sklearn.model_selection.GridSearchCV, "fit", spy)
    result = run_protocol("svm", x, y, test_x, test_y)
    assert result["accuracy"] >= 0.95 and seen["items"] == len(x)         # the search saw the train split alone
    assert result["C"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e8)
    seen.clear()
    few = run_protocol("svm", x[:12], y[:12], test_x, test_y)              # fewer than 50 items: hard margin
    assert few["C"] == 1e8 and not seen


def test_cluster_probe_ignores_scale():
    """Clustering is on L2-normalized features: rescaling items does not change the result."""
    x, y = blobs(15, seed=9)
    scales = np.random.default_rng(0).uniform(0.1, 10, size=(len(x), 1)).astype(np.float32)
    assert cluster_probe(x * scales, y)["accuracy"] == pytest.approx(cluster_probe(x, y)["accuracy"])
    assert cluster_probe(x, y)["accuracy"] >= 0.95


def test_linear_probe_random_labels_is_chance():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(300, 10)), rng.normal(size=(400, 10))
    train_y, test_y = rng.integers(0, 4, 300), rng.integers(0, 4, 400)
    scores = linear_probe(train_x, train_y, test_x, test_y)
    assert 0.15 <= scores["accuracy"] <= 0.4  # chance is 0.25; a probe that saw test labels would be near 1


def test_linear_probe_uses_the_features():
    x, y = blobs(30, classes=4, seed=10, spread=1.0)
    test_x, test_y = blobs(20, classes=4, seed=11, spread=1.0)
    assert linear_probe(x, y, test_x, test_y)["accuracy"] >= 0.95
