"""The FewShotLearner estimator: scikit-learn's contract, fit on labelled classes, adapt to new classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits

from selfmeta import FewShotLearner
from selfmeta.errors import SelfmetaError

PARAMS = {"encoder": "conv4", "input_shape": (1, 8, 8), "ways": 5, "shots": 1, "queries": 5, "tasks_per_step": 4,
          "steps": 40, "device": "cpu"}


@pytest.fixture(scope="module")
def split_digits():
    """The first 1,200 digits to meta-train on; the task comes from the other 597. (Six classes are too few
    to meta-train for new classes; tests/test_metatrain_cli.py does that on Omniglot's held-out alphabets.)"""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32) / 16
    return X[:1200], y[:1200], X[1200:], y[1200:]


@pytest.fixture(scope="module")
def fitted(split_digits):
    X, y, _, _ = split_digits
    return FewShotLearner(**PARAMS).fit(X, y)


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_adapts_to_a_task_from_few_examples(split_digits, fitted, method):
    X, y, X_new, y_new = split_digits
    learner = fitted if method == "protonet" else FewShotLearner(**{**PARAMS, "method": "maml", "steps": 20}).fit(X, y)
    rng = np.random.default_rng(0)
    support = np.concatenate([rng.choice(np.flatnonzero(y_new == c), 3, replace=False) for c in (6, 7, 8, 9)])
    query = np.setdiff1d(np.flatnonzero(y_new >= 6), support)
    pred = learner.adapt(X_new[support], y_new[support]).predict(X_new[query])
    assert set(pred) <= {6, 7, 8, 9} and pred.shape == (len(query),)
    assert (pred == y_new[query]).mean() > 0.8  # a 4-way task with 3 shots: chance is 0.25


def test_estimator_contract(split_digits, fitted):
    X = split_digits[0]
    assert clone(fitted).get_params() == fitted.get_params()
    assert not hasattr(clone(fitted), "learner_")
    assert fitted.transform(X[:7]).shape == (7, 64)
    assert [r["step"] for r in fitted.history_][-1] == 40


def test_clear_errors(split_digits, fitted):
    X, y, X_new, y_new = split_digits
    with pytest.raises(SelfmetaError, match="requires y to be passed"):
        FewShotLearner(**PARAMS).fit(X, None)
    with pytest.raises(SelfmetaError, match="at least 2 classes"):
        fitted.adapt(X_new[:3], [6, 6, 6])
    with pytest.raises(SelfmetaError, match="3 labels"):
        fitted.adapt(X_new[:5], y_new[:3])
    with pytest.raises(SelfmetaError, match="input_shape"):
        fitted.transform(X[:, :32])
