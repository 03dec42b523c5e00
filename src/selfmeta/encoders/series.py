"""Encoders for time series ``(B, C, T)`` of any length and channel count, NaN marking missing steps.

- ``ts2vec``: the encoder of TS2Vec (Yue et al., AAAI 2022): a linear input projection per time step, then
  residual blocks of dilated 1-D convolutions (dilation 2^i), giving a representation of every time
  step; an item's features are their max over time. It also gives the per-step output
  (``forward_timesteps``) that TS2Vec's hierarchical contrastive loss needs.
- ``resnet1d``: the 1-D ResNet of Wang, Yan & Oates (2017), the standard deep baseline of the UCR archive:
  three residual blocks of convolutions with kernels 8, 5 and 3, global average pooling over the present
  time steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfmeta.encoders.base import ENCODERS, Encoder
from selfmeta.options import Option


def present_steps(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, T) bool: the steps where no channel is missing."""
    return ~torch.isnan(x).any(1)


class SamePadConv(nn.Module):
    """A 1-D convolution whose output has the input's length (TS2Vec's ``SamePadConv``)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        field = (kernel - 1) * dilation + 1
        self.conv = nn.Conv1d(cin, cout, kernel, padding=field // 2, dilation=dilation, bias=bias)
        self.remove = 1 if field % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out[:, :, : out.shape[-1] - self.remove] if self.remove else out


class DilatedBlock(nn.Module):
    """GELU - conv - GELU - conv, plus the input (through a 1x1 projection when the width changes)."""

    def __init__(self, cin: int, cout: int, kernel: int, dilation: int, final: bool = False) -> None:
        super().__init__()
        self.conv1 = SamePadConv(cin, cout, kernel, dilation)
        self.conv2 = SamePadConv(cout, cout, kernel, dilation)
        self.projector = nn.Conv1d(cin, cout, 1) if cin != cout or final else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.projector is None else self.projector(x)
        x = self.conv1(F.gelu(x))
        return self.conv2(F.gelu(x)) + residual


@ENCODERS.register("ts2vec")
class TS2VecEncoder(Encoder):
    """Input projection, ``depth`` dilated residual blocks of ``hidden`` channels and one of ``output``
    channels (kernel 3, dilation 2^i: the receptive field doubles with each block), per-step output.

    Missing steps (NaN in any channel) are zeroed after the input projection, as TS2Vec does; a
    ``mask`` (B, T) bool from the caller hides more steps in the same way (TS2Vec's timestamp masking).
    """

    modalities = ("series",)
    description = "TS2Vec's encoder: input projection, 10 dilated residual conv blocks, per-step output, max over time"
    options = {
        "hidden": Option("channels of the residual blocks (paper: 64)", ge=1),
        "output": Option("size of the per-step representation and of the features (paper: 320)", ge=1),
        "depth": Option("dilated residual blocks before the output block (paper: 10)", ge=1),
        "dropout": Option("dropout on the per-step representation in training (paper: 0.1)", ge=0, lt=1),
    }

    def __init__(self, input_shape: tuple[int, ...], hidden: int = 64, output: int = 320, depth: int = 10,
                 dropout: float = 0.1) -> None:
        super().__init__()
        channels = input_shape[0]
        self.input_fc = nn.Linear(channels, hidden)
        widths = [hidden] * depth + [output]
        self.blocks = nn.Sequential(*[
            DilatedBlock(widths[i - 1] if i > 0 else hidden, widths[i], 3, 2**i, final=i == len(widths) - 1)
            for i in range(len(widths))
        ])
        self.dropout = nn.Dropout(dropout)
        self.num_features = output

    def forward_timesteps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T) normalized series -> (B, T, output): a representation of every time step."""
        keep = present_steps(x) if mask is None else present_steps(x) & mask                    # (B, T)
        h = self.input_fc(torch.nan_to_num(x, nan=0.0).transpose(1, 2))                        # (B, T, hidden)
        h = h * keep.unsqueeze(-1).to(h.dtype)
        h = self.blocks(h.transpose(1, 2))                                                       # (B, output, T)
        return self.dropout(h).transpose(1, 2)                                                   # (B, T, output)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_timesteps(x).amax(dim=1)                                            # (B, output)


class ResBlock1d(nn.Module):
    """Three convolutions (kernels 8, 5, 3) with batch norm and ReLU, plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, kernel in enumerate((8, 5, 3)):
            layers += [SamePadConv(cin if i == 0 else cout, cout, kernel, bias=False), nn.BatchNorm1d(cout)]
            if i < 2:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


@ENCODERS.register("resnet1d")
class ResNet1D(Encoder):
    """The 1-D ResNet of Wang et al. (2017): blocks of ``width``, 2 ``width``, 2 ``width`` channels, global
    average pooling over the present steps (missing ones are zero at the input and left out of the mean)."""

    modalities = ("series",)
    description = "1-D ResNet (Wang et al. 2017): 3 residual blocks, kernels 8/5/3, global average pooling"
    options = {"width": Option("channels of the first block; the others have twice as many (paper: 64)", ge=1)}

    def __init__(self, input_shape: tuple[int, ...], width: int = 64) -> None:
        super().__init__()
        channels = input_shape[0]
        self.blocks = nn.Sequential(ResBlock1d(channels, width), ResBlock1d(width, 2 * width),
                                    ResBlock1d(2 * width, 2 * width))
        self.num_features = 2 * width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        keep = present_steps(x).unsqueeze(1).to(x.dtype)                                        # (B, 1, T)
        h = self.blocks(torch.nan_to_num(x, nan=0.0))                                            # (B, F, T)
        return (h * keep).sum(-1) / keep.sum(-1).clamp_min(1)                                   # (B, F)
