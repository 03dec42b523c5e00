"""Scores of predictions: accuracy with macro precision/recall/F1, clustering accuracy/NMI/ARI, and the
ranking scores of an anomaly detector (AUROC, AUPRC)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import (
    adjusted_rand_score, average_precision_score, normalized_mutual_info_score, precision_recall_fscore_support,
    roc_auc_score,
)


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
    }


def cluster_accuracy(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes (Hungarian algorithm)."""
    classes, y = np.unique(y_true, return_inverse=True)
    ids, c = np.unique(clusters, return_inverse=True)
    counts = np.zeros((len(ids), len(classes)), dtype=np.int64)   # (clusters, classes) contingency
    np.add.at(counts, (c, y), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": cluster_accuracy(y_true, clusters),
        "nmi": float(normalized_mutual_info_score(y_true, clusters)),
        "ari": float(adjusted_rand_score(y_true, clusters)),
    }


def detection_scores(is_anomaly: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """How well (N,) scores (higher = more anomalous) rank the anomalies (``is_anomaly`` (N,) bool, the
    positive class) above the normal items: AUROC (0.5 is chance) and AUPRC, the average precision (chance
    is the fraction of anomalies). Both classes must be present. (scikit-learn's sum of precision steps can
    exceed 1 by a rounding error: clipped.)"""
    return {"auroc": float(roc_auc_score(is_anomaly, scores)),
            "auprc": float(np.clip(average_precision_score(is_anomaly, scores), 0.0, 1.0))}
