"""DeepCluster: Deep Clustering for Unsupervised Learning of Visual Features (Caron et al., ECCV 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.data.dataset import Dataset
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.methods.base import METHODS
from selfmeta.options import Option
from selfmeta.methods.pseudolabels import PseudoLabelMethod, dataset_outputs, seed_from_torch
from selfmeta.objectives.balanced import balanced_cross_entropy
from selfmeta.objectives.kmeans import kmeans, pca_whiten


@METHODS.register("deepcluster")
class DeepCluster(PseudoLabelMethod):
    """Alternate k-means on the features and classification of the cluster ids (Caron et al. 2018).

    Before every epoch the whole training set is embedded (eval mode, no gradient), the features are
    PCA-whitened to min(pca_dim, num_features) dimensions and L2-normalized, and k-means gives every item
    a pseudo-label; empty clusters are re-seeded by splitting a populated one, as the paper's faiss
    k-means does. The k-means ids are an arbitrary permutation of the previous epoch's, so the linear
    classification head is re-initialized (weights N(0, 0.01), bias 0, the paper's top layer) each time.
    During the epoch the backbone and the head minimize the cross-entropy of head(backbone(view)) against
    the item's pseudo-label. The paper samples images uniformly over the pseudo-classes so that a few
    huge clusters cannot win; this implementation keeps the engine's uniform sampling over items and
    weights each class by 1 / its size instead, the batched equivalent
    (:func:`selfmeta.objectives.balanced.balanced_cross_entropy`).

    Args:
        num_clusters: k. The paper finds over-segmentation helps: about 10x the number of true classes
            (10,000 for ImageNet). Clamped to N // 2 on small data. Larger k makes each epoch's k-means
            slower (O(N k d) per iteration).
        pca_dim: dimension kept by the PCA whitening (the paper: 256); less is faster and smoother.
        kmeans_iters: Lloyd iterations per epoch (faiss's default in the paper's code: 20).

    The head's optimizer state (AdamW moments) is not reset with its weights: the engine owns the
    optimizer. With the paper's SGD this does not arise; with AdamW the stale moments decay within a few
    hundred steps.
    """

    description = "DeepCluster: k-means pseudo-labels on PCA-whitened features each epoch, class-balanced cross-entropy"
    paper = "Caron et al., Deep Clustering for Unsupervised Learning of Visual Features, ECCV 2018"
    options = {
        "pca_dim": Option("dimensions kept by the PCA whitening before k-means (paper: 256)", ge=1),
        "kmeans_iters": Option("Lloyd iterations per epoch (paper: 20)", ge=1),
    }

    def __init__(
        self, backbone: Backbone, views: Views, num_clusters: int = 100, pca_dim: int = 256, kmeans_iters: int = 20
    ) -> None:
        super().__init__(backbone, views, num_clusters)
        self.pca_dim = pca_dim
        self.kmeans_iters = kmeans_iters
        self.reset_head()

    @torch.no_grad()
    def reset_head(self) -> None:
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def relabel(self, data: Dataset, k: int) -> torch.Tensor:
        features = dataset_outputs(self, self.backbone, data)                       # (N, F)
        z = F.normalize(pca_whiten(features, min(self.pca_dim, features.shape[1])), dim=1)  # (N, d)
        result = kmeans(z, k, iters=self.kmeans_iters, seed=seed_from_torch())
        self.reset_head()  # new ids: the old classifier means nothing for them
        return result.labels

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return balanced_cross_entropy(logits, labels, self.cluster_sizes[: logits.shape[1]])
