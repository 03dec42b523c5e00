"""Evaluation protocols on frozen features, as pure functions of (features, labels) arrays.

All take ``train_x`` (N, d) / ``train_y`` (N,) to fit on and ``test_x`` / ``test_y`` to score, and return a
dict of plain floats. Nothing here touches a model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from selfmeta.errors import SelfmetaError
from selfmeta.evaluation.metrics import classification_scores, clustering_scores


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, C: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Multinomial logistic regression on standardized features (the linear evaluation protocol)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train_x, train_y)
    return classification_scores(test_y, clf.predict(test_x))


SVM_C = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
SVM_HARD_MARGIN = 1e8     # TS2Vec's C = inf: libsvm needs a finite C, and 1e8 separates as a hard margin does
SVM_MAX_TRAIN = 10_000    # the grid search fits on a stratified sample of this many items at most


def svm_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0,
) -> dict[str, float]:
    """An SVM with an RBF kernel (gamma "scale") on the frozen features, the UCR protocol of T-Loss and TS2Vec
    (Yue et al. 2022, ``fit_svm``): C chosen by 5-fold cross-validation on the train split only, among
    1e-4 .. 1e4 and a hard margin; with fewer than 5 items per class or 50 in all, the hard margin alone."""
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.svm import SVC

    train_y = np.asarray(train_y)
    classes, counts = np.unique(train_y, return_counts=True)
    if len(train_y) // len(classes) < 5 or len(train_y) < 50:
        model = SVC(C=SVM_HARD_MARGIN, gamma="scale").fit(train_x, train_y)
        return {**classification_scores(test_y, model.predict(test_x)), "C": SVM_HARD_MARGIN}
    if len(train_y) > SVM_MAX_TRAIN:
        train_x, _, train_y, _ = train_test_split(train_x, train_y, train_size=SVM_MAX_TRAIN, random_state=seed,
                                                  stratify=train_y)
    folds = min(5, int(np.unique(train_y, return_counts=True)[1].min()))
    search = GridSearchCV(SVC(gamma="scale"), {"C": [*SVM_C, SVM_HARD_MARGIN]}, cv=folds).fit(train_x, train_y)
    return {**classification_scores(test_y, search.predict(test_x)), "C": float(search.best_params_["C"])}


def knn_predict(
    train_x: np.ndarray | torch.Tensor, train_y: np.ndarray | torch.Tensor, test_x: np.ndarray | torch.Tensor,
    k: int = 20, temperature: float = 0.07, chunk: int = 1024,
) -> np.ndarray:
    """Weighted k-nearest-neighbour vote on cosine similarity (Wu et al. 2018; DINO's ``knn_classifier``).

    Each of the k neighbours votes for its class with weight exp(similarity / temperature).
    """
    train = F.normalize(torch.as_tensor(np.asarray(train_x), dtype=torch.float32), dim=1)   # (N, d)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)                        # (N,)
    test = F.normalize(torch.as_tensor(np.asarray(test_x), dtype=torch.float32), dim=1)     # (M, d)
    k = min(k, len(train))
    num_classes = int(labels.max()) + 1
    out = []
    for i in range(0, len(test), chunk):
        sim, idx = (test[i : i + chunk] @ train.T).topk(k, dim=1)                   # (m, k)
        votes = torch.zeros(len(sim), num_classes).scatter_add_(1, labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(1))
    return torch.cat(out).numpy()


def knn_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    return classification_scores(np.asarray(test_y), knn_predict(train_x, train_y, test_x, k, temperature))


def sample_per_class(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of k random examples of every class (sorted); errors if a class has fewer than k."""
    classes, counts = np.unique(y, return_counts=True)
    if k < 1:
        raise SelfmetaError(f"labels per class must be at least 1, got {k}")
    if k > counts.min():
        raise SelfmetaError(
            f"{k} labels per class asked, but class {classes[counts.argmin()]} has only {counts.min()} examples"
        )
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in classes]))


def few_labels(
    probe: Callable[..., dict[str, float]], train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
    test_y: np.ndarray, labels_per_class: int, seeds: int = 5, **probe_options,
) -> dict[str, float]:
    """``probe`` fitted on k labelled examples per class, drawn ``seeds`` times; mean and std of each score."""
    runs = [
        probe(train_x[idx], train_y[idx], test_x, test_y, **probe_options)
        for idx in (sample_per_class(np.asarray(train_y), labels_per_class, s) for s in range(seeds))
    ]
    out = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    out["accuracy_std"] = float(np.std([r["accuracy"] for r in runs]))
    out["labels_per_class"] = labels_per_class
    out["seeds"] = seeds
    return out


def cluster_assignments(features: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means on L2-normalized features: (N,) cluster ids."""
    if not 2 <= n_clusters <= len(features):
        raise SelfmetaError(f"the number of clusters must be between 2 and the number of items ({len(features)}), "
                            f"got {n_clusters}")
    x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1).numpy()
    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(x)


def cluster_probe(features: np.ndarray, labels: np.ndarray, n_clusters: int | None = None, seed: int = 0) -> dict[str, float]:
    """k-means (k = number of classes) on L2-normalized features; Hungarian accuracy, NMI, ARI."""
    labels = np.asarray(labels)
    return clustering_scores(labels, cluster_assignments(features, n_clusters or len(np.unique(labels)), seed))


PROTOCOLS = ("linear", "knn", "svm", "cluster")


def run_protocol(
    protocol: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
    labels_per_class: int | None = None, seeds: int = 5,
) -> dict[str, float]:
    """One named protocol: probes fit on the train split and score the test split; ``cluster`` clusters the
    test split. With ``labels_per_class`` the probe sees only that many labels per class (mean over seeds)."""
    if protocol not in PROTOCOLS:
        raise SelfmetaError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if seeds < 1:
        raise SelfmetaError(f"--seeds must be at least 1, got {seeds}")
    labels = test_y if protocol == "cluster" else train_y
    if len(np.unique(labels)) < 2:
        raise SelfmetaError(f"the {protocol} protocol needs at least 2 classes; the data has "
                            f"{len(np.unique(labels))}")
    if protocol == "cluster":
        result = cluster_probe(test_x, test_y)
    else:
        probe = {"linear": linear_probe, "knn": knn_probe, "svm": svm_probe}[protocol]
        if labels_per_class is None:
            result = probe(train_x, train_y, test_x, test_y)
        else:
            result = few_labels(probe, train_x, train_y, test_x, test_y, labels_per_class, seeds)
    return {"protocol": protocol, **result}
