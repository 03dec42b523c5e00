"""Reconstruction error on the corrupted part of the input: the loss of masked autoencoders (He et al.,
CVPR 2022) and, over every position, of denoising autoencoders (Vincent et al., ICML 2008)."""

from __future__ import annotations

import torch


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the positions that ``mask`` selects:

        loss = sum_{i in M} (prediction_i - target_i)^2 / |M|

    Args:
        prediction, target: (B, ...) the reconstruction and what it should be (same shape).
        mask: bool, broadcastable to the prediction's shape, True where the error counts: (B, 1, H, W) masked
            pixels (all channels count), (B, D) masked features; None: every position (plain MSE).

    Returns a scalar; 0 (still differentiable) when the mask selects nothing.
    """
    squared = (prediction - target).pow(2)                     # (B, ...)
    if mask is None:
        return squared.mean()
    weight = mask.expand_as(squared).to(squared.dtype)        # (B, ...) 1 where counted
    return (squared * weight).sum() / weight.sum().clamp_min(1)
