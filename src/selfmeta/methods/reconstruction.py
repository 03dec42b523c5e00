"""Masked / denoising reconstruction: the autoencoder family.

Follows "Extracting and Composing Robust Features with Denoising Autoencoders" (Vincent, Larochelle, Bengio
& Manzagol, ICML 2008): corrupt the input, encode it, decode, and score the reconstruction against the
clean input; the corruption is the masking of "Masked Autoencoders Are Scalable Vision Learners" (He, Chen,
Xie, Li, Dollar & Girshick, CVPR 2022): random square patches of an image, or random features of a table
row, are hidden, and the loss counts only the hidden part, so the encoder must infer it from the context.

Unlike MAE, the encoder is any registered backbone (it sees the masked input, with masked positions set to
the training-set mean) and the decoder is a small network from the backbone's feature vector, so the
features must summarize the whole input.

On text the same recipe is masked-token prediction (BERT's objective, Devlin et al. 2019, read from one
feature vector): random tokens become ``[MASK]``, and the decoder predicts each hidden token from the
document's feature vector plus the embedding of the token's position, scored by cross-entropy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.options import Option
from selfmeta.objectives.reconstruction import masked_mse

TABLE_FILLS = ("mean", "swap")


def random_mask(rows: int, size: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(rows, size) bool with exactly ``count`` True per row, at uniformly random places, independent rows."""
    noise = torch.rand(rows, size, device=device)
    chosen = noise.topk(count, dim=1).indices                                  # (rows, count)
    return torch.zeros(rows, size, dtype=torch.bool, device=device).scatter_(1, chosen, True)


def patch_mask(
    batch: int, height: int, width: int, patch: int, ratio: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(B, 1, H, W) bool, True on masked pixels: the image is tiled by patch x patch squares (the last row and
    column cut at the border) and round(ratio * number of squares) of them, a different set per image, are
    masked. Every square is equally likely to be chosen, so the expected masked fraction of the pixels is the
    masked fraction of the squares, ~ratio."""
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    count = masked_count(rows * cols, ratio)
    grid = random_mask(batch, rows * cols, count, device).view(batch, 1, rows, cols)
    pixels = grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)  # (B, 1, rows*p, cols*p)
    return pixels[:, :, :height, :width]


def masked_count(size: int, ratio: float) -> int:
    """How many of ``size`` positions a ratio masks: rounded half up, at least one when ratio > 0."""
    if ratio <= 0:
        return 0
    return min(size, max(1, int(ratio * size + 0.5)))


def default_patch_size(height: int, width: int) -> int:
    """About a seventh of the image side (4 px at 28, 5 at 32, 32 at 224), at least 2 px."""
    return max(2, round(min(height, width) / 7))


class ConvDecoder(nn.Module):
    """Feature vector -> image: Linear -> (width, h0, w0) -> [ConvTranspose 4x4 stride 2, BN, ReLU] x n ->
    conv 3x3 to C channels.

    n doublings bring the smallest side from about 4 px to the input size (8 -> 1, 28 -> 2 from 7x7,
    32 -> 3 from 4x4); sides that the doublings overshoot (84 -> 96) are resized back bilinearly.
    """

    def __init__(self, num_features: int, input_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        side = min(height, width_px)
        doublings = math.floor(math.log2(side / 4)) if side >= 4 else 0       # start from a 4-7 px map
        h0, w0 = math.ceil(height / 2**doublings), math.ceil(width_px / 2**doublings)
        layers: list[nn.Module] = [
            nn.Linear(num_features, width * h0 * w0, bias=False), nn.Unflatten(1, (width, h0, w0)),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        ]
        for _ in range(doublings):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.size = (height, width_px)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.body(features)                                            # (B, C, h0 * 2^n, w0 * 2^n)
        if tuple(out.shape[-2:]) != self.size:
            out = nn.functional.interpolate(out, size=self.size, mode="bilinear", align_corners=False)
        return out                                                           # (B, C, H, W)


class TokenDecoder(nn.Module):
    """Feature vector + a position -> logits over the vocabulary: ``Linear(f) + position embedding``, GELU,
    LayerNorm, ``Linear`` to the vocabulary. Small on purpose: the document's content must be in ``f``."""

    def __init__(self, num_features: int, length: int, vocab_size: int, width: int = 64) -> None:
        super().__init__()
        self.project = nn.Linear(num_features, width)
        self.positions = nn.Embedding(length, width)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab_size)

    def forward(self, features: torch.Tensor, item: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """features (B, F); item, position (M,) int64: the M positions to predict -> (M, vocab) logits."""
        h = self.project(features)[item] + self.positions(position)                  # (M, width)
        return self.out(self.norm(nn.functional.gelu(h)))


def mlp_decoder(num_features: int, num_outputs: int, width: int = 64) -> nn.Sequential:
    """Feature vector -> table row: Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(num_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
        nn.Linear(width, num_outputs),
    )


@METHODS.register("reconstruction")
class Reconstruction(Method):
    """Mask part of each input, encode it, decode the feature vector, and score the reconstruction by MSE in
    the normalized input space (per-channel or per-feature standardized, as the backbone sees it).

    Images: random square patches of the augmented view are set to the channel mean; the target is the
    view itself. Series: random time steps of the view (all channels) are set to the channel mean, decoded
    by an MLP; missing steps are not scored. Tables: random features of the (augmented) row are replaced;
    the target is the clean row, so the table views act as extra denoising corruption.

    Args:
        mask_ratio: fraction of patches (images), time steps (series) or features (tables) hidden, in [0, 1).
            MAE masks 0.75 of a ViT's patches; with a global feature vector and small images 0.3-0.6 works better. 0 (with
            ``masked_only=False``) is a plain autoencoder on the views.
        patch_size: side of the masked squares in pixels; None: about a seventh of the image side, at least
            2. Patches about the size of object parts (a stroke of a digit) make the task need context.
        masked_only: score only the masked positions (MAE); False scores every position (a denoising
            autoencoder, which also learns to copy the visible part).
        augment: corrupt the modality's augmented views (True) or the raw inputs (False).
        decoder_width: channels of the convolutional decoder, hidden width of the table decoder. Keep it
            small so the work is done by the encoder; raise it (128-256) for large images or wide tables.
        table_fill: what a masked table feature becomes: "mean" (the training mean, VIME's masking) or
            "swap" (the same feature of a random other row in the batch, Jahrer's swap noise).

    Logs ``mse_masked`` and ``mse_visible``, the errors on the hidden and the visible positions.
    """

    description = "Masked/denoising autoencoder: hide patches or features, decode the features, MSE on the hidden part"
    paper = (
        "Vincent et al., Extracting and Composing Robust Features with Denoising Autoencoders, ICML 2008; "
        "He et al., Masked Autoencoders Are Scalable Vision Learners, CVPR 2022"
    )
    modalities = ("image", "table", "series", "text")  # records: maskedcolumns
    options = {
        "mask_ratio": Option("fraction of patches (images), time steps (series) or features (tables) hidden",
                             ge=0, lt=1),
        "patch_size": Option("side of the masked squares in pixels; null: about a seventh of the side", ge=1),
        "masked_only": Option("score the hidden part only (MAE); false: every position (denoising AE)"),
        "augment": Option("corrupt the augmented views (true) or the raw inputs (false)"),
        "decoder_width": Option("channels of the image decoder, hidden width of the table decoder", ge=1),
        "table_fill": Option("a masked table value becomes the feature's mean or another row's value",
                             choices=TABLE_FILLS),
    }

    def __init__(
        self,
        backbone: Backbone,
        views: Views,
        mask_ratio: float = 0.5,
        patch_size: int | None = None,
        masked_only: bool = True,
        augment: bool = True,
        decoder_width: int = 64,
        table_fill: str = "mean",
    ) -> None:
        super().__init__(backbone, views)
        if mask_ratio == 0 and masked_only:
            raise SelfmetaError("mask_ratio=0 hides nothing to score; set masked_only=false or a ratio above 0")
        self.mask_ratio = float(mask_ratio)
        self.masked_only = bool(masked_only)
        self.augment = bool(augment)
        self.table_fill = table_fill
        self.is_tokens = getattr(views, "tokens", False)  # text: the views work on token ids
        if self.is_tokens:
            self.is_image = self.is_sequence = False
            self.patch_size = 0
            self.decoder = TokenDecoder(backbone.num_features, views.length, backbone.encoder.vocab_size,
                                        decoder_width)
            return
        # The layout of the items, from the normalizer's statistics: (1, C, 1, 1) images, (1, C, 1) series,
        # (1, D) tables.
        self.is_image = backbone.normalize.mean.ndim == 4
        self.is_sequence = backbone.normalize.mean.ndim == 3
        if self.is_image:
            height, width = getattr(views, "height", None), getattr(views, "width", None)
            if height is None or width is None:
                raise SelfmetaError("reconstruction of images needs views that give the image height and width")
            channels = backbone.normalize.mean.shape[1]
            self.patch_size = default_patch_size(height, width) if patch_size is None else int(patch_size)
            if not 1 <= self.patch_size <= max(height, width):
                raise SelfmetaError(f"patch_size must be in [1, {max(height, width)}] pixels, got {patch_size}")
            self.decoder: nn.Module = ConvDecoder(backbone.num_features, (channels, height, width), decoder_width)
        elif self.is_sequence:
            channels, length = views.channels, views.length
            self.patch_size = 0
            self.decoder = nn.Sequential(mlp_decoder(backbone.num_features, channels * length, decoder_width),
                                         nn.Unflatten(1, (channels, length)))
        else:
            self.patch_size = 0
            self.decoder = mlp_decoder(backbone.num_features, backbone.normalize.mean.shape[1], decoder_width)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Random mask for a batch: (B, 1, H, W) for images, (B, 1, T) time steps for series, (B, D) for
        tables; True = hidden."""
        if self.is_image:
            b, _, h, w = x.shape
            return patch_mask(b, h, w, self.patch_size, self.mask_ratio, x.device)
        if self.is_sequence:
            b, _, t = x.shape
            return random_mask(b, t, masked_count(t, self.mask_ratio), x.device).unsqueeze(1)
        b, d = x.shape
        return random_mask(b, d, masked_count(d, self.mask_ratio), x.device)

    def corrupt(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` with its masked positions replaced (same shape, in to_unit space)."""
        mean = self.backbone.normalize.mean                                   # (1, C, 1, 1), (1, C, 1) or (1, D)
        if self.is_image or self.is_sequence or self.table_fill == "mean":
            return torch.where(mask, mean.to(x.dtype), x)
        b, d = x.shape
        donor = torch.randint(b, (b, d), device=x.device)                    # a random row per value
        return torch.where(mask, x.gather(0, donor), x)

    def token_loss(self, v: torch.Tensor) -> StepOutput:
        """Masked-token prediction on (B, L') ids: ``mask_ratio`` of each document's tokens (at least one)
        become [MASK]; cross-entropy of the hidden tokens (every token when not ``masked_only``)."""
        from selfmeta.modalities.text import MASK, PAD

        present = v != PAD                                                   # (B, L')
        noise = torch.rand(v.shape, device=v.device).masked_fill(~present, 2.0)
        count = (present.sum(1, keepdim=True) * self.mask_ratio).ceil().clamp_min(1)      # (B, 1)
        rank = noise.argsort(1).argsort(1)                                   # each position's rank in its row
        hidden = (rank < count) & present                                    # (B, L')
        features = self.backbone(v.masked_fill(hidden, MASK))                # (B, F)
        scored = hidden if self.masked_only else present
        item, position = scored.nonzero(as_tuple=True)                       # (M,), (M,)
        logits = self.decoder(features, item, position).float()             # (M, vocab)
        with torch.autocast(logits.device.type, enabled=False):
            loss = nn.functional.cross_entropy(logits, v[item, position])
            correct = (logits.argmax(1) == v[item, position])[hidden[item, position]]
        return StepOutput(loss, {"token_accuracy": float(correct.float().mean()) if len(correct) else 0.0})

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        if self.is_tokens:
            return self.token_loss(self.views(x) if self.augment else x)
        v = self.views(x) if self.augment else x                            # (B, C, H, W), (B, C, T) or (B, D)
        mask = self.mask(v)
        prediction = self.decoder(self.backbone(self.corrupt(v, mask))).float()  # same shape as x
        with torch.no_grad():
            # The clean input, normalized: the view itself where views move content (images, series).
            target = self.backbone.normalize(v if self.is_image or self.is_sequence else x).float()
            present = torch.isfinite(target)                                 # missing values are not scored
            complete = bool(present.all())
            if not complete:
                target, mask = torch.nan_to_num(target), mask & present
        with torch.autocast(prediction.device.type, enabled=False):
            masked = masked_mse(prediction, target, mask)
            visible = masked_mse(prediction, target, ~mask if complete else ~mask & present)
            loss = masked if self.masked_only else masked_mse(prediction, target, None if complete else present)
        return StepOutput(loss, {"mse_masked": float(masked.detach()), "mse_visible": float(visible.detach())})

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) float32 per-item mean squared error of ``decoder(backbone(x))`` against the normalized ``x``
        (the units the loss uses), with no mask and no views: the anomaly score of the reconstruction
        detector. ``x``: (B, ...) ``to_unit`` inputs, as ``forward`` takes them. Missing values (series) are
        not scored; an item with none present scores 0. Call it in eval mode (the decoder has batch norm)."""
        if self.is_tokens:  # text: the mean cross-entropy of every token of the document, none hidden
            item, position = (x != 0).nonzero(as_tuple=True)                # (M,), (M,)
            logits = self.decoder(self.backbone(x), item, position).float()  # (M, vocab)
            losses = nn.functional.cross_entropy(logits, x[item, position], reduction="none")
            return torch.zeros(len(x), device=x.device).index_add_(0, item, losses) / torch.bincount(
                item, minlength=len(x)).clamp_min(1)
        prediction = self.decoder(self.backbone(x)).float()                 # (B, ...) same shape as x
        target = self.backbone.normalize(x).float()                          # (B, ...)
        present = torch.isfinite(target)                                     # (B, ...) bool
        squared = (prediction - torch.nan_to_num(target)).pow(2) * present   # (B, ...)
        return squared.flatten(1).sum(1) / present.flatten(1).sum(1).clamp_min(1)
