"""The scikit-learn estimator ``SelfSupervised`` on the bundled digits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from selfmeta import SelfSupervised
from selfmeta.engine.checkpoint import save_weights
from selfmeta.errors import SelfmetaError

PARAMS = dict(input_shape=(1, 8, 8), epochs=2, batch_size=128, view_options={"hflip": 0}, device="cpu")



@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    return bunch.data / 16.0, bunch.target


@pytest.fixture(scope="module")
def fitted(digits):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    X, _ = digits
    estimator = SelfSupervised(**PARAMS)
    assert estimator.fit(X) is estimator
    torch.set_num_threads(before)
    return estimator


def test_fit_returns_self_and_learns_fitted_attributes(fitted, digits):
    X, _ = digits
    assert fitted.n_features_in_ == 64
    assert fitted.n_features_out_ == 64
    assert fitted.description_["input_shape"] == [1, 8, 8] and fitted.description_["modality"] == "image"
    assert fitted.history_ and all(np.isfinite(r["loss"]) for r in fitted.history_)
    assert fitted.history_[-1]["step"] == 2 * (len(X) // 128)


def test_transform_gives_frozen_features(fitted, digits):
    X, _ = digits
    features = fitted.transform(X)
    assert isinstance(features, np.ndarray)
    assert features.shape == (len(X), 64) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert features.std(axis=0).max() > 0  # not a constant map
    np.testing.assert_array_equal(fitted.transform(X[:10]), features[:10])  # eval mode: no randomness, no batch effect
    assert list(fitted.get_feature_names_out()) == [f"selfsupervised{i}" for i in range(64)]


def test_mlp_on_flat_rows_needs_no_input_shape(digits):
    X, _ = digits
    estimator = SelfSupervised(encoder="mlp", epochs=1, batch_size=128, device="cpu").fit(X)
    assert estimator.description_["modality"] == "table" and estimator.description_["input_shape"] == [64]
    features = estimator.transform(X[:50])
    assert features.shape == (50, estimator.n_features_out_) and estimator.n_features_out_ == 256
    assert np.isfinite(features).all()
    with pytest.raises(SelfmetaError, match="X has 32 features, but SelfSupervised is expecting 64 features as input"):
        estimator.transform(X[:, :32])


def test_clone_is_unfitted_with_equal_params(fitted):
    copy = clone(fitted)
    assert copy is not fitted
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "backbone_")
    with pytest.raises(NotFittedError):
        copy.transform(np.zeros((2, 64)))


def test_transform_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        SelfSupervised(**PARAMS).transform(np.zeros((4, 64)))


def test_inside_a_pipeline(digits):
    X, y = digits
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1400], order[1400:]
    pipe = make_pipeline(SelfSupervised(**PARAMS), LogisticRegression(max_iter=1000))
    assert pipe.fit(X[train], y[train]) is pipe
    score = pipe.score(X[test], y[test])
    assert 0.5 < score <= 1.0


def test_save_and_load_give_the_same_estimator(fitted, digits, tmp_path):
    X, _ = digits
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    loaded = SelfSupervised.load(path)
    assert type(loaded) is SelfSupervised
    assert loaded.get_params() == fitted.get_params()
    assert loaded.input_shape == (1, 8, 8)
    assert loaded.n_features_in_ == fitted.n_features_in_ and loaded.n_features_out_ == fitted.n_features_out_
    saved, reloaded = fitted.backbone_.state_dict(), loaded.backbone_.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    # Same weights; the trained copy may keep a channels-last layout, so allow float rounding.
    np.testing.assert_allclose(loaded.transform(X[:200]), fitted.transform(X[:200]), rtol=1e-4, atol=1e-5)


def test_save_before_fit_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError):
        SelfSupervised().save(tmp_path / "model.safetensors")


def test_loading_something_else_is_refused(tmp_path):
    text = tmp_path / "model.safetensors"
    text.write_text("hello")
    with pytest.raises(SelfmetaError):
        SelfSupervised.load(text)
    # A selfmeta weights file of a run (no estimator parameters) is not an estimator either.
    weights = tmp_path / "encoder.safetensors"
    run_description = {"encoder": "conv4", "encoder_options": {}, "input_shape": [1, 8, 8], "modality": "image",
                       "method": "simclr"}
    save_weights(weights, {"w": torch.ones(2)}, run_description)
    with pytest.raises(SelfmetaError, match="not a saved SelfSupervised estimator"):
        SelfSupervised.load(weights)
    # Metadata of the wrong shape, or parameters this version does not know: one clear error each.
    for description, message in [([1, 2], "its description is not a table"),
                                 ({**run_description, "input_shape": "8x8"}, "no valid 'input_shape'"),
                                 ({**run_description, "input_shape": [1, -8, 8]}, "input_shape [1, -8, 8]"),
                                 ({**run_description, "modality": "sound"}, "unknown modality 'sound'"),
                                 ({**run_description, "params": {"depth": 3}, "n_features_in": 64},
                                  "parameters this version does not know: depth")]:
        save_weights(weights, {"w": torch.ones(2)}, description)
        with pytest.raises(SelfmetaError, match=re.escape(message)):
            SelfSupervised.load(weights)
    with pytest.raises(SelfmetaError):
        SelfSupervised.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("params, names", [
    ({"method": "byol-ish"}, ["unknown method 'byol-ish'", "simclr"]),
    ({"encoder": "conv5"}, ["unknown encoder 'conv5'", "conv4", "mlp", "resnet18"]),
])
def test_unknown_names_fail_at_fit_with_the_valid_ones(digits, params, names):
    X, _ = digits
    estimator = SelfSupervised(**{**PARAMS, **params})  # __init__ stores, does not validate
    with pytest.raises(SelfmetaError) as info:
        estimator.fit(X)
    for name in names:
        assert name in str(info.value)
    assert not hasattr(estimator, "backbone_")


def test_bad_options_fail_at_fit(digits):
    X, _ = digits
    with pytest.raises(SelfmetaError, match="option optimizer takes one of: adamw, lars"):
        SelfSupervised(**{**PARAMS, "optimizer": "sgd"}).fit(X)
    with pytest.raises(SelfmetaError, match="unknown option 'tau' for method 'simclr'"):
        SelfSupervised(**{**PARAMS, "method_options": {"tau": 0.1}}).fit(X)


def test_wrong_shape_at_transform(fitted, digits):
    X, _ = digits
    with pytest.raises(SelfmetaError, match="input_shape"):
        fitted.transform(X[:, :32])
    with pytest.raises(SelfmetaError):
        fitted.transform(X[:, :48].reshape(len(X), 6, 8))  # (6, 8) images, the model takes (1, 8, 8)
    with pytest.raises(SelfmetaError, match="input_shape"):
        fitted.transform(X.reshape(len(X), 1, 4, 16))  # same number of values, another shape: no silent reshape


def test_nan_in_x_is_refused(digits):
    X, _ = digits
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(SelfmetaError, match="NaN"):
        SelfSupervised(**PARAMS).fit(bad)
    with pytest.raises(SelfmetaError, match="NaN"):
        SelfSupervised(encoder="mlp", epochs=1, batch_size=128).fit(bad)


def test_nan_at_transform_is_refused(fitted, digits):
    X, _ = digits
    bad = X[:10].copy()
    bad[0, 0] = np.inf
    with pytest.raises(SelfmetaError, match="Input X contains infinity"):
        fitted.transform(bad)


# --- predict, for methods that cluster -------------------------------------------------------------------

DEC_PARAMS = dict(PARAMS, method="dec", method_options={"num_clusters": 10, "warmup_epochs": 0}, epochs=1)


@pytest.fixture(scope="module")
def dec_fitted(digits):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    X, _ = digits
    estimator = SelfSupervised(**DEC_PARAMS).fit(X)
    torch.set_num_threads(before)
    return estimator


def test_dec_fit_predict_on_digits(dec_fitted, digits):
    X, y = digits
    assert hasattr(dec_fitted, "predict")
    ids = dec_fitted.predict(X)
    assert isinstance(ids, np.ndarray) and ids.shape == (len(X),) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 10 and len(np.unique(ids)) >= 3
    np.testing.assert_array_equal(dec_fitted.predict(X[:25]), ids[:25])  # deterministic, no batch effect
    assert dec_fitted.transform(X[:5]).shape == (5, dec_fitted.n_features_out_)
    assert dec_fitted.method_.backbone is dec_fitted.backbone_
    with pytest.raises(SelfmetaError, match="input_shape"):
        dec_fitted.predict(X[:, :32])


def test_predict_after_save_and_load_equals_before(dec_fitted, digits, tmp_path):
    X, _ = digits
    path = tmp_path / "dec.safetensors"
    dec_fitted.save(path)
    rng_before = torch.get_rng_state()
    loaded = SelfSupervised.load(path)
    assert torch.equal(torch.get_rng_state(), rng_before)  # loading leaves the caller's random stream alone
    torch.testing.assert_close(loaded.method_.centroids, dec_fitted.method_.centroids, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.predict(X), dec_fitted.predict(X))
    assert loaded.description_ == dec_fitted.description_
    # The file loads without pickle and its method tensors are kept apart from the backbone's.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "method.centroids" in keys and any(k.startswith("encoder.") for k in keys)


def test_predict_on_simclr_raises_a_clear_error(fitted, digits, tmp_path):
    X, _ = digits
    assert not hasattr(fitted, "predict")
    with pytest.raises(AttributeError, match="has no attribute 'predict'") as info:
        fitted.predict(X)
    # scikit-learn's available_if raises its generic message from ours, which the traceback shows first.
    assert isinstance(info.value.__cause__, AttributeError)
    assert re.search(r"'simclr' learns features, not clusters.*\bdec\b", str(info.value.__cause__))
    fitted.save(tmp_path / "simclr.safetensors")  # simclr's projection head travels too, and loads back
    loaded = SelfSupervised.load(tmp_path / "simclr.safetensors")
    assert type(loaded.method_).__name__ == "SimCLR" and not hasattr(loaded, "predict")
    assert not hasattr(SelfSupervised(method="simclr"), "predict")
    assert not hasattr(SelfSupervised(method="no-such-method"), "predict")


def test_predict_before_fit_raises_not_fitted():
    estimator = SelfSupervised(**DEC_PARAMS)
    assert hasattr(estimator, "predict")  # the configured method can predict, once fitted
    with pytest.raises(NotFittedError):
        estimator.predict(np.zeros((4, 64)))


def test_files_saved_without_method_state_still_load(fitted, digits, tmp_path):
    # An estimator file of an earlier version: the backbone and the parameters only.
    X, _ = digits
    path = tmp_path / "old.safetensors"
    description = {**fitted.description_, "params": fitted.get_params(), "n_features_in": 64}
    save_weights(path, fitted.backbone_.state_dict(), description)
    loaded = SelfSupervised.load(path)
    np.testing.assert_allclose(loaded.transform(X[:20]), fitted.transform(X[:20]), rtol=1e-4, atol=1e-5)
    with pytest.raises(AttributeError) as info:
        loaded.predict(X[:20])
    assert "without its method's state" in str(info.value.__cause__)
