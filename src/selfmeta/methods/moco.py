"""MoCo v2: Momentum Contrast (He et al., CVPR 2020) with the improvements of Chen et al. 2020
("Improved Baselines with Momentum Contrastive Learning": MLP projection head, stronger augmentations,
temperature 0.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfmeta import distributed
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.methods.heads import PROJECTION_OPTIONS, projection_head
from selfmeta.methods.momentum import ema_update_, momentum_copy
from selfmeta.objectives.infonce import info_nce
from selfmeta.options import Option, Searched


@METHODS.register("moco")
class MoCo(Method):
    """A query encoder (backbone + MLP head) learns to find the key of its item's other view among a queue
    of keys of earlier batches; the key encoder is a moving average of the query encoder.

    The loss is symmetrized, as in MoCo v3 (Chen, Xie & He 2021): both views are queries, each against the
    other view's key, and the two InfoNCE losses are averaged (MoCo v2 itself uses one direction). The
    keys of the second view enter the queue after the loss, oldest out first, so the queue holds one key
    per item of the last ``queue_size // global batch`` batches.

    With several processes, the new keys are gathered from every rank before the enqueue, so every rank
    holds the same queue, and the key encoder uses shuffled batch norm (He et al. 2020, section 3.3): the
    key batch is gathered, permuted by a permutation that rank 0 draws, encoded in per-rank chunks and put
    back in order, so that a query and its key never share batch statistics. Both do nothing on one process.

    Args:
        temperature: InfoNCE temperature; MoCo v2 uses 0.2 (v1: 0.07). Lower is sharper and less stable.
        queue_size: number of negative keys K (MoCo: 65536 on ImageNet). It is clipped to a multiple of the
            global batch size and must be at least that batch. A few thousand suits small data; a queue
            much larger than the data set holds stale keys of the same items.
        momentum: key encoder moving-average rate m. 0.99 suits small data and short runs; use 0.999 at
            ImageNet scale (hundreds of thousands of steps). Larger m gives more consistent keys but a
            slower-following key encoder.
        proj_hidden, proj_dim: widths of the MLP projection head (MoCo v2: 2048 and 128).
    """

    description = (
        "MoCo v2: momentum key encoder, queue of negative keys, InfoNCE (symmetrized; shuffled BN across ranks)"
    )
    paper = ("He et al., Momentum Contrast for Unsupervised Visual Representation Learning, CVPR 2020; "
             "Chen et al., Improved Baselines with Momentum Contrastive Learning, arXiv:2003.04297, 2020")
    options = {
        "temperature": Option("InfoNCE temperature (MoCo v2: 0.2)", gt=0),
        "queue_size": Option("negative keys K; clipped to a multiple of the global batch", ge=1),
        "momentum": Option("key encoder moving-average rate (0.99 small data, 0.999 ImageNet)", ge=0, le=1),
        **PROJECTION_OPTIONS,
    }
    search = {"temperature": Searched(0.05, 0.5, log=True)}

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        temperature: float = 0.2,
        queue_size: int = 4096,
        momentum: float = 0.99,
        proj_hidden: int = 512,
        proj_dim: int = 128,
    ) -> None:
        super().__init__(backbone, views)
        self.temperature = temperature
        self.momentum = momentum
        self.projector = projection_head(backbone.num_features, proj_hidden, proj_dim)
        self.key_backbone = momentum_copy(backbone)
        self.key_projector = momentum_copy(self.projector)
        # Buffers, so that checkpoints keep the queue and resuming continues with the same negatives.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))  # (K, proj_dim)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))                # next row to write

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        b = x.shape[0]
        length = self.queue_length(b * distributed.world_size())
        views = torch.cat([self.views(x), self.views(x)])      # (2B, ...): one forward pass for both views
        q = self.projector(self.backbone(views)).float()        # (2B, proj_dim)
        with torch.no_grad():
            k, all_k = self.keys(views)                         # (2B, proj_dim), (W*2B, proj_dim)
        # A copy: the enqueue below writes into the buffer before backward.
        negatives = self.queue[:length].clone()                 # (L, proj_dim)
        with torch.autocast(q.device.type, enabled=False):    # logits / 0.2 need fp32
            loss = (info_nce(q[:b], k[b:], negatives, self.temperature)
                    + info_nce(q[b:], k[:b], negatives, self.temperature)) / 2
        with torch.no_grad():
            newest = all_k.view(-1, 2, b, all_k.shape[1])[:, 1].reshape(-1, all_k.shape[1])  # (W*B, d): view 2
            self.enqueue(newest)
            pos = (F.cosine_similarity(q[:b], k[b:]).mean() + F.cosine_similarity(q[b:], k[:b]).mean()) / 2
        return StepOutput(loss, {"pos_sim": float(pos)})

    def queue_length(self, global_batch: int) -> int:
        """The rows of the queue in use: ``queue_size`` clipped to a multiple of the global batch."""
        size = self.queue.shape[0]
        if global_batch > size:
            raise SelfmetaError(
                f"moco: queue_size {size} is smaller than the global batch ({global_batch}); raise method.queue_size"
            )
        return size - size % global_batch

    @torch.no_grad()
    def keys(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized keys of this rank's views (n, d) and of every rank's, in rank order (W*n, d).

        With several processes the key encoder sees a shuffled share of the global batch (shuffled BN).
        """
        world, n = distributed.world_size(), views.shape[0]
        if world == 1:
            k = self._encode_keys(views)
            return k, k
        all_views = distributed.all_gather_no_grad(views)                       # (W*n, ...)
        perm = distributed.broadcast_(torch.randperm(world * n, device=views.device))
        mine = perm.view(world, n)[distributed.rank()]                           # rows this rank encodes
        shuffled = distributed.all_gather_no_grad(self._encode_keys(all_views[mine]))  # row j: key of perm[j]
        all_k = torch.empty_like(shuffled)
        all_k[perm] = shuffled                                                   # undo the permutation
        start = distributed.rank() * n
        return all_k[start : start + n], all_k

    def _encode_keys(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projector(self.key_backbone(views)).float(), dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (n, d) over the oldest rows of the queue's first ``queue_length(n)`` rows, FIFO.

        The pointer wraps around, so reading the used rows from ``queue_ptr`` on gives oldest to newest.
        """
        n = keys.shape[0]
        length = self.queue_length(n)
        rows = (self.queue_ptr + torch.arange(n, device=keys.device)) % length  # (n,)
        self.queue.index_copy_(0, rows, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % length)

    def on_step_end(self, progress: float) -> None:
        ema_update_(self.key_backbone, self.backbone, self.momentum)
        ema_update_(self.key_projector, self.projector, self.momentum)
