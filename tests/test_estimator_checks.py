"""scikit-learn's own estimator checks: the peer test suite for the API the README advertises.

Every check runs on tiny settings (one epoch or two meta-steps), so the whole suite takes seconds. No check
is expected to fail: where one contradicted self-supervised training it would be listed in
``expected_failed_checks`` with its reason.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from selfmeta import FewShotLearner, SelfSupervised
from selfmeta.anomaly import AnomalyDetector

ESTIMATORS = [
    SelfSupervised(encoder="mlp", epochs=1, batch_size=16, encoder_options={"widths": [16]}),
    FewShotLearner(encoder="mlp", ways=2, shots=1, queries=1, tasks_per_step=2, steps=2,
                   encoder_options={"widths": [16]}),
    AnomalyDetector(),                                      # raw items, k-NN, contamination threshold
    AnomalyDetector(detector="mahalanobis", fpr=0.1),       # the held-out threshold
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda estimator: {})
def test_sklearn_compatible(estimator, check):
    check(estimator)
