"""``AnomalyDetector``: a detector on frozen features, in PyOD's shape and scikit-learn's contract.

Fit on normal items only; score new ones (higher = more anomalous); flag those above a threshold::

    from selfmeta.anomaly import AnomalyDetector
    det = AnomalyDetector(encoder="runs/simclr", detector="knn").fit(X_normal)
    scores = det.decision_function(X_test)      # (M,) float64
    flags = det.predict(X_test)                 # (M,) 0 normal, 1 anomaly

The encoder gives the features: None (the raw items, flattened: the baseline any encoder should beat), a run
directory of ``selfmeta pretrain``, or a ``SelfSupervised`` estimator (a fitted one is used frozen; an
unfitted one, as ``clone`` leaves it, is trained on the normal items by ``fit``).

The threshold is PyOD's rule by default: the ``1 - contamination`` percentile of the training items' scores,
so about ``contamination`` of them are flagged. Where the contamination cannot be guessed, ``fpr`` asks for
a false-positive rate instead: ``holdout`` of the normal items are held out of the detector's fit and the
threshold is the ``1 - fpr`` quantile of their scores, so about ``fpr`` of new normal items are flagged
(the estimate needs well over ``1 / fpr`` held-out items).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_array, check_is_fitted

from selfmeta.anomaly.detectors import DETECTORS, Detector
from selfmeta.api import SelfSupervised, as_dataset
from selfmeta.data.dataset import Dataset
from selfmeta.encoders import Backbone
from selfmeta.engine.model import check_compatible, embed, load_backbone, load_method
from selfmeta.errors import SelfmetaError
from selfmeta.methods import METHODS, Method
from selfmeta.options import Option, check_options

log = logging.getLogger(__name__)

FEATURE_BATCH = 1024  # items per forward pass when computing features or reconstruction errors


def methods_with_decoder() -> list[str]:
    """The registered methods that can score their own reconstruction (``reconstruction_error``)."""
    return [n for n in METHODS if callable(getattr(METHODS.get(n), "reconstruction_error", None))]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@torch.no_grad()
def reconstruction_errors(method: Method, data: Dataset, batch_size: int = FEATURE_BATCH,
                          device: str = "cpu") -> np.ndarray:
    """(N,) float64 per-item reconstruction error of every item of ``data`` (``method.reconstruction_error``,
    in eval mode, in batches taken by index)."""
    method = method.to(device).eval()
    n = len(data)
    try:
        errors = [method.reconstruction_error(data.spec.to_model(data.take(torch.arange(i, min(i + batch_size, n))),
                                                                 device)).double().cpu()
                  for i in range(0, n, batch_size)]
    finally:
        method.cpu()
    return torch.cat(errors).numpy()


class AnomalyDetector(BaseEstimator):
    """Fit on normal items, score new ones with a detector on frozen features (PyOD's API).

    Args:
        encoder: None (raw items, flattened), a run directory (str or Path) of ``selfmeta pretrain``, or a
            ``SelfSupervised`` (fitted: used as is; unfitted: trained on the normal items in ``fit``).
        detector: a registered detector: ``knn``, ``mahalanobis``, ``iforest``, ``lof``, ``reconstruction``
            (the last needs an encoder trained with a decoder, method ``reconstruction``).
        detector_options: the detector's options, e.g. ``{"k": 10}``; a detector's ``seed`` defaults to
            ``random_state``.
        contamination: the expected fraction of anomalies among the training items, in (0, 0.5]: the
            threshold flags that fraction of them (PyOD's rule). Unused when ``fpr`` is set.
        fpr: None, or the fraction in (0, 1) of new normal items to flag: the threshold is set on held-out
            normal items instead.
        holdout: the fraction in (0, 1) of the normal items held out to set the ``fpr`` threshold.
        input_shape: (C, H, W) to read flat rows as images, as in ``SelfSupervised`` (a ``SelfSupervised``
            encoder's own is used where this is None).
        modality: the kind of items for ``encoder=None`` (``"series"`` for (N, C, T)); None reads (N, D) as a
            table and (N, H, W) or (N, C, H, W) as images. Encoders bring their own.
        random_state: seed of the held-out split and of random detectors.

    Attributes:
        detector_: the fitted :class:`~selfmeta.anomaly.detectors.Detector`.
        decision_scores_: (N,) scores of the training items (held-out items: their scores as new items).
        threshold_: scores above it are anomalies.
        labels_: (N,) 0/1, ``decision_scores_ > threshold_``.
        encoder_: the fitted ``SelfSupervised`` (None for a run directory or raw items); ``backbone_`` and
            ``description_`` give the features (None for raw items); ``method_``: the whole method, for the
            reconstruction detector (else None).
        n_features_in_: values per item.
    """

    options = {
        "detector": Option("a registered detector: knn, mahalanobis, iforest, lof, reconstruction"),
        "detector_options": Option("the detector's options, e.g. {'k': 10}"),
        "contamination": Option("expected fraction of anomalies in the training items (PyOD's threshold)",
                                gt=0, le=0.5),
        "fpr": Option("fraction of new normal items to flag; the threshold is set on held-out items", gt=0, lt=1),
        "holdout": Option("fraction of the normal items held out to set the fpr threshold", gt=0, lt=1),
        "input_shape": Option("(C, H, W) to read flat rows as images", ge=1),
        "modality": Option("the kind of items of raw X (encoder=None); null: by the array's dimensions"),
        "random_state": Option("seed of the held-out split and of random detectors", ge=0),
    }
    built = ("encoder",)  # checked by kind in fit, not an option with a value type

    def __init__(
        self, encoder: str | Path | SelfSupervised | None = None, detector: str = "knn",
        detector_options: dict | None = None, contamination: float = 0.1, fpr: float | None = None,
        holdout: float = 0.2, input_shape: tuple[int, ...] | None = None, modality: str | None = None,
        random_state: int = 0,
    ) -> None:
        self.encoder = encoder
        self.detector = detector
        self.detector_options = detector_options
        self.contamination = contamination
        self.fpr = fpr
        self.holdout = holdout
        self.input_shape = input_shape
        self.modality = modality
        self.random_state = random_state

    # --- fit ----------------------------------------------------------------------------------------------

    def _checked_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in self.built}
        return check_options("AnomalyDetector", type(self), params, self.built)

    def _build_detector(self, name: str, values: dict[str, Any] | None, seed: int) -> Detector:
        cls = DETECTORS.get(name)
        options = check_options(f"detector {name!r}", cls, dict(values or {}))
        if "seed" in getattr(cls, "options", {}) and "seed" not in options:
            options["seed"] = seed
        return cls(**options)

    def fit(self, X: Any, y: Any = None) -> "AnomalyDetector":
        """Fit on X, items presumed normal (``y`` is accepted for Pipeline compatibility and ignored)."""
        p = self._checked_params()
        detector = self._build_detector(p["detector"], p["detector_options"], p["random_state"])
        if p["fpr"] is None:
            self._fit_encoder(X, p, detector)
            features = self._features(X, detector)                                  # (N, d) float64
            scores = detector.fit(features).train_scores()                          # (N,)
            # PyOD's rule: the (1 - contamination) percentile of the training scores.
            threshold = np.percentile(scores, 100 * (1 - p["contamination"]))
        else:
            X = _rows(X)
            fit_index, held_index = self._holdout_split(len(X), p, detector)
            self._fit_encoder(X[fit_index], p, detector)                             # never sees held-out items
            features = self._features(X, detector)                                  # (N, d) float64
            scores = np.empty(len(X))
            scores[fit_index] = detector.fit(features[fit_index]).train_scores()
            scores[held_index] = detector.score(features[held_index])
            # A fraction fpr of the held-out normal items score above it.
            threshold = np.quantile(scores[held_index], 1 - p["fpr"])
        self.detector_ = detector
        self.decision_scores_ = scores
        self.threshold_ = float(threshold)
        self.labels_ = (scores > self.threshold_).astype(np.int64)
        return self

    @staticmethod
    def _holdout_split(n: int, p: dict[str, Any], detector: Detector) -> tuple[np.ndarray, np.ndarray]:
        """(fit, held-out) item indices, sorted: ``holdout`` of the n items, drawn with ``random_state``."""
        held = int(round(p["holdout"] * n))
        if held < 1 or n - held < detector.min_items:
            raise SelfmetaError(f"fpr needs held-out normal items: holdout={p['holdout']:g} of n_samples={n} holds "
                                f"{held}, leaving {n - held} to fit; give more items or another holdout")
        if held * p["fpr"] < 1:
            log.warning("fpr=%g from %d held-out items (fewer than 1/fpr): the threshold is about their maximum; "
                        "hold out %d or more for a usable estimate", p["fpr"], held, int(np.ceil(10 / p["fpr"])))
        order = np.random.default_rng(p["random_state"]).permutation(n)
        return np.sort(order[held:]), np.sort(order[:held])

    def _fit_encoder(self, X: np.ndarray, p: dict[str, Any], detector: Detector) -> None:
        """Resolve ``encoder`` into ``encoder_``, ``backbone_``, ``description_``, ``method_``."""
        encoder = self.encoder
        self.encoder_: SelfSupervised | None = None
        self.backbone_: Backbone | None = None
        self.description_: dict[str, Any] | None = None
        self.method_: Method | None = None
        wants_errors = detector.input == "reconstruction_error"
        if encoder is None:
            if wants_errors:
                raise SelfmetaError(f"detector {p['detector']!r} scores a decoder's reconstruction error: give an "
                                    f"encoder trained with a decoder (method {' or '.join(methods_with_decoder())})")
            data = as_dataset(X, p["input_shape"], min_items=2, modality=p["modality"])
            if data.x is None:
                raise SelfmetaError(f"{data.modality} items have no raw features to score: give an encoder")
            self.raw_shape_, self.raw_modality_ = data.input_shape, data.modality
            self.n_features_in_ = int(np.prod(data.input_shape))
            return
        if isinstance(encoder, (str, Path)):
            self.backbone_, self.description_ = load_backbone(encoder)
            if wants_errors:
                self._require_decoder(self.description_.get("method"), self.description_.get("tasks"), str(encoder))
                with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG
                    self.method_ = load_method(encoder, self._data(X))
                self.backbone_ = self.method_.backbone
        elif isinstance(encoder, SelfSupervised):
            if not hasattr(encoder, "backbone_"):
                encoder = clone(encoder).fit(X)
            self.encoder_, self.backbone_, self.description_ = encoder, encoder.backbone_, encoder.description_
            if wants_errors:
                self._require_decoder(encoder.method, None, "the SelfSupervised encoder")
                if encoder.method_ is None:
                    raise SelfmetaError("the SelfSupervised encoder was saved without its method's state (its "
                                        "decoder): fit it again for the reconstruction detector")
                self.method_ = encoder.method_
        else:
            raise SelfmetaError(f"encoder must be None, a run directory or a SelfSupervised estimator, got "
                                f"{type(encoder).__name__}")
        self.n_features_in_ = int(np.prod(self.description_["input_shape"]))

    @staticmethod
    def _require_decoder(method: str | None, tasks: str | None, what: str) -> None:
        able = methods_with_decoder()
        if tasks is not None or method not in able:
            raise SelfmetaError(f"detector 'reconstruction' needs an encoder trained with a decoder (method "
                                f"{' or '.join(able)}); {what} was trained with method {method!r}")

    # --- features -----------------------------------------------------------------------------------------

    def _input_shape(self) -> tuple[int, ...] | None:
        if self.input_shape is None and self.encoder_ is not None:
            return self.encoder_.input_shape
        return self.input_shape

    def _data(self, X: Any) -> Dataset:
        """X as items of the encoder's modality and shape (checked), or raw items of the fitted shape."""
        if self.description_ is None:
            data = as_dataset(X, self.input_shape, modality=self.raw_modality_)
            if data.input_shape != self.raw_shape_:
                if len(data.input_shape) == 1 and len(self.raw_shape_) == 1:  # scikit-learn's words for tables
                    raise SelfmetaError(f"X has {data.input_shape[0]} features, but AnomalyDetector is expecting "
                                        f"{self.raw_shape_[0]} features as input")
                raise SelfmetaError(f"X has items of shape {data.input_shape}; AnomalyDetector was fitted on "
                                    f"{self.raw_shape_}")
            return data
        data = as_dataset(X, self._input_shape(), modality=self.description_["modality"])
        return check_compatible(self.description_, data)

    def _features(self, X: Any, detector: Detector) -> np.ndarray:
        """(N, d) float64: raw items flattened, the backbone's embeddings, or (N, 1) reconstruction errors."""
        data = self._data(X)
        if detector.input == "reconstruction_error":
            return reconstruction_errors(self.method_, data, device=_device())[:, None]      # (N, 1)
        if self.backbone_ is None:
            return data.spec.to_model(data.x, "cpu").reshape(len(data), -1).double().numpy()  # (N, prod(shape))
        try:
            return embed(self.backbone_, data, FEATURE_BATCH, _device()).double().numpy()    # (N, num_features)
        finally:
            self.backbone_.cpu()

    # --- PyOD's API ---------------------------------------------------------------------------------------

    def decision_function(self, X: Any) -> np.ndarray:
        """(M,) float64 anomaly scores of the items of X; higher = more anomalous."""
        check_is_fitted(self, "threshold_")
        return self.detector_.score(self._features(X, self.detector_))

    def predict(self, X: Any) -> np.ndarray:
        """(M,) int64: 1 for anomalies (score above ``threshold_``), 0 for normal items."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)


def _rows(X: Any) -> np.ndarray:
    """X as an array indexable by item (tensors, lists, DataFrames); its values are checked later, by
    ``as_dataset``, with scikit-learn's messages."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        return check_array(X, accept_sparse=False, dtype=None, allow_nd=True, ensure_2d=False,
                           ensure_all_finite=False, input_name="X")
    except ValueError as exc:
        raise SelfmetaError(" ".join(str(exc).split())) from None
