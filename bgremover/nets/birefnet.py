"""BiRefNet (bilateral reference network), inference only, as RMBG-2.0 and BiRefNet ship it.

The configuration is the one every public checkpoint uses: a Swin backbone run on
the image and on its half-size copy (features concatenated), the three lower levels
fused into the top one before a squeeze block, decoder blocks with deformable ASPP,
image patches fed in at each decoder level ("inward reference") and gradient-attention
gates. The forward pass returns the final prediction as logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform import modulated_deform_conv2d
from .swin import SwinConfig, SwinTransformer

# Channels of the image-patch features fed to the decoder at each level are the
# matching backbone width divided by this.
_PATCH_FEATURE_DIVISOR = 8
# Channels inside decoder blocks, image-patch encoders and gradient gates.
_DECODER_WIDTH = 64
_ASPP_WIDTH = 256
_GRADIENT_WIDTH = 16


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def image_patches(image: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Cuts the image into a grid of tiles of `size` and stacks them as channels.

    Tiles are ordered column by column (left to right, each top to bottom), each
    contributing its 3 colour channels, which is the order the checkpoints learned.
    The result is laid out channels-last, the layout the decoder convolutions run fastest in.
    """
    b, c, h, w = image.shape
    th, tw = size
    tiles = image.view(b, c, h // th, th, w // tw, tw).permute(0, 3, 5, 4, 2, 1)  # b, th, tw, columns, rows, c
    return tiles.reshape(b, th, tw, -1).permute(0, 3, 1, 2)


class DeformableConv2d(nn.Module):
    """Modulated deformable convolution whose offsets and masks come from the input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        super().__init__()
        self.padding = padding
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=padding)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, padding=padding)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offsets and modulation come from one convolution: the input is read once, in one larger GEMM."""
        steering_weight = torch.cat([self.offset_conv.weight, self.modulator_conv.weight])
        steering_bias = torch.cat([self.offset_conv.bias, self.modulator_conv.bias])
        taps = self.modulator_conv.out_channels
        steering = F.conv2d(x, steering_weight, steering_bias, padding=self.padding)
        offset, modulator = steering.split([2 * taps, taps], dim=1)
        mask = 2.0 * torch.sigmoid(modulator)
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        return modulated_deform_conv2d(x, offset, weight, self.padding, mask, bias)


class DeformableBranch(nn.Module):
    CONV_BN_PAIRS = (("atrous_conv.regular_conv", "bn"),)

    def __init__(self, in_channels: int, kernel_size: int):
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, _ASPP_WIDTH, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(_ASPP_WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class DeformableASPP(nn.Module):
    """Atrous-spatial-pyramid pooling with deformable 1x1, 1x1, 3x3 and 7x7 branches."""

    # bn1 follows conv1, whose weights `forward` applies branch by branch; the bias once.
    CONV_BN_PAIRS = (("conv1", "bn1"),)

    def __init__(self, channels: int):
        super().__init__()
        self.aspp1 = DeformableBranch(channels, 1)
        self.aspp_deforms = nn.ModuleList(DeformableBranch(channels, k) for k in (1, 3, 7))
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, _ASPP_WIDTH, 1, bias=False),
            nn.BatchNorm2d(_ASPP_WIDTH),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(_ASPP_WIDTH * 5, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`conv1` over the concatenated branches, computed as the sum of each branch's share.

        Each branch is consumed as soon as it exists, so the 5-branch stack (the largest
        tensor of the decoder) is never built, and the pooled branch, constant over the
        map, enters as a per-image bias instead of being broadcast to full size.
        """
        weights = self.conv1.weight.split(_ASPP_WIDTH, dim=1)
        out = F.conv2d(self.global_avg_pool(x), weights[-1], self.conv1.bias)
        for branch, weight in zip([self.aspp1, *self.aspp_deforms], weights[:-1], strict=True):
            out = out + F.conv2d(branch(x), weight)
        return F.relu(self.bn1(out))


class DecoderBlock(nn.Module):
    CONV_BN_PAIRS = (("conv_in", "bn_in"), ("conv_out", "bn_out"))

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, _DECODER_WIDTH, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(_DECODER_WIDTH)
        self.dec_att = DeformableASPP(_DECODER_WIDTH)
        self.conv_out = nn.Conv2d(_DECODER_WIDTH, out_channels, 3, padding=1)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dec_att(F.relu(self.bn_in(self.conv_in(x))))
        return self.bn_out(self.conv_out(x))


class PatchEncoder(nn.Module):
    """Two plain convolutions that turn stacked image tiles into decoder features."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, _DECODER_WIDTH, 3, padding=1)
        self.conv_out = nn.Conv2d(_DECODER_WIDTH, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


class LateralBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _gradient_convs(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, _GRADIENT_WIDTH, 3, padding=1), nn.BatchNorm2d(_GRADIENT_WIDTH), nn.ReLU()
    )


def _head(in_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, 1, 1))


class Decoder(nn.Module):
    """Top-down decoder. `channels` are the fused backbone widths, deepest first.

    Levels 4..2 end in a gradient-attention gate; the multi-scale supervision heads
    and gradient predictors exist only so training checkpoints load, and are unused.
    """

    def __init__(self, channels: tuple[int, int, int, int]):
        super().__init__()
        c4, c3, c2, c1 = channels
        patch = [c // _PATCH_FEATURE_DIVISOR for c in channels]
        # Input channels of the image-patch encoders: 3 colours times the tile count
        # for a 1024-wide training image at strides 32, 16, 8, 4 and 1.
        self.ipt_blk5 = PatchEncoder(3 * 4**5, patch[0])
        self.ipt_blk4 = PatchEncoder(3 * 4**4, patch[0])
        self.ipt_blk3 = PatchEncoder(3 * 4**3, patch[1])
        self.ipt_blk2 = PatchEncoder(3 * 4**2, patch[2])
        self.ipt_blk1 = PatchEncoder(3, patch[3])
        self.decoder_block4 = DecoderBlock(c4 + patch[0], c3)
        self.decoder_block3 = DecoderBlock(c3 + patch[0], c2)
        self.decoder_block2 = DecoderBlock(c2 + patch[1], c1)
        self.decoder_block1 = DecoderBlock(c1 + patch[2], c1 // 2)
        self.conv_out1 = _head(c1 // 2 + patch[3])
        self.lateral_block4 = LateralBlock(c3)
        self.lateral_block3 = LateralBlock(c2)
        self.lateral_block2 = LateralBlock(c1)
        for level, width in zip((4, 3, 2), (c3, c2, c1), strict=True):
            self.add_module(f"conv_ms_spvn_{level}", nn.Conv2d(width, 1, 1))
            self.add_module(f"gdt_convs_{level}", _gradient_convs(width))
            self.add_module(f"gdt_convs_pred_{level}", _head(_GRADIENT_WIDTH))
            self.add_module(f"gdt_convs_attn_{level}", _head(_GRADIENT_WIDTH))

    def _with_patches(self, image: torch.Tensor, x: torch.Tensor, encoder: PatchEncoder) -> torch.Tensor:
        return torch.cat([x, encoder(image_patches(image, x.shape[-2:]))], dim=1)

    def _gate(self, level: int, x: torch.Tensor) -> torch.Tensor:
        features = getattr(self, f"gdt_convs_{level}")(x)
        return x * torch.sigmoid(getattr(self, f"gdt_convs_attn_{level}")(features))

    def forward(self, image: torch.Tensor, x1, x2, x3, x4) -> torch.Tensor:
        p = self._gate(4, self.decoder_block4(self._with_patches(image, x4, self.ipt_blk5)))
        p = _resize(p, x3.shape[-2:]) + self.lateral_block4(x3)
        p = self._gate(3, self.decoder_block3(self._with_patches(image, p, self.ipt_blk4)))
        p = _resize(p, x2.shape[-2:]) + self.lateral_block3(x2)
        p = self._gate(2, self.decoder_block2(self._with_patches(image, p, self.ipt_blk3)))
        p = _resize(p, x1.shape[-2:]) + self.lateral_block2(x1)
        p = self.decoder_block1(self._with_patches(image, p, self.ipt_blk2))
        return self._output(image, p)

    def _output(self, image: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """`conv_out1` over [p resized to the image, ipt_blk1(image)], without building that full-size stack.

        The 1x1 head is linear per pixel, so its share for `p` commutes with the bilinear
        resize (applied to 1 channel instead of ~200), and its share for the image
        features folds into ipt_blk1's last convolution (no activation in between),
        which then has 1 output channel instead of 48.
        """
        head, encoder = self.conv_out1[0], self.ipt_blk1
        split = p.shape[1]
        to_image = head.weight[:, split:].flatten(1)  # 1, patch channels
        folded = torch.einsum("oc,cikl->oikl", to_image, encoder.conv_out.weight)
        bias = head.bias + to_image @ encoder.conv_out.bias
        features = encoder.conv1(image_patches(image, image.shape[-2:]))
        coarse = _resize(F.conv2d(p, head.weight[:, :split]), image.shape[-2:])
        return coarse + F.conv2d(features, folded, bias, padding=encoder.conv_out.padding)


class BiRefNet(nn.Module):
    """Input: a normalised batch (B, 3, H, W), H and W multiples of 32. Output: logits (B, 1, H, W).

    The input may come in any float dtype and is cast to the weights' (so a bfloat16 or
    float16 network takes the same float32 batch as a float32 one); the logits come back
    in float32, for the same reason.
    """

    def __init__(self, backbone: SwinConfig):
        super().__init__()
        self.bb = SwinTransformer(backbone)
        c1, c2, c3, c4 = (2 * c for c in backbone.stage_channels)  # two input scales, concatenated
        self.squeeze_module = nn.Sequential(DecoderBlock(c4 + c1 + c2 + c3, c4))
        self.decoder = Decoder((c4, c3, c2, c1))

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        h, w = image.shape[-2:]
        full = self.bb(image)
        half = self.bb(_resize(image, (h // 2, w // 2)))
        return [torch.cat([f, _resize(g, f.shape[-2:])], dim=1) for f, g in zip(full, half, strict=True)]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self.bb.patch_embed.proj.weight.dtype)
        x1, x2, x3, x4 = self.encode(image)
        top = x4.shape[-2:]
        x4 = self.squeeze_module(torch.cat([_resize(x1, top), _resize(x2, top), _resize(x3, top), x4], dim=1))
        return self.decoder(image, x1, x2, x3, x4).float()
