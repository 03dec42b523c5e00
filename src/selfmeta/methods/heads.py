"""Heads that methods put on top of ``Backbone`` features (never inside the encoder)."""

from __future__ import annotations

from torch import nn


def projection_head(num_features: int, hidden: int, out: int) -> nn.Sequential:
    """SimCLR's MLP projection g(h) = W2 ReLU(BN(W1 h)); losses use g(h), downstream tasks use h."""
    return nn.Sequential(
        nn.Linear(num_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out),
    )
