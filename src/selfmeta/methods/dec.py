"""DEC: Unsupervised Deep Embedding for Clustering Analysis (Xie, Girshick & Farhadi, ICML 2016)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from selfmeta import distributed
from selfmeta.data.dataset import Dataset
from selfmeta.data.views import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.pseudolabels import dataset_outputs, seed_from_torch
from selfmeta.objectives.dec import dec_loss, log_soft_assignment
from selfmeta.objectives.kmeans import kmeans

log = logging.getLogger(__name__)

INIT_KMEANS_ITERS = 100  # one k-means at the start: run it to convergence


@METHODS.register("dec")
class DEC(Method):
    """Learnable cluster centroids in feature space; the encoder and the centroids sharpen the soft assignments.

    At the first ``on_epoch_start`` the centroids are initialized by k-means (k-means++ seeding) on the
    features of the whole training set, as DEC initializes them on its autoencoder's codes. Each step
    embeds one view of the batch, z = backbone(view), soft-assigns it to the centroids with a Student's t
    kernel, q_ij = (1 + |z_i - mu_j|^2/alpha)^(-(alpha+1)/2) normalized over j, and minimizes

        KL(P || Q) + beta * KL(uniform || mean_i q_i),

    where P, DEC's target (q^2 divided by the soft cluster frequency, renormalized), is computed from the
    batch without gradient. The first term pulls each item towards its confident clusters; DEC alone can
    still pile items into few clusters when the encoder keeps learning, hence the balance term.
    Unlike DEC, which fine-tunes a pre-trained autoencoder's encoder, the encoder here learns from the
    start, on augmented views. With several processes f_j and the mean assignment are over the global
    batch (soft assignments gathered with gradient). ``predict`` gives the cluster of un-augmented items.

    Args:
        num_clusters: K, the number of clusters ``predict`` returns (the number of classes if known).
        alpha: degrees of freedom of the t kernel; DEC fixes 1 (heavier tails for smaller values).
        beta: weight of the balance term; 0 is plain DEC. Raise it (2-5) if ``clusters_used`` in the logs
            drops well below num_clusters; lower it if the clusters should follow an uneven class balance.
    """

    description = "DEC: k-means-initialized centroids, Student's t soft assignment, KL to the sharpened target + balance"
    paper = "Xie, Girshick & Farhadi, Unsupervised Deep Embedding for Clustering Analysis, ICML 2016"

    def __init__(
        self, backbone: Backbone, views: Views, num_clusters: int = 10, alpha: float = 1.0, beta: float = 1.0
    ) -> None:
        super().__init__(backbone, views)
        if not isinstance(num_clusters, int) or num_clusters < 2:
            raise SelfmetaError(f"num_clusters must be an integer >= 2, got {num_clusters!r}")
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise SelfmetaError(f"alpha must be a positive number, got {alpha!r}")
        if not isinstance(beta, (int, float)) or beta < 0:
            raise SelfmetaError(f"beta must be a number >= 0, got {beta!r}")
        self.num_clusters = num_clusters
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.centroids = nn.Parameter(torch.zeros(num_clusters, backbone.num_features))   # (K, F)
        self.register_buffer("initialized", torch.tensor(0))  # 1 once k-means has placed the centroids

    def on_epoch_start(self, epoch: int, data: Dataset) -> None:
        if int(self.initialized):
            return
        if len(data) < self.num_clusters:
            raise SelfmetaError(f"DEC with num_clusters={self.num_clusters} needs at least that many items, got {len(data)}")
        features = dataset_outputs(self, self.backbone, data.x)                            # (N, F)
        result = kmeans(features, self.num_clusters, iters=INIT_KMEANS_ITERS, seed=seed_from_torch())
        with torch.no_grad():
            self.centroids.copy_(result.centroids)
            self.initialized.fill_(1)
            distributed.broadcast_(self.centroids)
        log.info("DEC: centroids initialized by k-means on %d items (inertia %.4g)", len(data), result.inertia)

    def _log_q(self, x: torch.Tensor) -> torch.Tensor:
        if not int(self.initialized):
            raise SelfmetaError("DEC's centroids are not initialized: call on_epoch_start(epoch, data) first")
        z = self.backbone(x).float()                                                       # (B, F)
        with torch.autocast(z.device.type, enabled=False):
            return log_soft_assignment(z, self.centroids.float(), self.alpha)              # (B, K)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        log_q = self._log_q(self.views(x))                       # (B, K)
        all_q = distributed.all_gather_with_grad(log_q.exp())    # (W*B, K)
        with torch.autocast(log_q.device.type, enabled=False):
            loss = dec_loss(log_q, self.beta, all_q)
        with torch.no_grad():
            used = torch.bincount(all_q.argmax(1), minlength=self.num_clusters).gt(0).sum()
        logs = {"kl": float(loss.kl.detach()), "balance": float(loss.balance.detach()), "clusters_used": float(used)}
        return StepOutput(loss.total, logs)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) ``to_unit`` inputs -> (B,) int64 cluster ids: argmax_j q_ij of the un-augmented items (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            return self._log_q(x).argmax(dim=1)
        finally:
            self.train(was_training)
