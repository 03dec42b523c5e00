"""Anomaly detection on frozen features: detectors on items (``DETECTORS``), the PyOD-shaped estimator,
online series detectors (``STREAM_DETECTORS``) and NAB's scoring (:mod:`selfmeta.anomaly.nab`)."""

from typing import Any

from selfmeta.anomaly.detectors import DETECTORS, Detector
from selfmeta.anomaly.stream import STREAM_DETECTORS, StreamDetector
from selfmeta.anomaly import learned  # noqa: F401  (registers the detectors on learned features)

__all__ = ["DETECTORS", "STREAM_DETECTORS", "AnomalyDetector", "Detector", "StreamDetector"]


def __getattr__(name: str) -> Any:
    if name == "AnomalyDetector":  # loads scikit-learn's estimator machinery: imported when first used
        from selfmeta.anomaly.estimator import AnomalyDetector

        return AnomalyDetector
    raise AttributeError(f"module 'selfmeta.anomaly' has no attribute {name!r}")
