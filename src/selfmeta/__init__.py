"""selfmeta: learn features from unlabeled data with self-supervised learning and meta-learning."""

__version__ = "0.1.0"

from selfmeta.api import FewShotLearner, SelfSupervised  # noqa: E402
from selfmeta.data import load_data  # noqa: E402
from selfmeta.anomaly import AnomalyDetector  # noqa: E402

__all__ = ["AnomalyDetector", "FewShotLearner", "SelfSupervised", "__version__", "load_data"]
