"""Heads that methods put on top of ``Backbone`` features (never inside the encoder)."""

from __future__ import annotations

from torch import nn

from selfmeta.options import Option

# The projection head's widths, an option of every method that has one.
PROJECTION_OPTIONS = {
    "proj_hidden": Option("hidden width of the projection head", ge=1),
    "proj_dim": Option("output size of the projection head (the loss's space)", ge=1),
}


def projection_head(num_features: int, hidden: int, out: int) -> nn.Sequential:
    """SimCLR's MLP projection g(h) = W2 ReLU(BN(W1 h)); losses use g(h), downstream tasks use h."""
    return nn.Sequential(
        nn.Linear(num_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
    )
