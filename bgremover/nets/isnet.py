"""IS-Net (the network behind BRIA RMBG-1.4) as a plain, inference-only PyTorch module.

RMBG-1.4 is published with its architecture as "remote code" that ``transformers`` would have to
download and execute. Implementing the network natively here lets us load the published weights
into a module we control, so no third-party code is ever run. The state-dict names and shapes match
the RMBG-1.4 checkpoint exactly.

The network is a U^2-Net style encoder/decoder built from "residual U-blocks" (RSU): each block is
itself a small U-Net whose output is added to the block's input projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ISNet"]


def _resize_to(x: Tensor, reference: Tensor) -> Tensor:
    """Bilinearly resize ``x`` to the spatial size of ``reference`` (align_corners=False)."""
    return F.interpolate(x, size=reference.shape[2:], mode="bilinear", align_corners=False)


def _halve(x: Tensor) -> Tensor:
    """2x2 max pooling that keeps a trailing odd row/column (ceil mode)."""
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class ConvBNReLU(nn.Module):
    """3x3 convolution (optionally dilated) followed by batch norm and ReLU."""

    CONV_BN_PAIRS = (("conv_s1", "bn_s1"),)

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        # Attribute names follow the checkpoint's keys.
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)), inplace=True)


class ResidualUBlock(nn.Module):
    """A residual U-block of ``depth`` levels (RSU-``depth``).

    The input is projected to ``out_ch`` channels; that projection runs through a small U-Net of
    ``depth`` encoder convolutions and ``depth - 1`` decoder convolutions and is added back to the
    U-Net's output.

    With ``dilated=False`` the encoder halves the resolution between levels and only the innermost
    convolution is dilated (by 2). With ``dilated=True`` (the "F" variant used at the coarsest
    scales) the resolution is kept and dilations grow as 1, 2, 4, 8, ... instead.
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"an RSU block needs at least 2 levels, got {depth}")
        self.depth = depth
        self.dilated = dilated

        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        for level in range(1, depth + 1):
            self.add_module(
                f"rebnconv{level}",
                ConvBNReLU(out_ch if level == 1 else mid_ch, mid_ch, self._dilation(level)),
            )
        for level in range(depth - 1, 0, -1):
            self.add_module(
                f"rebnconv{level}d",
                ConvBNReLU(2 * mid_ch, out_ch if level == 1 else mid_ch, self._dilation(level, decoder=True)),
            )

    def _dilation(self, level: int, decoder: bool = False) -> int:
        if self.dilated:
            return 2 ** (level - 1)
        return 2 if level == self.depth and not decoder else 1

    def forward(self, x: Tensor) -> Tensor:
        projected = self.rebnconvin(x)

        # Encoder: keep each level's features for the skip connections.
        skips: list[Tensor] = []
        hx = projected
        for level in range(1, self.depth):
            hx = getattr(self, f"rebnconv{level}")(hx)
            skips.append(hx)
            if not self.dilated and level < self.depth - 1:
                hx = _halve(hx)
        hx = getattr(self, f"rebnconv{self.depth}")(hx)

        # Decoder: fuse with the matching skip, then grow back to the next level's size.
        for level in range(self.depth - 1, 0, -1):
            skip = skips[level - 1]
            hx = getattr(self, f"rebnconv{level}d")(torch.cat((hx, skip), dim=1))
            if not self.dilated and level > 1:
                hx = _resize_to(hx, skips[level - 2])

        return hx + projected


class ISNet(nn.Module):
    """The IS-Net segmentation network in RMBG-1.4's configuration.

    ``forward`` returns the finest side output after the sigmoid, shape ``(B, out_ch, H, W)``: the
    foreground probability map RMBG-1.4 uses as its mask. The coarser side heads (``side2`` to
    ``side6``) are only used for deep supervision during training; they are kept so that checkpoints
    load strictly, but are not evaluated.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1) -> None:
        super().__init__()
        # Stride-2 stem without normalisation; its output feeds stage1 directly.
        self.conv_in = nn.Conv2d(in_ch, 64, kernel_size=3, stride=2, padding=1)

        # Encoder.
        self.stage1 = ResidualUBlock(7, 64, 32, 64)
        self.stage2 = ResidualUBlock(6, 64, 32, 128)
        self.stage3 = ResidualUBlock(5, 128, 64, 256)
        self.stage4 = ResidualUBlock(4, 256, 128, 512)
        self.stage5 = ResidualUBlock(4, 512, 256, 512, dilated=True)
        self.stage6 = ResidualUBlock(4, 512, 256, 512, dilated=True)

        # Decoder.
        self.stage5d = ResidualUBlock(4, 1024, 256, 512, dilated=True)
        self.stage4d = ResidualUBlock(4, 1024, 128, 256)
        self.stage3d = ResidualUBlock(5, 512, 64, 128)
        self.stage2d = ResidualUBlock(6, 256, 32, 64)
        self.stage1d = ResidualUBlock(7, 128, 16, 64)

        # Side-output heads, finest (side1) to coarsest (side6).
        self.side1 = nn.Conv2d(64, out_ch, kernel_size=3, padding=1)
        self.side2 = nn.Conv2d(64, out_ch, kernel_size=3, padding=1)
        self.side3 = nn.Conv2d(128, out_ch, kernel_size=3, padding=1)
        self.side4 = nn.Conv2d(256, out_ch, kernel_size=3, padding=1)
        self.side5 = nn.Conv2d(512, out_ch, kernel_size=3, padding=1)
        self.side6 = nn.Conv2d(512, out_ch, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Foreground probabilities in [0, 1] for a normalised image batch ``x`` of shape (B, C, H, W).

        ``x`` may come in any float dtype and is cast to the weights' (a bfloat16 network
        takes the same float32 batch); the probabilities come back in float32.
        """
        x = x.to(self.conv_in.weight.dtype)
        encoder = (self.stage1, self.stage2, self.stage3, self.stage4, self.stage5)
        decoder = (self.stage5d, self.stage4d, self.stage3d, self.stage2d, self.stage1d)

        features: list[Tensor] = []
        hx = self.conv_in(x)
        for index, stage in enumerate(encoder):
            if index > 0:
                hx = _halve(hx)
            hx = stage(hx)
            features.append(hx)
        hx = self.stage6(_halve(hx))

        for stage, skip in zip(decoder, reversed(features), strict=True):
            hx = stage(torch.cat((_resize_to(hx, skip), skip), dim=1))

        return torch.sigmoid(_resize_to(self.side1(hx), x).float())
