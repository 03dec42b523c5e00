"""Anomaly detectors on frozen features: one contract (``Detector``), one registry (``DETECTORS``).

A detector is fitted on the features of normal items only and scores new items, higher = more anomalous.
It sees plain float64 arrays, never a model: the estimator (:mod:`selfmeta.anomaly.estimator`) turns items
into features (raw values, a backbone's embeddings, or a reconstruction error) and sets the threshold.

The contract, as PyOD's detectors have it:

- ``fit(features)`` with (N, d) features of normal items, returns the detector;
- ``score(features)`` -> (M,) float64 scores of new items;
- ``train_scores()`` -> (N,) the scores of the fitted items themselves (PyOD's ``decision_scores_``), with
  no item matched against itself: a nearest-neighbour detector would otherwise give every fitted item the
  distance 0 to its own copy.

Options are constructor keywords, each declared in the class's ``options`` with an :class:`Option`, and
checked by :func:`selfmeta.options.check_options`. Example::

    detector = DETECTORS.get("knn")(k=10).fit(train_features)     # (N, d)
    scores = detector.score(test_features)                        # (M,)
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from selfmeta.errors import SelfmetaError
from selfmeta.options import Option
from selfmeta.registry import Registry

# Entries of one (rows, N) block of similarities in the k-NN search: 2^22 float64 = 32 MiB.
KNN_BLOCK = 2**22


def as_features(features: object, what: str, dim: int | None = None) -> np.ndarray:
    """(N, d) finite float64 array, or one SelfmetaError line saying what is wrong (``what`` names the call)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise SelfmetaError(f"{what}: features must be a non-empty (N, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise SelfmetaError(f"{what}: features contain NaN or infinity (raw items with missing values need an "
                            "encoder that takes them)")
    if dim is not None and x.shape[1] != dim:
        raise SelfmetaError(f"{what}: features of size {x.shape[1]}, the detector was fitted on size {dim}")
    return x


class Detector:
    """Fit on normal features, score new ones (higher = more anomalous). Subclasses write ``_fit``,
    ``_score`` and, where the fitted items need care (no self-match), ``_train_scores``; the base class
    checks shapes and values once.

    ``input`` says what the estimator feeds the detector: ``"embedding"`` (the items' features) or
    ``"reconstruction_error"`` (an (N, 1) column of per-item errors of a method with a decoder).
    """

    description: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    input: ClassVar[str] = "embedding"
    min_items: ClassVar[int] = 2

    def fit(self, features: np.ndarray) -> "Detector":
        """Learn the normal items' distribution from their (N, d) features; returns self."""
        x = as_features(features, f"{self.name} fit")
        if len(x) < self.min_items:
            raise SelfmetaError(f"{self.name} fit: needs at least {self.min_items} items, got {len(x)}")
        self.dim_ = x.shape[1]
        self._fit(x)
        self.train_scores_ = np.asarray(self._train_scores(x), dtype=np.float64)  # (N,)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """(M,) float64 anomaly scores of (M, d) features; higher = more anomalous."""
        if not hasattr(self, "dim_"):
            raise SelfmetaError(f"{self.name}: call fit before score")
        return np.asarray(self._score(as_features(features, f"{self.name} score", self.dim_)), dtype=np.float64)

    def train_scores(self) -> np.ndarray:
        """(N,) scores of the fitted items, none matched against itself."""
        if not hasattr(self, "train_scores_"):
            raise SelfmetaError(f"{self.name}: call fit before train_scores")
        return self.train_scores_

    @property
    def name(self) -> str:
        """``detector 'knn'``: the registered name, for messages."""
        registered = [n for n in DETECTORS if DETECTORS.get(n) is type(self)]
        return f"detector {registered[0] if registered else type(self).__name__!r}"

    def _fit(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _train_scores(self, x: np.ndarray) -> np.ndarray:
        """Default: the fitted items scored like new ones (right for models with no per-item memory)."""
        return self._score(x)


DETECTORS: Registry[type[Detector]] = Registry("detector")


# --- k nearest neighbours ---------------------------------------------------------------------------------


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, d) rows scaled to unit L2 norm; an all-zero row stays zero (cosine similarity 0 to everything)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)                          # (N, 1)
    return x / np.maximum(norms, 1e-12)


def knn_distance(queries: np.ndarray, items: np.ndarray, k: int, metric: str = "cosine", self_match: bool = False,
                 block: int = KNN_BLOCK) -> np.ndarray:
    """Mean distance from each query to its k nearest items:

        score_i = (1/k) * sum_{j in kNN(i)} dist(q_i, f_j)
        cosine:     dist(q, f) = 1 - q.f / (|q| |f|)                in [0, 2]
        euclidean:  dist(q, f) = sqrt(|q|^2 + |f|^2 - 2 q.f)

    Args:
        queries: (M, d); items: (N, d), float64.
        k: neighbours, 1 <= k <= N (N - 1 with ``self_match``).
        metric: "cosine" or "euclidean".
        self_match: the queries are the items themselves (M == N, same order): item i is not its own
            neighbour (exact duplicates of it at other positions still count).
        block: distances held at once; queries are processed in blocks of ``block // N`` rows.

    Returns (M,) float64. One matrix product and one top-k per block, no loop over items.
    """
    if metric == "cosine":
        queries, items = unit_rows(queries), unit_rows(items)
    q, f = torch.from_numpy(queries), torch.from_numpy(items)                # (M, d), (N, d)
    f_sq = f.pow(2).sum(1)                                                    # (N,) squared norms
    rows = max(1, block // len(f))
    out = np.empty(len(q))
    for start in range(0, len(q), rows):
        qb = q[start:start + rows]                                            # (b, d)
        dot = qb @ f.T                                                        # (b, N)
        if metric == "cosine":
            dist = (1 - dot).clamp(0, 2)                                      # (b, N)
        else:
            dist = (qb.pow(2).sum(1, keepdim=True) + f_sq - 2 * dot).clamp_min(0).sqrt()  # (b, N)
        if self_match:
            own = torch.arange(len(qb))
            dist[own, start + own] = torch.inf                                # never its own neighbour
        nearest = dist.topk(k, dim=1, largest=False).values                   # (b, k) smallest distances
        out[start:start + len(qb)] = nearest.mean(1).numpy()
    return out


@DETECTORS.register("knn")
class KNN(Detector):
    """Mean distance to the k nearest normal items ("Deep Nearest Neighbor Anomaly Detection", Bergman,
    Cohen & Hoshen, 2020). The cosine distance suits embeddings, whose direction carries the meaning; it
    ignores magnitude, so raw values whose anomalies are far from the origin want ``metric="euclidean"``.
    k is capped at the number of fitted items (N - 1 for their own scores)."""

    description = "mean distance (cosine or euclidean) to the k nearest normal items"
    options = {
        "k": Option("neighbours averaged; 1 is the nearest-neighbour distance, 5-20 is smoother", gt=0),
        "metric": Option("cosine (embeddings) or euclidean (raw values, where magnitude matters)",
                         choices=("cosine", "euclidean")),
    }

    def __init__(self, k: int = 5, metric: str = "cosine") -> None:
        self.k = k
        self.metric = metric

    def _fit(self, x: np.ndarray) -> None:
        self.items_ = x                                                       # (N, d)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return knn_distance(x, self.items_, min(self.k, len(self.items_)), self.metric)

    def _train_scores(self, x: np.ndarray) -> np.ndarray:
        return knn_distance(x, x, min(self.k, len(x) - 1), self.metric, self_match=True)


# --- Gaussian --------------------------------------------------------------------------------------------


@DETECTORS.register("mahalanobis")
class Mahalanobis(Detector):
    """Squared Mahalanobis distance to a Gaussian fitted on the normal items, with the Ledoit-Wolf shrunk
    covariance (well conditioned when d is near or above N):

        score(x) = (x - mu)^T Sigma^-1 (x - mu)

    ("A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", Lee et
    al., NeurIPS 2018, with one class; Ledoit & Wolf, J. Multivariate Analysis 2004, for the shrinkage.)
    """

    description = "squared Mahalanobis distance, Ledoit-Wolf shrunk covariance"

    def _fit(self, x: np.ndarray) -> None:
        from sklearn.covariance import LedoitWolf

        estimate = LedoitWolf().fit(x)
        self.mean_ = estimate.location_                                       # (d,)
        self.precision_ = estimate.precision_                                 # (d, d) Sigma^-1

    def _score(self, x: np.ndarray) -> np.ndarray:
        centred = x - self.mean_                                              # (M, d)
        return np.einsum("md,de,me->m", centred, self.precision_, centred)   # (M,)


# --- scikit-learn's outlier detectors ---------------------------------------------------------------------


@DETECTORS.register("iforest")
class IForest(Detector):
    """Isolation Forest (Liu, Ting & Zhou, ICDM 2008): items that random axis-aligned splits isolate in few
    steps are anomalous; score = -``score_samples`` (the negated normality of scikit-learn)."""

    description = "isolation forest: few random splits isolate an anomaly"
    options = {
        "n_estimators": Option("trees; 100-300 is usual", ge=1),
        "seed": Option("random state of the trees (the estimator's random_state where not set)", ge=0),
    }

    def __init__(self, n_estimators: int = 200, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.seed = seed

    def _fit(self, x: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        self.forest_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(x)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(x)


@DETECTORS.register("lof")
class LOF(Detector):
    """Local Outlier Factor (Breunig, Kriegel, Ng & Sander, SIGMOD 2000): an item's local density against its
    neighbours'. score = -``score_samples``; the fitted items' scores are their own LOF, computed without
    themselves (``-negative_outlier_factor_``). n_neighbors is capped at N - 1."""

    description = "local outlier factor: density against the neighbours' density"
    options = {"n_neighbors": Option("neighbours; 20 is the usual default, more for large N", gt=0)}

    def __init__(self, n_neighbors: int = 20) -> None:
        self.n_neighbors = n_neighbors

    def _fit(self, x: np.ndarray) -> None:
        from sklearn.neighbors import LocalOutlierFactor

        self.lof_ = LocalOutlierFactor(n_neighbors=min(self.n_neighbors, len(x) - 1), novelty=True).fit(x)

    def _score(self, x: np.ndarray) -> np.ndarray:
        return -self.lof_.score_samples(x)

    def _train_scores(self, x: np.ndarray) -> np.ndarray:
        return -self.lof_.negative_outlier_factor_


# --- reconstruction error ---------------------------------------------------------------------------------


@DETECTORS.register("reconstruction")
class ReconstructionError(Detector):
    """The reconstruction error of an autoencoder trained on normal items is the score itself: its
    "features" are the (N, 1) column of per-item errors that the estimator computes with the run's decoder
    (``Reconstruction.reconstruction_error``), and ``score`` returns that column."""

    description = "reconstruction error of a run trained with a decoder (method reconstruction)"
    input = "reconstruction_error"

    def _fit(self, x: np.ndarray) -> None:
        if x.shape[1] != 1:
            raise SelfmetaError(f"{self.name} fit: takes an (N, 1) column of reconstruction errors, got {x.shape}")

    def _score(self, x: np.ndarray) -> np.ndarray:
        return x[:, 0]                                                        # (M,)
