"""selfmeta: learn features from unlabeled data with self-supervised learning and meta-learning."""

__version__ = "0.1.0"

# The estimators load scikit-learn, about a second and a half: imported when first used (PEP 562), so that
# `selfmeta --help` and every command that does not need them start faster.
_LAZY = {
    "AnomalyDetector": "selfmeta.anomaly.estimator",
    "FewShotLearner": "selfmeta.api",
    "SelfSupervised": "selfmeta.api",
    "Recommender": "selfmeta.api",
    "load_data": "selfmeta.data",
}

__all__ = ["AnomalyDetector", "FewShotLearner", "Recommender", "SelfSupervised", "__version__", "load_data"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'selfmeta' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
