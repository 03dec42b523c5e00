"""RotNet: "Unsupervised Representation Learning by Predicting Image Rotations" (Gidaris, Singh & Komodakis,
ICLR 2018).

The pretext task: rotate an image by 0, 90, 180 or 270 degrees and make the network tell which. Recognising
the rotation needs the orientation of objects (where the head, the sky, the top of a digit is), so the
features learn about object shape and pose. The loss is the plain cross-entropy of a 4-way classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.modalities.base import Views
from selfmeta.encoders.base import Backbone
from selfmeta.errors import SelfmetaError
from selfmeta.methods.base import METHODS, Method, StepOutput
from selfmeta.options import Option

NUM_ROTATIONS = 4  # multiples of 90 degrees: the only rotations that need no interpolation or padding
ROTATION_MODES = ("all", "random")


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image rotated by its own multiple of 90 degrees, counter-clockwise (as ``torch.rot90`` on the
    spatial dimensions).

    Args:
        x: (B, C, H, W) square images; k: (B,) int64 in 0..3, the number of quarter turns of each image.
    """
    turned = torch.stack([torch.rot90(x, r, dims=(2, 3)) for r in range(NUM_ROTATIONS)])  # (4, B, C, H, W)
    return turned[k, torch.arange(x.shape[0], device=x.device)]                         # (B, C, H, W)


def all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rotations of the whole batch, as RotNet trains: (B, C, H, W) square images ->
    ((4B, C, H, W) images, (4B,) labels), rotation r of item i at row r * B + i with label r."""
    b = x.shape[0]
    turned = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(NUM_ROTATIONS)])  # (4B, C, H, W)
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(b)        # (4B,)
    return turned, labels


@METHODS.register("rotation")
class Rotation(Method):
    """Predict the rotation (0, 90, 180, 270 degrees) of augmented views with a 4-way linear head on the
    backbone features; cross-entropy loss.

    Args:
        rotations: "all" (the paper's choice: every view in all four rotations, so each step sees 4x the
            batch and the four classes in equal numbers; slower per step, steadier) or "random" (one random
            rotation per view: the cost of a plain batch, a noisier signal).
        augment: rotate the modality's augmented views (True) or the images as they are (False; the paper
            used little augmentation). Keep ``views.hflip=0`` for digits and text, where a mirrored 2 next to
            a rotated one confuses the task.

    Images must be square, so that every rotation keeps the shape. Logs ``rot_acc``, the accuracy of the
    rotation classifier on the batch (0.25 is chance).
    """

    description = "RotNet: predict which of 4 rotations (0/90/180/270 degrees) was applied; square images only"
    paper = "Gidaris, Singh & Komodakis, Unsupervised Representation Learning by Predicting Image Rotations, ICLR 2018"
    modalities = ("image",)
    options = {
        "rotations": Option("all: every view in all four rotations; random: one random rotation per view",
                            choices=ROTATION_MODES),
        "augment": Option("rotate the augmented views (true) or the images as they are (false)"),
    }

    def __init__(self, backbone: Backbone, views: Views, rotations: str = "all", augment: bool = True) -> None:
        super().__init__(backbone, views)
        height, width = getattr(views, "height", None), getattr(views, "width", None)
        if height is None or width is None:
            raise SelfmetaError("rotation takes images only: its views give no image height and width")
        if height != width:
            raise SelfmetaError(
                f"rotation needs square images (a 90-degree turn of {height}x{width} images is {width}x{height}); "
                "resize or crop the images to a square, or choose another method"
            )
        self.rotations = rotations
        self.augment = augment
        self.classifier = nn.Linear(backbone.num_features, NUM_ROTATIONS)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> StepOutput:
        v = self.views(x) if self.augment else x                              # (B, C, H, W)
        if self.rotations == "all":
            turned, labels = all_rotations(v)                                 # (4B, C, H, W), (4B,)
        else:
            labels = torch.randint(NUM_ROTATIONS, (v.shape[0],), device=v.device)
            turned = rotate(v, labels)                                        # (B, C, H, W)
        logits = self.classifier(self.backbone(turned)).float()               # (., 4)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return StepOutput(loss, {"rot_acc": float(accuracy)})
