"""TS2Vec: Towards Universal Representation of Time Series (Yue et al., AAAI 2022)."""

from __future__ import annotations

import torch

from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.objectives.ts2vec import hierarchical_contrastive_loss
from selfmeta.options import Option


def take_per_row(x: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """x (B, C, T), start (B,) -> (B, C, length): item i's steps start_i .. start_i + length - 1."""
    steps = start.unsqueeze(1) + torch.arange(length, device=x.device)                  # (B, length)
    return x.gather(2, steps.unsqueeze(1).expand(-1, x.shape[1], -1))


@METHODS.register("ts2vec")
class TS2Vec(Method):
    """Two overlapping random crops of every series; the encoder's per-step representations of the shared
    steps must agree, against the other items at each step and the item's other steps, at every temporal
    scale (hierarchical contrastive loss). During training half the steps of each crop are hidden after
    the encoder's input projection (``mask``), as in the paper; the crops themselves are the views, so the
    modality's view family is not used.

    Crops (the paper's recipe): a common segment of random length l >= 2^(temporal_unit + 1) at a random
    place, each view extending it by a random amount on its own side, and the pair shifted together by a
    random offset per item. Needs an encoder with per-step output (``forward_timesteps``: ``ts2vec``).

    Args:
        alpha: weight of the instance-wise term against the temporal term (paper: 0.5).
        temporal_unit: the finest scale with a temporal term (paper: 0; 2 for long series saves time).
        mask: probability that a step stays visible in training (paper: binomial masking, 0.5).
        max_length: crops of longer series are cut to this many steps first (paper: 3000).
    """

    description = "TS2Vec: hierarchical (instance + temporal) contrast of two overlapping random crops, per time step"
    paper = "Yue et al., TS2Vec: Towards Universal Representation of Time Series, AAAI 2022"
    modalities = ("series",)
    defaults = {"batch_size": 8, "lr": 1e-3}  # the paper's, for the small UCR/UEA training sets
    options = {
        "alpha": Option("weight of the instance-wise contrast; 1 - alpha for the temporal one", ge=0, le=1),
        "temporal_unit": Option("finest scale (log2 steps) with a temporal term", ge=0),
        "mask": Option("probability that a step is kept visible in training (binomial masking)", gt=0, le=1),
        "max_length": Option("longer series are cut to a random window of this many steps first", ge=2),
    }

    def __init__(self, backbone: Backbone, views: Views, alpha: float = 0.5, temporal_unit: int = 0,
                 mask: float = 0.5, max_length: int = 3000) -> None:
        super().__init__(backbone, views)
        if not callable(getattr(backbone.encoder, "forward_timesteps", None)):
            raise SelfmetaError("ts2vec needs an encoder with a representation per time step: use --encoder ts2vec")
        self.alpha, self.temporal_unit, self.mask, self.max_length = alpha, temporal_unit, mask, max_length

    def crops(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Two overlapping crops (B, C, L1) and (B, C, L2) of ``x`` (B, C, T) whose last / first ``l`` steps
        are the same steps of the series."""
        b, t = x.shape[0], x.shape[-1]
        if t > self.max_length:
            start = int(torch.randint(t - self.max_length + 1, ()))
            x, t = x[..., start : start + self.max_length], self.max_length

        def randint(low: int, high: int) -> int:  # in [low, high), from the engine's seeded generator
            return int(torch.randint(low, high, ()))

        length = randint(min(2 ** (self.temporal_unit + 1), t), t + 1)            # the common segment
        left = randint(0, t - length + 1)
        right = left + length
        extra_left = randint(0, left + 1)
        extra_right = randint(right, t + 1)
        offset = torch.randint(-extra_left, t - extra_right + 1, (b,), device=x.device)
        view1 = take_per_row(x, offset + extra_left, right - extra_left)            # ends with the segment
        view2 = take_per_row(x, offset + left, extra_right - left)                   # starts with it
        return view1, view2, length

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        view1, view2, length = self.crops(x)
        encoder, normalize = self.backbone.encoder, self.backbone.normalize

        def visible(v: torch.Tensor) -> torch.Tensor:                               # (B, L) bool
            return torch.rand(v.shape[0], v.shape[-1], device=v.device) < self.mask

        z1 = encoder.forward_timesteps(normalize(view1), visible(view1))[:, -length:]   # (B, l, D)
        z2 = encoder.forward_timesteps(normalize(view2), visible(view2))[:, :length]
        with torch.autocast(x.device.type, enabled=False):
            loss = hierarchical_contrastive_loss(z1.float(), z2.float(), self.alpha, self.temporal_unit)
        return StepOutput(loss, {"segment": float(length)})
