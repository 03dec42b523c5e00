"""Images: ``(N, C, H, W)`` uint8 (0..255) or float in [0, 1]; per-channel normalization; Conv-4 by default.

Views (float in [0, 1], ``(B, C, H, W)``): random resized crop, horizontal flip, (optional) rotation and
(optional) elastic distortion fused into a single resampling (one ``grid_sample`` for the whole batch),
colour jitter, random grayscale and Gaussian blur from kornia, each applied to a random subset of the
batch. Every random draw is a batched tensor op; there is no Python loop over samples. Views read the
global torch RNG, which the engine seeds and checkpoints.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import kornia
import torch
import torch.nn.functional as F

from selfmeta.encoders.base import to_unit
from selfmeta.modalities.base import MODALITIES, Modality, Views
from selfmeta.options import Option, Searched

# Single-channel images whose strokes cover less than this share of the frame are symbols (digits, letters,
# characters: MNIST 0.16, Omniglot 0.13 of the pixels; clothing or grey photographs fill far more).
SYMBOL_INK = 0.3


def ink_fraction(x: torch.Tensor) -> torch.Tensor:
    """(N,) share of each image's pixels that differ from its background by more than a quarter of its
    range; the background is the median of the border pixels. x: (N, C, H, W) raw items."""
    x = to_unit(x).float().mean(1)                                        # (N, H, W) grey
    low, high = x.amin(dim=(1, 2), keepdim=True), x.amax(dim=(1, 2), keepdim=True)
    x = (x - low) / (high - low).clamp_min(1e-8)
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)  # (N, 2H + 2W)
    background = border.median(dim=1).values.view(-1, 1, 1)
    return ((x - background).abs() > 0.25).float().mean(dim=(1, 2))


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=like.dtype).uniform_(low, high)


def _chance(n: int, p: float, like: torch.Tensor) -> torch.Tensor:
    """(n, 1, 1, 1) boolean mask, True with probability p."""
    return (torch.rand(n, device=like.device) < p).view(n, 1, 1, 1)


def crop_flip_grid(
    n: int, size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float], flip: float,
    like: torch.Tensor, degrees: float = 0.0,
) -> torch.Tensor:
    """Sampling grid (n, H, W, 2) of a random resized crop with random horizontal flip and rotation.

    The crop covers a fraction ``area ~ U(scale)`` of the image with aspect ``exp(U(log ratio))``, as in
    torchvision's RandomResizedCrop, but clamped instead of re-drawn so it stays one batched op. The
    content is rotated by ``U(-degrees, degrees)`` about the crop centre, in pixel space.
    """
    area = _uniform(n, *scale, like)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), like)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).clamp(max=1.0)          # crop width as a fraction of the image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (2 * torch.rand_like(w) - 1) * (1 - w)          # crop centre in [-1, 1] coordinates
    cy = (2 * torch.rand_like(h) - 1) * (1 - h)
    sign = torch.where(torch.rand_like(w) < flip, -1.0, 1.0)
    angle = _uniform(n, -degrees, degrees, like) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect_hw = size[0] / size[1]  # rotation in pixels, expressed in [-1, 1] coordinates
    # input = diag(w * sign, h) @ R @ output + centre, R the rotation in normalized coordinates
    theta = torch.zeros(n, 2, 3, device=like.device, dtype=like.dtype)
    theta[:, 0, 0] = w * sign * cos
    theta[:, 0, 1] = -w * sign * sin * aspect_hw
    theta[:, 1, 0] = h * sin / aspect_hw
    theta[:, 1, 1] = h * cos
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return F.affine_grid(theta, [n, 1, *size], align_corners=False)


def elastic_field(n: int, size: tuple[int, int], pixels: float, like: torch.Tensor, knots: int = 4) -> torch.Tensor:
    """Smooth random displacements (n, H, W, 2) in [-1, 1] grid coordinates, to add to a sampling grid.

    Simard et al. (2003) smooth a per-pixel random field with a Gaussian; here a ``knots`` x ``knots`` grid of
    N(0, pixels^2) displacements (in pixels, x and y independent) is upsampled bicubically: the same kind
    of field, one batched op. Midway between knots the standard deviation dips to about 0.6 ``pixels``.
    """
    h, w = size
    knots_xy = torch.randn(n, 2, knots, knots, device=like.device, dtype=like.dtype) * pixels  # (n, 2, k, k)
    field = F.interpolate(knots_xy, size=size, mode="bicubic", align_corners=True)           # (n, 2, H, W)
    scale = torch.tensor([2 / w, 2 / h], device=like.device, dtype=like.dtype)              # pixels -> grid
    return field.permute(0, 2, 3, 1) * scale


class ImageViews(Views):
    """SimCLR's image augmentations (Chen et al. 2020, appendix A), batched, with optional rotation and
    elastic distortion for characters and digits."""

    description = "random resized crop, flip, rotation, elastic distortion, colour jitter, grey, blur (SimCLR's)"
    options = {
        "crop_scale": Option("area fraction of the random resized crop, (low, high)", gt=0, le=1, ordered=True),
        "crop_ratio": Option("aspect ratio range of the crop, (low, high)", gt=0, ordered=True),
        "hflip": Option("probability of a horizontal flip; 0 for digits and text, where mirroring changes "
                        "the meaning", ge=0, le=1),
        "rotation": Option("most degrees of random rotation (15 for digits and characters)", ge=0, le=180),
        "elastic": Option("elastic distortion: std of the displacement in pixels (2 for 28 px characters)", ge=0),
        "jitter": Option("probability of colour jitter", ge=0, le=1),
        "brightness": Option("brightness jitter strength", ge=0, le=1),
        "contrast": Option("contrast jitter strength", ge=0, le=1),
        "saturation": Option("saturation jitter strength (colour images only)", ge=0, le=1),
        "hue": Option("hue jitter strength (colour images only)", ge=0, le=0.5),
        "grayscale": Option("probability of turning a colour image grey", ge=0, le=1),
        "blur": Option("probability of Gaussian blur; null: 0.5 for images of 64 px and more, else 0", ge=0, le=1),
        "blur_sigma": Option("range of the blur's sigma in pixels, (low, high)", gt=0, ordered=True),
    }

    @classmethod
    def search_space(cls, input_shape: tuple[int, ...]) -> dict[str, Searched]:
        channels, height, width = input_shape
        space = {
            "crop_scale": Searched(0.08, 0.9, pair_high=1.0),
            "hflip": Searched(choices=(0.0, 0.5)),
            "rotation": Searched(0.0, 30.0),
            "jitter": Searched(0.0, 1.0),
            "brightness": Searched(0.0, 0.8),
            "contrast": Searched(0.0, 0.8),
            "blur": Searched(0.0, 0.5),
        }
        if min(height, width) <= 64:  # strokes of small images (the option is in pixels)
            space["elastic"] = Searched(0.0, 3.0)
        if channels == 3:
            space.update(saturation=Searched(0.0, 0.8), hue=Searched(0.0, 0.2), grayscale=Searched(0.0, 0.5))
        return space

    @classmethod
    def data_defaults(cls, sample: torch.Tensor) -> tuple[dict[str, Any], str]:
        """Symbols (one channel, strokes on a plain background: ``ink_fraction`` below ``SYMBOL_INK``) keep
        their meaning only unmirrored and mostly whole, and have no colour: no flip, no colour jitter, crops
        of 50-100% and rotations up to 15 degrees (the handwriting views chosen on MNIST's and Omniglot's
        validation splits, BENCHMARKS.md). Large images (96 px and more) crop down to 8% of the area, as
        SimCLR does on ImageNet; smaller ones keep CIFAR's 20%."""
        channels, height, width = sample.shape[1:]
        if channels == 1 and len(sample):
            ink = float(ink_fraction(sample).mean())
            if ink < SYMBOL_INK:
                return ({"hflip": 0.0, "jitter": 0.0, "crop_scale": (0.5, 1.0), "rotation": 15.0},
                        f"symbols: one channel, strokes cover {ink:.0%} of the frame (< {SYMBOL_INK:.0%})")
        if min(height, width) >= 96:
            return {"crop_scale": (0.08, 1.0)}, f"large images ({height}x{width} px, at least 96)"
        return {}, ""

    def __init__(
        self, input_shape: tuple[int, ...], crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5, rotation: float = 0.0,
        elastic: float = 0.0, jitter: float = 0.8, brightness: float = 0.4, contrast: float = 0.4,
        saturation: float = 0.4, hue: float = 0.1, grayscale: float = 0.2, blur: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        super().__init__()
        self.o = SimpleNamespace(
            crop_scale=tuple(crop_scale), crop_ratio=tuple(crop_ratio), hflip=hflip, rotation=rotation,
            elastic=elastic, jitter=jitter, brightness=brightness, contrast=contrast, saturation=saturation,
            hue=hue, grayscale=grayscale, blur_sigma=tuple(blur_sigma),
        )
        self.channels, self.height, self.width = input_shape
        self.blur = blur if blur is not None else (0.5 if min(self.height, self.width) >= 64 else 0.0)
        # Kernel about a tenth of the image side, odd, at least 3 (SimCLR uses 10% of 224).
        k = max(3, int(0.1 * min(self.height, self.width)) // 2 * 2 + 1)
        self.kernel = (k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        o = self.o
        grid = crop_flip_grid(n, (self.height, self.width), o.crop_scale, o.crop_ratio, o.hflip, x, o.rotation)
        if o.elastic > 0:
            grid = grid + elastic_field(n, (self.height, self.width), o.elastic, x)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if o.jitter > 0:
            x = torch.where(_chance(n, o.jitter, x), self._jitter(x), x)
        if self.channels == 3 and o.grayscale > 0:
            grey = kornia.color.rgb_to_grayscale(x).expand_as(x)
            x = torch.where(_chance(n, o.grayscale, x), grey, x)
        if self.blur > 0:
            sigma = _uniform(n, *o.blur_sigma, x).unsqueeze(1).expand(n, 2)
            x = torch.where(_chance(n, self.blur, x), kornia.filters.gaussian_blur2d(x, self.kernel, sigma), x)
        return x

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation, hue in that order (torchvision shuffles the order)."""
        n, o = x.shape[0], self.o
        view = (n, 1, 1, 1)
        if o.brightness > 0:
            x = (x * _uniform(n, 1 - o.brightness, 1 + o.brightness, x).view(view)).clamp(0, 1)
        if o.contrast > 0:
            grey = kornia.color.rgb_to_grayscale(x) if self.channels == 3 else x.mean(dim=1, keepdim=True)
            mean = grey.mean(dim=(1, 2, 3), keepdim=True)
            c = _uniform(n, 1 - o.contrast, 1 + o.contrast, x).view(view)
            x = (c * x + (1 - c) * mean).clamp(0, 1)
        if self.channels == 3 and o.saturation > 0:
            x = kornia.enhance.adjust_saturation(x, _uniform(n, 1 - o.saturation, 1 + o.saturation, x))
        if self.channels == 3 and o.hue > 0:
            x = kornia.enhance.adjust_hue(x, _uniform(n, -o.hue, o.hue, x) * 2 * math.pi)
        return x


@MODALITIES.register("image")
class Image(Modality):
    name = "image"
    description = "images (N, C, H, W): uint8 0..255 or float in [0, 1]; per-channel normalization"
    item_dims = 3
    item_layout = "(C, H, W)"
    default_encoder = "conv4"
    views = ImageViews
    channels_last = True
