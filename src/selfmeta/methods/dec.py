"""DEC: Unsupervised Deep Embedding for Clustering Analysis (Xie, Girshick & Farhadi, ICML 2016)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from selfmeta import distributed
from selfmeta.data.dataset import Dataset
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.options import Option
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.methods.pseudolabels import dataset_outputs, seed_from_torch
from selfmeta.methods.simclr import global_nt_xent
from selfmeta.objectives.dec import dec_loss, log_soft_assignment
from selfmeta.objectives.kmeans import kmeans

log = logging.getLogger(__name__)

INIT_KMEANS_ITERS = 100  # one k-means at the start: run it to convergence


@METHODS.register("dec")
class DEC(Method):
    """Learnable cluster centroids in feature space; the encoder and the centroids sharpen the soft assignments.

    DEC fine-tunes an encoder that already embeds the data well (the paper's pre-trained autoencoder) and
    initializes the centroids by k-means on its codes. Here the encoder learns from scratch, so a
    contrastive term (NT-Xent between two views, as in SimCLR) shapes the features throughout, as IDEC
    (Guo et al., IJCAI 2017) keeps its autoencoder's loss to stop DEC from distorting the feature space.
    For the first ``warmup_epochs`` epochs only that term trains. At the first ``on_epoch_start`` after
    them the centroids are initialized by k-means (k-means++ seeding) on the features of the whole
    training set; from then on each step also soft-assigns the first view's features z to the centroids
    with a Student's t kernel, q_ij = (1 + |z_i - mu_j|^2/alpha)^(-(alpha+1)/2) normalized over j, and
    minimizes

        contrast_weight * NT-Xent + KL(P || Q) + beta * KL(uniform || mean_i q_i),

    where P, DEC's target (q^2 divided by the soft cluster frequency, renormalized), is computed from the
    batch without gradient. The KL term pulls each item towards its confident clusters; it can still pile
    items into few clusters while the encoder keeps learning, hence the balance term. Without warm-up and
    contrastive term (``warmup_epochs=0, contrast_weight=0``: plain DEC from a random encoder) MNIST-like
    digits collapse into one or two clusters. With several processes f_j and the mean assignment are over
    the global batch (soft assignments gathered with gradient), as are the contrastive negatives.
    ``predict`` gives the cluster of un-augmented items.

    Args:
        num_clusters: K, the number of clusters ``predict`` returns (the number of classes if known).
        alpha: degrees of freedom of the t kernel; DEC fixes 1 (heavier tails for smaller values).
        beta: weight of the balance term; 0 is plain DEC. Raise it (2-5) if ``clusters_used`` in the logs
            drops well below num_clusters; lower it if the clusters should follow an uneven class balance.
        warmup_epochs: epochs of the contrastive term alone before k-means places the centroids.
        contrast_weight: weight of the NT-Xent term (0 drops it and the projection head's work).
        temperature, proj_hidden, proj_dim: NT-Xent temperature and projection head widths, as in SimCLR.
    """

    description = "DEC: contrastive warm-up, k-means centroids, Student's t assignment, KL to the sharpened target + balance"
    paper = "Xie, Girshick & Farhadi, Unsupervised Deep Embedding for Clustering Analysis, ICML 2016"
    options = {
        "num_clusters": Option("K, the clusters predict returns", ge=2),
        "alpha": Option("degrees of freedom of the Student's t kernel (DEC: 1)", gt=0),
        "beta": Option("weight of the balance term (0: plain DEC)", ge=0),
        "warmup_epochs": Option("epochs of the contrastive term alone before k-means", ge=0),
        "contrast_weight": Option("weight of the NT-Xent term (0 drops it)", ge=0),
        "temperature": Option("NT-Xent temperature", gt=0),
        **PROJECTION_OPTIONS,
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        num_clusters: int = 10,
        alpha: float = 1.0,
        beta: float = 1.0,
        warmup_epochs: int = 2,
        contrast_weight: float = 1.0,
        temperature: float = 0.5,
        proj_hidden: int = 512,
        proj_dim: int = 128,
    ) -> None:
        super().__init__(backbone, views)
        self.num_clusters = num_clusters
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.warmup_epochs = warmup_epochs
        self.contrast_weight = float(contrast_weight)
        self.temperature = temperature
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)
        self.centroids = nn.Parameter(torch.zeros(num_clusters, backbone.num_features))   # (K, F)
        self.register_buffer("initialized", torch.tensor(0))  # 1 once k-means has placed the centroids

    def on_epoch_start(self, epoch: int, data: Dataset) -> None:
        if int(self.initialized) or epoch < self.warmup_epochs:
            return
        if len(data) < self.num_clusters:
            raise SelfmetaError(f"DEC with num_clusters={self.num_clusters} needs at least that many items, got {len(data)}")
        features = dataset_outputs(self, self.backbone, data)                            # (N, F)
        result = kmeans(features, self.num_clusters, iters=INIT_KMEANS_ITERS, seed=seed_from_torch())
        with torch.no_grad():
            self.centroids.copy_(result.centroids)
            self.initialized.fill_(1)
            distributed.broadcast_(self.centroids)
        log.info("DEC: centroids initialized by k-means on %d items (inertia %.4g)", len(data), result.inertia)

    def _log_q(self, z: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, K) log soft assignments, in fp32."""
        if not int(self.initialized):
            raise SelfmetaError(
                "DEC's centroids are not initialized: they are placed by on_epoch_start(epoch, data) once "
                f"epoch >= warmup_epochs ({self.warmup_epochs})"
            )
        with torch.autocast(z.device.type, enabled=False):
            return log_soft_assignment(z.float(), self.centroids.float(), self.alpha)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        contrast = self.contrast_weight > 0
        views = torch.cat([self.views(x), self.views(x)]) if contrast else self.views(x)   # (2B or B, ...)
        h = self.backbone(views)                                                           # (2B or B, F)
        total, logs = h.new_zeros((), dtype=torch.float32), {}
        if contrast:
            z = self.projector(h).float()
            nce, logs["pos_sim"] = global_nt_xent(z[:b], z[b:], self.temperature)
            total = total + self.contrast_weight * nce
            logs["contrast"] = float(nce.detach())
        if int(self.initialized) or not contrast:  # (without the contrastive term _log_q says what is missing)
            log_q = self._log_q(h[:b])                               # (B, K)
            all_q = distributed.all_gather_with_grad(log_q.exp())    # (W*B, K)
            with torch.autocast(log_q.device.type, enabled=False):
                loss = dec_loss(log_q, self.beta, all_q)
            total = total + loss.total
            with torch.no_grad():
                used = torch.bincount(all_q.argmax(1), minlength=self.num_clusters).gt(0).sum()
            logs.update(kl=float(loss.kl.detach()), balance=float(loss.balance.detach()), clusters_used=float(used))
        return StepOutput(total, logs)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) ``to_unit`` inputs -> (B,) int64 cluster ids: argmax_j q_ij of the un-augmented items (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            return self._log_q(self.backbone(x)).argmax(dim=1)
        finally:
            self.train(was_training)
