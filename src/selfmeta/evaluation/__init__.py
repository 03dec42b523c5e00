"""Evaluation on frozen features: linear probe, weighted kNN, few labels, clustering, topics (pure functions);
adaptation to few labels: a Tip-Adapter cache on frozen features, few-shot fine-tuning of the backbone."""

from selfmeta.evaluation.adapt import (
    ADAPT_PROTOCOLS,
    finetune_backbone,
    finetune_predict,
    finetune_probe,
    run_tip,
    select_tip,
    tip_adapter_logits,
    tip_probe,
)
from selfmeta.evaluation.metrics import classification_scores, cluster_accuracy, clustering_scores
from selfmeta.evaluation.protocols import (
    cluster_assignments,
    cluster_probe,
    few_labels,
    knn_predict,
    knn_probe,
    PROTOCOLS,
    linear_probe,
    run_protocol,
    sample_per_class,
    svm_probe,
)

__all__ = [
    "ADAPT_PROTOCOLS", "finetune_backbone", "finetune_predict", "finetune_probe", "run_tip", "select_tip",
    "tip_adapter_logits", "tip_probe",
    "classification_scores", "cluster_accuracy", "cluster_assignments", "cluster_probe", "clustering_scores", "few_labels",
    "knn_predict", "knn_probe", "linear_probe", "PROTOCOLS", "run_protocol", "sample_per_class", "svm_probe",
]
