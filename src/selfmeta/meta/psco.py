"""PsCo: Unsupervised Meta-Learning via Few-shot Pseudo-supervised Contrastive Learning (Jang et al., ICLR 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta import distributed
from selfmeta.data.episodes import EpisodeSpec
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.meta.base import METALEARNERS
from selfmeta.meta.protonet import prototype_logits, prototypes
from selfmeta.methods.base import StepOutput
from selfmeta.methods.heads import projection_head
from selfmeta.methods.moco import MoCo
from selfmeta.objectives import info_nce
from selfmeta.objectives.sinkhorn import sinkhorn
from selfmeta.options import Option


def pseudo_supports(queue: torch.Tensor, keys: torch.Tensor, shots: int, lam: float, iters: int) -> torch.Tensor:
    """PsCo's pseudo-labelling of the queue for one task.

    Sinkhorn-Knopp spreads the M queue embeddings over the task's N classes (its items' keys) in equal
    shares, maximizing their cosine similarity (entropy-regularized with 1/lam); each class takes the
    ``shots`` queue rows with the largest share as its support.

    Args:
        queue: (M, d) unit vectors; keys: (N, d) unit vectors of the task's items; shots: K' <= M / N.

    Returns:
        (N, K') int64 queue rows.
    """
    plan = sinkhorn(queue @ keys.T, lam=lam, iters=iters)                   # (M, N), columns sum to 1/N
    return plan.topk(shots, dim=0).indices.T                                # (N, K')


@METALEARNERS.register("psco")
class PsCo(MoCo):
    """A few-shot task per batch, supervised by pseudo-labels: the task's N items are the classes; their
    momentum keys pseudo-label a queue of past keys (Sinkhorn, equal shares), the top ``support_shots``
    queue keys of each class are its support, and the online encoder's query view of each item must be
    closest to its own class's prototype (cross-entropy over the task's N prototypes, cosine / temperature).
    MoCo's loss on the same queries, keys and queue is added (``moco_weight``), as in the paper.

    Trains on tasks of two views per item (``--tasks umtra --shots 1 --queries 1``, or ``metacontrastive``):
    the support view gives the key, the query view the query. With several processes the keys are
    gathered before the enqueue and the key encoder uses shuffled batch norm (MoCo's machinery).

    Args:
        support_shots: K', queue keys per pseudo-class (the paper: 4 for 5-way 1-shot; 1-10 reasonable).
        temperature, queue_size, momentum, proj_hidden, proj_dim: as MoCo (the paper: 0.2, 16384, 0.99).
        sinkhorn_lam, sinkhorn_iters: 1/epsilon and the iterations of the Sinkhorn pseudo-labelling.
        moco_weight: weight of MoCo's InfoNCE term (0 leaves PsCo's loss alone).
    """

    description = "PsCo: Sinkhorn pseudo-labels a momentum queue into the support of each batch task"
    paper = "Jang, Lee, Kim, Shin & Kim, Unsupervised Meta-Learning via Few-shot Pseudo-supervised Contrastive Learning, ICLR 2023"
    options = {
        "support_shots": Option("K', queue keys per pseudo-class (paper: 4 for 5-way 1-shot)", ge=1),
        "queue_size": Option("keys in the momentum queue (paper: 16384)", ge=1),
        "sinkhorn_lam": Option("1/epsilon of the Sinkhorn pseudo-labelling", gt=0),
        "sinkhorn_iters": Option("Sinkhorn iterations", ge=1),
        "moco_weight": Option("weight of MoCo's InfoNCE term (0 leaves PsCo's loss alone)", ge=0),
    }

    def __init__(self, backbone: Backbone, views: Views, spec: EpisodeSpec, support_shots: int = 4,
                 temperature: float = 0.2, queue_size: int = 16384, momentum: float = 0.99, proj_hidden: int = 512,
                 proj_dim: int = 128, sinkhorn_lam: float = 20.0, sinkhorn_iters: int = 10,
                 moco_weight: float = 1.0) -> None:
        super().__init__(backbone, views, temperature, queue_size, momentum, proj_hidden, proj_dim)
        if spec.shots != 1 or spec.queries != 1:
            raise SelfmetaError(f"psco trains on two views per item: --shots 1 --queries 1 (got {spec.shots}, {spec.queries})")
        self.spec = spec
        self.support_shots = support_shots
        self.sinkhorn_lam, self.sinkhorn_iters = float(sinkhorn_lam), sinkhorn_iters
        self.moco_weight = float(moco_weight)
        self.predictor = projection_head(proj_dim, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        support, query = self.spec.split(x)                       # (T, N, ...) each: key and query views
        t, n = support.shape[:2]
        b = t * n
        length = self.queue_length(b * distributed.world_size())
        if self.support_shots * n > length:
            raise SelfmetaError(f"psco: {n} classes x {self.support_shots} support shots need a queue of at least "
                                f"{self.support_shots * n} keys; raise method.queue_size")
        z = F.normalize(self.predictor(self.projector(self.backbone(query.flatten(0, 1)))).float(), dim=1)  # (B, d)
        queue = self.queue[:length].to(torch.float32, copy=True)  # (L, d), a copy: the enqueue writes the buffer
        with torch.no_grad():
            k, all_k = self.keys(support.flatten(0, 1))           # (B, d), (W*B, d)
            rows = torch.stack([pseudo_supports(queue, k_t, self.support_shots, self.sinkhorn_lam, self.sinkhorn_iters)
                                for k_t in k.view(t, n, -1)])     # (T, N, K')
            protos = F.normalize(queue[rows].mean(2), dim=-1)     # (T, N, d)
        with torch.autocast(z.device.type, enabled=False):
            logits = torch.einsum("tqd,tnd->tqn", z.view(t, n, -1), protos) / self.temperature  # (T, N, N)
            labels = torch.arange(n, device=x.device).repeat(t)
            psco = F.cross_entropy(logits.flatten(0, 1), labels)
            moco = info_nce(z, k, queue, self.temperature)
        with torch.no_grad():
            self.enqueue(all_k)
            accuracy = (logits.argmax(-1).flatten() == labels).float().mean()
        logs = {"psco": float(psco.detach()), "moco": float(moco.detach()), "accuracy": float(accuracy)}
        return StepOutput(psco + self.moco_weight * moco, logs)

    def adapt_predict(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Nearest prototype of the support's backbone features, by cosine similarity."""
        t, ways = support.shape[0], int(support_y.max()) + 1
        s = F.normalize(self.backbone(support.flatten(0, 1)).float(), dim=1).reshape(t, support.shape[1], -1)
        q = F.normalize(self.backbone(query.flatten(0, 1)).float(), dim=1).reshape(t, query.shape[1], -1)
        return prototype_logits(q, prototypes(s, support_y, ways), "cosine")
