"""Anomaly detection on frozen features: detectors on items (``DETECTORS``), the PyOD-shaped estimator,
online series detectors (``STREAM_DETECTORS``) and NAB's scoring (:mod:`selfmeta.anomaly.nab`)."""

from selfmeta.anomaly.detectors import DETECTORS, Detector
from selfmeta.anomaly.estimator import AnomalyDetector
from selfmeta.anomaly.stream import STREAM_DETECTORS, StreamDetector
from selfmeta.anomaly import learned  # noqa: F401  (registers the detectors on learned features)

__all__ = ["DETECTORS", "STREAM_DETECTORS", "AnomalyDetector", "Detector", "StreamDetector"]
