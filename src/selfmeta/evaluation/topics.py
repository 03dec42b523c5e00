"""Topics: the words that name each cluster of documents, by class-based TF-IDF (BERTopic's c-TF-IDF).

Grootendorst 2022 (BERTopic) treats all documents of a cluster as one document and weighs term t in
cluster c by

    W[c, t] = tf[c, t] / sum_t' tf[c, t']  *  log(1 + A / f[t])

with tf the counts of t in cluster c, A the mean number of words per cluster and f[t] the count of t over
all clusters: frequent in the cluster, rare overall. Words are scikit-learn's ``CountVectorizer`` tokens
(runs of 2+ letters or digits, lower-cased), English stop words left out by default, as BERTopic's users
commonly set; the topic words read the documents themselves, not the model's sub-word tokens.

Example::

    clusters = cluster_assignments(features, 8)        # selfmeta.evaluation.protocols
    for topic in describe_topics(documents, clusters, features):
        print(topic["cluster"], topic["size"], topic["words"][:5])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfmeta.errors import SelfmetaError


def class_tfidf(counts: np.ndarray) -> np.ndarray:
    """(K, V) word counts per cluster -> (K, V) c-TF-IDF weights (the formula above; float64)."""
    counts = np.asarray(counts, dtype=np.float64)
    tf = counts / np.maximum(counts.sum(1, keepdims=True), 1)                     # (K, V) L1 per cluster
    mean_words = counts.sum() / len(counts)                                        # A
    frequency = np.maximum(counts.sum(0, keepdims=True), 1)                       # (1, V) f_t
    return tf * np.log1p(mean_words / frequency)


def cluster_word_counts(documents: np.ndarray, clusters: np.ndarray, stop_words: str | None = "english"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) documents and their (N,) cluster ids 0..K-1 -> ((K, V) counts, (V,) words)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    clusters = np.asarray(clusters)
    vectorizer = CountVectorizer(stop_words=stop_words)
    try:
        counts = vectorizer.fit_transform([str(d) for d in documents])              # (N, V) sparse
    except ValueError:  # no word at all (every document empty or stop words only)
        raise SelfmetaError("the documents hold no words to name topics by") from None
    k = int(clusters.max()) + 1
    membership = sparse.csr_matrix((np.ones(len(clusters)), (clusters, np.arange(len(clusters)))),
                                   shape=(k, len(clusters)))                        # (K, N)
    return np.asarray((membership @ counts).todense()), vectorizer.get_feature_names_out()


def describe_topics(documents: np.ndarray, clusters: np.ndarray, features: np.ndarray | None = None,
                    top: int = 10, examples: int = 3, stop_words: str | None = "english") -> list[dict[str, Any]]:
    """Per cluster: its size, its ``top`` words by c-TF-IDF with their weights, and ``examples`` documents
    (those nearest the cluster's mean feature, in cosine, when ``features`` are given; else the first)."""
    clusters = np.asarray(clusters)
    counts, words = cluster_word_counts(documents, clusters, stop_words)
    weights = class_tfidf(counts)                                                  # (K, V)
    if features is not None:
        x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1)
    out = []
    for c in range(len(counts)):
        members = np.flatnonzero(clusters == c)
        if len(members) == 0:
            continue
        best = np.argsort(-weights[c], kind="stable")[:top]
        best = best[weights[c, best] > 0]
        if features is not None:
            centre = F.normalize(x[members].mean(0), dim=0)
            members = members[torch.argsort(-(x[members] @ centre), stable=True).numpy()]
        out.append({"cluster": c, "size": int((clusters == c).sum()),
                    "words": [str(words[i]) for i in best],
                    "weights": [round(float(weights[c, i]), 5) for i in best],
                    "examples": [str(documents[i]) for i in members[:examples]]})
    return out
