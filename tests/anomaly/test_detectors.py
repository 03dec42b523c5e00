"""Each detector against a naive reference (a loop over explicit pairs, a direct formula, scikit-learn called
directly): scores, shapes, the fitted items' own scores without a self-match, and the order of a planted
outlier."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

from selfmeta.anomaly import DETECTORS, Detector
from selfmeta.anomaly.detectors import knn_distance
from selfmeta.errors import SelfmetaError

FEATURE_DETECTORS = [n for n in DETECTORS if DETECTORS.get(n).input == "embedding"]


def cloud(n: int = 40, d: int = 6, seed: int = 0) -> np.ndarray:
    """(n, d) normal items around (3, ..., 3), so that cosine distances are meaningful too."""
    return np.random.default_rng(seed).normal(3.0, 1.0, size=(n, d))


def with_outlier(x: np.ndarray) -> np.ndarray:
    """x plus one item far from it, in magnitude and in direction, last."""
    far = np.zeros((1, x.shape[1]))
    far[0, 0], far[0, 1] = -30.0, 40.0
    return np.vstack([x, far])


def naive_knn(queries: np.ndarray, items: np.ndarray, k: int, metric: str, skip_self: bool) -> np.ndarray:
    """The k-NN score by a double loop over (query, item) pairs."""
    out = []
    for i, q in enumerate(queries):
        dists = []
        for j, f in enumerate(items):
            if skip_self and i == j:
                continue
            if metric == "cosine":
                dists.append(1.0 - float(q @ f) / (np.linalg.norm(q) * np.linalg.norm(f)))
            else:
                dists.append(float(np.sqrt(((q - f) ** 2).sum())))
        out.append(np.mean(sorted(dists)[:k]))
    return np.array(out)


# ------------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", FEATURE_DETECTORS)
def test_shapes_dtype_and_a_planted_outlier_scores_highest(name):
    train, test = cloud(60), with_outlier(cloud(15, seed=1))
    detector = DETECTORS.get(name)().fit(train)
    scores, own = detector.score(test), detector.train_scores()
    assert scores.shape == (16,) and scores.dtype == np.float64 and np.isfinite(scores).all()
    assert own.shape == (60,) and own.dtype == np.float64 and np.isfinite(own).all()
    assert scores.argmax() == 15, scores
    # Fitted on data containing the outlier, its own (self-excluded) score is still the highest.
    assert DETECTORS.get(name)().fit(with_outlier(cloud(40, seed=1))).train_scores().argmax() == 40


@pytest.mark.parametrize("name", FEATURE_DETECTORS)
def test_bad_features_are_one_line_errors(name):
    detector = DETECTORS.get(name)()
    for bad, fragment in [(np.zeros(5), "(N, d) array"), (np.full((4, 2), np.nan), "NaN"), (np.ones((1, 3)), "at least 2")]:
        with pytest.raises(SelfmetaError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
            detector.fit(bad)
        assert "\n" not in str(info.value)
    detector.fit(cloud(10, d=3))
    with pytest.raises(SelfmetaError, match="features of size 4, the detector was fitted on size 3"):
        detector.score(np.ones((2, 4)))


def test_scoring_before_fit_is_an_error():
    with pytest.raises(SelfmetaError, match="call fit before score"):
        DETECTORS.get("knn")().score(np.ones((2, 3)))


def test_the_registry_lists_the_detectors_and_names_them_in_errors():
    assert set(DETECTORS) == {"iforest", "knn", "lof", "mahalanobis", "reconstruction"}
    assert all(issubclass(DETECTORS.get(n), Detector) for n in DETECTORS)
    with pytest.raises(SelfmetaError, match="unknown detector 'knnn'; valid: iforest, knn, lof, mahalanobis"):
        DETECTORS.get("knnn")
    with pytest.raises(SelfmetaError, match="detector 'lof' fit"):
        DETECTORS.get("lof")().fit(np.ones((1, 2)))


# ------------------------------------------------------------------------------------------------ k-NN


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_matches_a_loop_over_pairs(metric, k):
    train, test = cloud(25, d=4), cloud(9, d=4, seed=2)
    detector = DETECTORS.get("knn")(k=k, metric=metric).fit(train)
    np.testing.assert_allclose(detector.score(test), naive_knn(test, train, k, metric, False), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(detector.train_scores(), naive_knn(train, train, k, metric, True), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_blocks_do_not_change_the_result(metric):
    x, q = cloud(30, d=5), cloud(11, d=5, seed=3)
    whole = knn_distance(q, x, 4, metric)
    np.testing.assert_allclose(knn_distance(q, x, 4, metric, block=30), whole)       # one query per block
    np.testing.assert_allclose(knn_distance(q, x, 4, metric, block=7 * 30), whole)   # blocks of 7, last of 4
    own = knn_distance(x, x, 4, metric, self_match=True)
    np.testing.assert_allclose(knn_distance(x, x, 4, metric, self_match=True, block=4 * 30), own)


def test_knn_train_scores_exclude_only_the_item_itself():
    x = cloud(10, d=3)
    x = np.vstack([x, x[:1]])                                   # item 10 duplicates item 0
    own = DETECTORS.get("knn")(k=1).fit(x).train_scores()
    assert own[0] == pytest.approx(0.0, abs=1e-12) and own[10] == pytest.approx(0.0, abs=1e-12)
    assert (own[1:10] > 1e-6).all()                             # no free zero from matching itself


def test_knn_caps_k_at_the_number_of_items():
    x = cloud(4, d=3)
    detector = DETECTORS.get("knn")(k=50).fit(x)
    np.testing.assert_allclose(detector.train_scores(), naive_knn(x, x, 3, "cosine", True), rtol=1e-9)
    np.testing.assert_allclose(detector.score(x[:2]), naive_knn(x[:2], x, 4, "cosine", False), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------- Gaussian, sklearn


def test_mahalanobis_is_the_direct_formula_with_ledoit_wolf():
    train, test = cloud(30, d=5), cloud(7, d=5, seed=4)
    detector = DETECTORS.get("mahalanobis")().fit(train)
    lw = LedoitWolf().fit(train)
    inverse = np.linalg.inv(lw.covariance_)
    expected = np.array([(x - lw.location_) @ inverse @ (x - lw.location_) for x in test])
    np.testing.assert_allclose(detector.score(test), expected, rtol=1e-8)
    own = np.array([(x - lw.location_) @ inverse @ (x - lw.location_) for x in train])
    np.testing.assert_allclose(detector.train_scores(), own, rtol=1e-8)


def test_iforest_is_scikit_learns_negated_score():
    train, test = cloud(50), cloud(8, seed=5)
    detector = DETECTORS.get("iforest")(n_estimators=30, seed=3).fit(train)
    forest = IsolationForest(n_estimators=30, random_state=3).fit(train)
    np.testing.assert_allclose(detector.score(test), -forest.score_samples(test))
    np.testing.assert_allclose(detector.train_scores(), -forest.score_samples(train))


def test_lof_is_scikit_learns_negated_score_and_own_factor():
    train, test = cloud(40), cloud(8, seed=6)
    detector = DETECTORS.get("lof")(n_neighbors=7).fit(train)
    lof = LocalOutlierFactor(n_neighbors=7, novelty=True).fit(train)
    np.testing.assert_allclose(detector.score(test), -lof.score_samples(test))
    np.testing.assert_allclose(detector.train_scores(), -lof.negative_outlier_factor_)
    small = DETECTORS.get("lof")().fit(train[:6])                # n_neighbors capped at N - 1
    np.testing.assert_allclose(small.train_scores(),
                               -LocalOutlierFactor(n_neighbors=5, novelty=True).fit(train[:6]).negative_outlier_factor_)


# ------------------------------------------------------------------------------------------ reconstruction


def test_reconstruction_detector_returns_the_error_column():
    errors = np.array([[0.1], [0.3], [0.2]])
    detector = DETECTORS.get("reconstruction")().fit(errors)
    np.testing.assert_array_equal(detector.train_scores(), [0.1, 0.3, 0.2])
    np.testing.assert_array_equal(detector.score(np.array([[5.0], [0.0]])), [5.0, 0.0])
    with pytest.raises(SelfmetaError, match=r"\(N, 1\) column"):
        DETECTORS.get("reconstruction")().fit(np.ones((3, 2)))
