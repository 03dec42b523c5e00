"""Built-in encoders: MLP (tables, flat vectors), Conv-4 (the few-shot standard), ResNet-18 (CIFAR variant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from selfmeta.encoders.base import ENCODERS, Encoder
from selfmeta.options import Option


@ENCODERS.register("mlp")
class MLP(Encoder):
    """Linear-BatchNorm-ReLU blocks on flattened inputs; ``num_features`` = the last width."""

    modalities = ("image", "table")
    description = "MLP on flattened inputs (tables, flat vectors, small images): Linear-BN-ReLU blocks"
    options = {"widths": Option("the hidden layers' widths; the last is num_features", ge=1)}

    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...] = (512, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = math.prod(input_shape)
        for width in widths:
            layers += [nn.Linear(fan_in, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            fan_in = width
        self.body = nn.Sequential(*layers)
        self.num_features = fan_in

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@ENCODERS.register("conv4")
class Conv4(Encoder):
    """4 x [conv3x3 64, batch norm, ReLU, max-pool 2] (Vinyals et al. 2016; Snell et al. 2017).

    28x28 inputs give 64 x 1 x 1 = 64 features, 84x84 give 64 x 5 x 5 = 1600. A block skips its pooling
    once the map is 1 pixel wide, so tiny images (8x8 digits) still work.
    """

    modalities = ("image",)
    description = "Conv-4, the few-shot standard: 4 x [conv3x3 64, BN, ReLU, max-pool 2]"
    options = {"width": Option("channels of every block (64 in the papers)", ge=1)}

    def __init__(self, input_shape: tuple[int, ...], width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = input_shape
        blocks: list[nn.Module] = []
        for _ in range(4):
            pool = min(height, width_px) >= 2
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2) if pool else nn.Identity(),
                )
            )
            channels = width
            if pool:
                height, width_px = height // 2, width_px // 2
        self.body = nn.Sequential(*blocks, nn.Flatten())
        self.num_features = width * height * width_px

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@ENCODERS.register("resnet18")
class ResNet18(Encoder):
    """ResNet-18 (He et al. 2016), CIFAR variant: 3x3 stride-1 stem, no max-pool; 512 features."""

    modalities = ("image",)
    description = "ResNet-18, CIFAR variant (3x3 stem, no max-pool), 512 features"

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x)))
