"""What the clustering methods share: the features of the whole training set, and per-item pseudo-labels.

:class:`PseudoLabelMethod` is the template of DeepCluster and SeLa: a linear head over the backbone
features is trained with cross-entropy against ``pseudo_labels[index]``; before every epoch the subclass
re-labels the whole training set (``relabel``). The labels are a buffer, so they are saved with
checkpoints; re-labelling happens once per epoch, so resuming mid-epoch keeps the labels the interrupted
run trained with; with several processes rank 0's labels and head are broadcast to every rank, so the
ranks agree even where their k-means or GPU arithmetic would differ.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta import distributed
from selfmeta.data.dataset import Dataset
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import Method, StepOutput
from selfmeta.options import Option

log = logging.getLogger(__name__)

EMBED_BATCH = 512  # items per forward pass when a method runs over the whole training set


@torch.no_grad()
def dataset_outputs(
    method: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], data: Dataset, batch_size: int = EMBED_BATCH
) -> torch.Tensor:
    """``fn`` (e.g. the backbone) over every item of ``data``: (N, ...) float32 on the method's device.

    Runs in eval mode (batch-norm running statistics, no dropout: every item is embedded the same way
    whatever batch it falls in), in batches, without gradient, then restores the method's mode.
    """
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    try:
        n, modality = len(data), data.spec
        out = [fn(modality.to_model(data.take(torch.arange(i, min(i + batch_size, n))), device)).float()
               for i in range(0, n, batch_size)]
    finally:
        method.train(was_training)
    return torch.cat(out)


def seed_from_torch() -> int:
    """A seed drawn from torch's global generator, which the engine seeds and checkpoints."""
    return int(torch.randint(0, 2**31 - 1, (1,)))


class PseudoLabelMethod(Method):
    """Cross-entropy of ``head(backbone(views(x)))`` against per-item pseudo-labels re-assigned every epoch.

    Subclasses implement ``relabel(data, k) -> (N,) int64 labels in [0, k)`` and may override ``loss``.
    The head has ``num_clusters`` outputs; on a data set of N items only k = min(num_clusters, N // 2)
    are used (at least two items per cluster on average), the others are sliced off.
    """

    options = {"num_clusters": Option("k pseudo-classes (over-clustering, several times the true classes, helps)",
                                      ge=2)}

    def __init__(self, backbone: Backbone, views: Views, num_clusters: int) -> None:
        super().__init__(backbone, views)
        self.num_clusters = num_clusters
        self.head = nn.Linear(backbone.num_features, num_clusters)
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long))      # (N,), sized at relabel
        self.register_buffer("cluster_sizes", torch.zeros(num_clusters, dtype=torch.long))
        self.register_buffer("active_clusters", torch.tensor(0))                     # k; 0 = not labelled yet
        self.register_buffer("labelled_epoch", torch.tensor(-1))
        # DDP would broadcast every buffer at every forward; the (N,) labels change once per epoch and are
        # broadcast here then, so DDP leaves them out (torch's hook for this; ignored by other versions).
        self._ddp_params_and_buffers_to_ignore = ["pseudo_labels"]

    def relabel(self, data: Dataset, k: int) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def on_epoch_start(self, epoch: int, data: Dataset) -> None:
        if int(self.labelled_epoch) == epoch and len(self.pseudo_labels) == len(data):
            return  # resumed mid-epoch: keep the labels this epoch started with
        k = min(self.num_clusters, len(data) // 2)
        if k < 2:
            raise SelfmetaError(f"{type(self).__name__} needs at least 4 items to cluster, got {len(data)}")
        labels = self.relabel(data, k).to(self.cluster_sizes.device, torch.long)   # (N,)
        self.pseudo_labels = labels
        with torch.no_grad():
            self.cluster_sizes.copy_(torch.bincount(labels, minlength=self.num_clusters))
            self.active_clusters.fill_(k)
            self.labelled_epoch.fill_(epoch)
            for t in (self.pseudo_labels, self.cluster_sizes, *self.head.parameters()):
                distributed.broadcast_(t)
        used = int((self.cluster_sizes > 0).sum())
        log.info("%s epoch %d: %d items in %d pseudo-classes (%d non-empty, largest %d)",
                 type(self).__name__, epoch, len(labels), k, used, int(self.cluster_sizes.max()))

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        k = int(self.active_clusters)
        if k == 0:
            raise SelfmetaError(f"{type(self).__name__} has no pseudo-labels yet: call on_epoch_start(epoch, data) first")
        logits = self.head(self.backbone(self.views(x))).float()[:, :k]   # (B, k)
        labels = self.pseudo_labels[index]                                 # (B,)
        with torch.autocast(logits.device.type, enabled=False):
            loss = self.loss(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return StepOutput(loss, {"pseudo_acc": float(accuracy)})

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # The labels' length is the data set's, unknown until the first relabel: take the saved one.
        saved = state_dict.get(prefix + "pseudo_labels")
        if saved is not None:
            self.pseudo_labels = torch.zeros_like(saved, device=self.pseudo_labels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
