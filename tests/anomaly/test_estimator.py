"""``AnomalyDetector``: PyOD's API on synthetic data (a gaussian cloud of normal items, far outliers), its two
thresholds, scikit-learn's contract, bad input, and the three kinds of encoder (raw items, a fitted
``SelfSupervised``, a run directory), with the reconstruction detector on a run that has a decoder."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from selfmeta import SelfSupervised
from selfmeta.anomaly import AnomalyDetector
from selfmeta.api import as_dataset
from selfmeta.engine.config import TrainConfig
from selfmeta.engine.model import embed, load_backbone, load_method
from selfmeta.engine.trainer import train
from selfmeta.errors import SelfmetaError

D = 6
SHIFT = np.array([25.0, -25.0, 0, 0, 0, 0])  # outliers: far in magnitude and in direction
TINY = dict(encoder="mlp", batch_size=32, device="cpu", encoder_options={"widths": [16]})


def normal(n: int, seed: int = 0) -> np.ndarray:
    """(n, D) float32 normal items around (3, ..., 3)."""
    return np.random.default_rng(seed).normal(3.0, 1.0, size=(n, D)).astype(np.float32)


def make_test_set(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """60 normal items then 12 outliers, and their labels (1 = anomaly)."""
    outliers = normal(12, seed + 100) + SHIFT.astype(np.float32)
    return np.vstack([normal(60, seed), outliers]), np.r_[np.zeros(60), np.ones(12)]


def assert_one_line_error(fit, *fragments: str) -> None:
    with pytest.raises(SelfmetaError) as info:
        fit()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ------------------------------------------------------------------------------------------- PyOD's API


@pytest.mark.parametrize("detector", ["knn", "mahalanobis", "iforest", "lof"])
def test_raw_items_separate_far_outliers(detector):
    X_test, y_test = make_test_set()
    model = AnomalyDetector(detector=detector).fit(normal(200))
    scores = model.decision_function(X_test)
    assert scores.shape == (72,) and scores.dtype == np.float64
    assert roc_auc_score(y_test, scores) > 0.97
    assert model.predict(X_test)[60:].all()                      # every far outlier is above the threshold


def test_contamination_flags_that_fraction_of_the_training_items():
    X = normal(300)
    model = AnomalyDetector(contamination=0.05).fit(X)
    assert model.decision_scores_.shape == (300,) and model.labels_.shape == (300,)
    assert set(np.unique(model.labels_)) <= {0, 1} and model.labels_.dtype == np.int64
    assert model.labels_.mean() == pytest.approx(0.05, abs=1 / 300)
    # PyOD's rule: the (1 - contamination) percentile of the training scores.
    assert model.threshold_ == pytest.approx(np.percentile(model.decision_scores_, 95))
    np.testing.assert_array_equal(model.labels_, model.decision_scores_ > model.threshold_)
    # The training scores exclude each item's match with itself: scoring the items anew gives less.
    assert (model.decision_function(X) <= model.decision_scores_ + 1e-12).all()


def test_fpr_flags_about_that_fraction_of_fresh_normal_items():
    model = AnomalyDetector(detector="mahalanobis", fpr=0.05, holdout=0.5).fit(normal(2000))
    assert len(model.detector_.train_scores()) == 1000            # the held-out half is not fitted
    assert model.decision_scores_.shape == (2000,)
    flagged = model.predict(normal(4000, seed=7)).mean()
    assert flagged == pytest.approx(0.05, abs=0.02)
    X_test, y_test = make_test_set()
    assert model.predict(X_test)[60:].all()


def test_fpr_split_is_seeded_and_held_out_items_are_scored_as_new():
    X = normal(100)
    a = AnomalyDetector(detector="knn", fpr=0.1, random_state=3).fit(X)
    b = AnomalyDetector(detector="knn", fpr=0.1, random_state=3).fit(X)
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    assert a.threshold_ == b.threshold_
    fitted = a.detector_.items_                                    # (80, D) the items the detector kept
    held = np.array([not (fitted == x.astype(np.float64)).all(1).any() for x in X])
    assert held.sum() == 20
    np.testing.assert_allclose(a.decision_scores_[held], a.decision_function(X[held]))
    assert a.threshold_ == pytest.approx(np.quantile(a.decision_scores_[held], 0.9))


def test_too_few_held_out_items_for_the_fpr_are_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="selfmeta.anomaly.estimator"):
        AnomalyDetector(fpr=0.01).fit(normal(50))
    assert "fewer than 1/fpr" in caplog.text


def test_random_state_seeds_random_detectors():
    X, (X_test, _) = normal(100), make_test_set()
    model = AnomalyDetector(detector="iforest", random_state=4, detector_options={"n_estimators": 20}).fit(X)
    forest = IsolationForest(n_estimators=20, random_state=4).fit(X.astype(np.float64))
    np.testing.assert_allclose(model.decision_function(X_test), -forest.score_samples(X_test.astype(np.float64)))
    own_seed = AnomalyDetector(detector="iforest", random_state=4, detector_options={"n_estimators": 20, "seed": 9})
    forest9 = IsolationForest(n_estimators=20, random_state=9).fit(X.astype(np.float64))
    np.testing.assert_allclose(own_seed.fit(X).decision_function(X_test), -forest9.score_samples(X_test.astype(np.float64)))


def test_images_and_tensors_are_flattened_raw_items():
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 4, 4)).astype(np.float32)
    model = AnomalyDetector(detector="knn", detector_options={"k": 3, "metric": "euclidean"}).fit(torch.from_numpy(images))
    assert model.n_features_in_ == 16
    flat = AnomalyDetector(detector="knn", detector_options={"k": 3, "metric": "euclidean"},
                           input_shape=(1, 4, 4)).fit(images.reshape(40, 16))
    np.testing.assert_allclose(model.decision_scores_, flat.decision_scores_)
    assert_one_line_error(lambda: model.decision_function(rng.random((3, 1, 5, 5))), "items of shape (1, 5, 5)",
                          "fitted on (1, 4, 4)")


# ------------------------------------------------------------------------------------ scikit-learn contract


def test_clone_gives_an_unfitted_copy_with_the_same_parameters():
    model = AnomalyDetector(detector="lof", detector_options={"n_neighbors": 5}, contamination=0.2, fpr=0.1,
                            holdout=0.3, random_state=2)
    model.fit(normal(60))
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        copy.decision_function(normal(3))
    np.testing.assert_array_equal(copy.fit(normal(60)).decision_scores_, model.decision_scores_)


def test_init_stores_arguments_only():
    model = AnomalyDetector(detector="nope", contamination=7)    # checked by fit, not here
    assert model.detector == "nope" and model.contamination == 7
    assert not [k for k in vars(model) if k.endswith("_")]


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("params, fragments", [
    ({"contamination": 0}, ["contamination takes a number > 0 and <= 0.5, got 0"]),
    ({"contamination": 0.6}, ["contamination takes a number > 0 and <= 0.5, got 0.6"]),
    ({"fpr": 1.5}, ["fpr takes null or a number > 0 and < 1, got 1.5"]),
    ({"fpr": 0.1, "holdout": 0}, ["holdout takes a number > 0 and < 1, got 0"]),
    ({"detector": "knnn"}, ["unknown detector 'knnn'; valid: iforest, knn, lof, mahalanobis, reconstruction"]),
    ({"detector_options": {"kk": 3}}, ["unknown option 'kk' for detector 'knn'; valid: k, metric"]),
    ({"detector_options": {"metric": "l1"}}, ["detector 'knn' option metric takes one of: cosine, euclidean"]),
    ({"detector": "reconstruction"}, ["reconstruction error", "method reconstruction"]),
    ({"encoder": 3}, ["encoder must be None, a run directory or a SelfSupervised estimator, got int"]),
    ({"fpr": 0.1, "holdout": 0.99}, ["fpr needs held-out normal items", "leaving 0 to fit"]),
])
def test_bad_parameters_are_one_line_errors(params, fragments):
    assert_one_line_error(lambda: AnomalyDetector(**params).fit(normal(40)), *fragments)


def test_bad_data_is_one_line_errors(tmp_path):
    model = AnomalyDetector().fit(normal(40))
    assert_one_line_error(lambda: model.predict(normal(5)[:, :4]), "X has 4 features, but AnomalyDetector is "
                          "expecting 6 features as input")
    X = normal(40)
    X[3, 2] = np.nan
    assert_one_line_error(lambda: AnomalyDetector().fit(X), "Input X contains NaN")
    assert_one_line_error(lambda: AnomalyDetector(encoder=tmp_path).fit(normal(40)), "holds no encoder.safetensors")


# ------------------------------------------------------------------------------------------------ encoders


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny run directories trained on normal table items: simclr (no decoder) and reconstruction."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("anomaly_runs")
    data = as_dataset(normal(128), None)
    out = {}
    for method in ("simclr", "reconstruction"):
        cfg = TrainConfig(method=method, steps=4, **TINY)
        train(cfg, data, run_dir=folder / method, progress=False)
        out[method] = folder / method
    return out


@pytest.fixture(scope="module")
def fitted_encoder():
    torch.set_num_threads(1)
    return SelfSupervised(epochs=1, **TINY).fit(normal(128))


@pytest.mark.slow
def test_a_fitted_selfsupervised_encoder_gives_the_features(fitted_encoder):
    X, (X_test, y_test) = normal(128), make_test_set()
    model = AnomalyDetector(encoder=fitted_encoder, detector="mahalanobis").fit(X)
    assert model.encoder_ is fitted_encoder and model.n_features_in_ == D
    assert roc_auc_score(y_test, model.decision_function(X_test)) > 0.95
    # The detector sees the encoder's features: the same scores as fitting it on transform's output.
    direct = AnomalyDetector(detector="mahalanobis").fit(fitted_encoder.transform(X))
    np.testing.assert_allclose(model.decision_scores_, direct.decision_scores_, rtol=1e-6)
    assert_one_line_error(lambda: AnomalyDetector(encoder=fitted_encoder, detector="reconstruction").fit(X),
                          "needs an encoder trained with a decoder (method reconstruction)", "'simclr'")


@pytest.mark.slow
def test_a_clone_trains_its_own_encoder_on_the_normal_items(fitted_encoder):
    model = clone(AnomalyDetector(encoder=fitted_encoder, fpr=0.1))
    assert not hasattr(model.encoder, "backbone_")                 # clone leaves the encoder unfitted
    model.fit(normal(128))
    assert model.encoder_ is not model.encoder and hasattr(model.encoder_, "backbone_")
    assert not hasattr(model.encoder, "backbone_")                 # the parameter itself is left alone
    assert model.decision_function(normal(5)).shape == (5,)


@pytest.mark.slow
def test_a_run_directory_gives_the_features(runs):
    X, (X_test, y_test) = normal(128), make_test_set()
    model = AnomalyDetector(encoder=str(runs["simclr"]), detector="mahalanobis").fit(X)
    assert model.encoder_ is None and model.description_["method"] == "simclr"
    assert roc_auc_score(y_test, model.decision_function(X_test)) > 0.95
    # The detector sees the run's frozen features.
    backbone, _ = load_backbone(runs["simclr"])
    features = embed(backbone, as_dataset(X, None)).double().numpy()
    direct = AnomalyDetector(detector="mahalanobis").fit(features)
    np.testing.assert_allclose(model.decision_scores_, direct.decision_scores_, rtol=1e-6)
    assert_one_line_error(lambda: model.decision_function(normal(4)[:, :5]), "trained on inputs of shape (6,)")
    assert_one_line_error(lambda: AnomalyDetector(encoder=runs["simclr"], detector="reconstruction").fit(X),
                          "needs an encoder trained with a decoder (method reconstruction)",
                          f"{runs['simclr']} was trained with method 'simclr'")


@pytest.mark.slow
def test_reconstruction_detector_scores_the_runs_reconstruction_error(runs):
    X, (X_test, y_test) = normal(128), make_test_set()
    model = AnomalyDetector(encoder=runs["reconstruction"], detector="reconstruction").fit(X)
    scores = model.decision_function(X_test)
    assert scores.shape == (72,) and roc_auc_score(y_test, scores) > 0.95
    # The score is the method's per-item error of the unmasked input, in normalized units.
    method = load_method(runs["reconstruction"], as_dataset(X, None))
    with torch.no_grad():
        x = torch.from_numpy(X_test)
        expected = ((method.decoder(method.backbone(x)) - method.backbone.normalize(x)) ** 2).mean(1)
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-5)
    assert model.labels_.mean() == pytest.approx(0.1, abs=1 / 128)
