"""Topics in the SMS corpus: k-means on a run's features of every message (the ``all`` split), each cluster
named by its top words (c-TF-IDF), with NMI against the spam/ham labels; the same with TF-IDF vectors
(word 1-2 grams, L2-normalized) in place of the learned features, for scale.

What ``selfmeta topics RUN --data ../shared/data/sms-spam/SMSSpamCollection --clusters K --out topics.json``
writes, plus the baseline; prints a Markdown table of the topics and one JSON line of the NMIs.

    python benchmarks/sms_topics.py runs/sms --clusters 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from selfmeta.data import load_data
from selfmeta.engine.model import check_compatible, embed, load_backbone
from selfmeta.evaluation import cluster_assignments, clustering_scores
from selfmeta.evaluation.topics import describe_topics
from sms_spam import DATA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    data = load_data(args.data, "all")
    y = data.require_labels().numpy()
    spam = data.classes.index("spam")
    backbone, description = load_backbone(args.run)
    features = embed(backbone, check_compatible(description, data)).numpy()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.decomposition import TruncatedSVD

    # k-means on 100-dimensional LSA of the TF-IDF vectors (dense k-means on 40k sparse columns is slow).
    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(data.raw)
    lsa = TruncatedSVD(100, random_state=0).fit_transform(tfidf)
    out = {"clusters": args.clusters, "documents": len(data)}
    for name, x in (("selfmeta", features), ("tfidf_lsa", lsa)):
        clusters = cluster_assignments(x, args.clusters)
        out[f"{name}_nmi"] = round(clustering_scores(y, clusters)["nmi"], 4)
        out[f"{name}_nmi_k2"] = round(clustering_scores(y, cluster_assignments(x, 2))["nmi"], 4)
        if name == "selfmeta":
            print(f"Topics of {args.run}, {args.clusters} clusters of {len(data)} messages:\n")
            print("| cluster | messages | spam share | top words (c-TF-IDF) |")
            print("|---:|---:|---:|---|")
            for topic in describe_topics(data.raw, clusters, x, args.top, 0):
                members = clusters == topic["cluster"]
                print(f"| {topic['cluster']} | {topic['size']} | {100 * np.mean(y[members] == spam):.0f}% | "
                      f"{', '.join(topic['words'])} |")
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
