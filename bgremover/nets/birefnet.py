"""BiRefNet (bilateral reference network), inference only, as RMBG-2.0 and BiRefNet ship it.

The configuration is the one every public checkpoint uses: a Swin backbone run on
the image and on its half-size copy (features concatenated), the three lower levels
fused into the top one before a squeeze block, decoder blocks with deformable ASPP,
image patches fed in at each decoder level ("inward reference") and gradient-attention
gates. The forward pass returns the final prediction as logits.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .swin import SwinConfig, SwinTransformer

# Channels of the image-patch features fed to the decoder at each level are the
# matching backbone width divided by this.
_PATCH_FEATURE_DIVISOR = 8
# Channels inside decoder blocks, image-patch encoders and gradient gates.
_DECODER_WIDTH = 64
_ASPP_WIDTH = 256
_GRADIENT_WIDTH = 16
# Elements of the sampled-tap matrix per chunk of output rows in the deformable
# convolution (16 MB in float32): large enough for an efficient matmul, small enough
# to stay in cache and keep memory flat at any image size.
_DEFORM_CHUNK = 1 << 22
# On a GPU, fewer and larger chunks: launch overhead matters more than cache.
_DEFORM_CHUNK_GPU = 1 << 26
# Deformable-convolution kernels: "torchvision" (`torchvision.ops.deform_conv2d`) or
# "grid_sample" (this module's `deform_conv2d`); "auto" picks per device and dtype.
# "grid_sample_native" is ours sampling in the input's dtype instead of float32, and "triton"
# ours with the sampling fused into one Triton kernel (CUDA): both only chosen by name, to
# measure on a GPU what they gain (BENCHMARKS.md, "Next GPU candidate").
DEFORM_KERNELS = ("auto", "torchvision", "grid_sample", "grid_sample_native", "triton")
_deform_kernel = "auto"


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


def _tap_grid(offset: torch.Tensor, kernel: tuple[int, int], padding: int, size: torch.Size, top: int) -> torch.Tensor:
    """Sampling points (1, taps, rows * W_out, 2) for `grid_sample`, for output rows `top`... of one image.

    `offset` (2 * taps, rows, W_out) holds (dy, dx) per tap as torchvision lays it out;
    the result is each tap's position plus its offset as (x, y), normalised so that -1
    and 1 are the centres of the first and last pixels, in float32. The scales are
    Python numbers, not a tensor built here: that would be a host-to-device copy on a
    GPU, which CUDA graph capture forbids.
    """
    _, rows, w_out = offset.shape
    kh, kw = kernel
    h, w = size
    device = offset.device
    x_scale, y_scale = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    tap_rows = torch.arange(kh, device=device).repeat_interleave(kw)[:, None, None] - padding
    tap_cols = torch.arange(kw, device=device).repeat(kh)[:, None, None] - padding
    ys = tap_rows + torch.arange(top, top + rows, device=device)[:, None]  # taps, rows, 1
    xs = tap_cols + torch.arange(w_out, device=device)  # taps, 1, W_out
    dy, dx = offset.view(kh * kw, 2, rows, w_out).unbind(1)
    grid_x = torch.add(xs * x_scale - 1.0, dx, alpha=x_scale)
    grid_y = torch.add(ys * y_scale - 1.0, dy, alpha=y_scale)
    return torch.stack((grid_x, grid_y), dim=-1).view(1, kh * kw, -1, 2)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    sampling_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Modulated deformable convolution (stride 1, dilation 1, one offset group; `bias` is what a
    batch norm folded into it leaves, none in the checkpoints).

    Same arguments and result as `torchvision.ops.deform_conv2d`, computed per chunk of
    output rows as bilinear sampling of every tap (`grid_sample` on a channels-last
    copy of `x`, whose zero padding matches torchvision's out-of-bounds rule) and one
    matmul. Sampling stays in float32 (`sampling_dtype`) because positions need the
    precision; the matmul runs in `x`'s dtype, so bfloat16 models get the fast bf16 GEMM, which
    torchvision's CPU kernel lacks. Memory stays flat at any size. The result is channels-last.
    """
    b, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[-2:]
    source = x.to(sampling_dtype)
    if h == 1 or w == 1:  # align_corners cannot address a 1-pixel axis: add a zero line, as out of bounds reads
        source = F.pad(source, (0, int(w == 1), 0, int(h == 1)))
    source = source.contiguous(memory_format=torch.channels_last)
    columns_to_out = weight.reshape(out_channels, c * taps).t()
    out = torch.empty(b, h_out * w_out, out_channels, dtype=x.dtype, device=x.device)
    chunk = _DEFORM_CHUNK if x.device.type == "cpu" else _DEFORM_CHUNK_GPU
    step = max(1, chunk // (c * taps * w_out))
    for i in range(b):
        for top in range(0, h_out, step):
            rows = slice(top, min(h_out, top + step))
            grid = _tap_grid(offset[i, :, rows], (kh, kw), padding, source.shape[-2:], top).to(sampling_dtype)
            sampled = F.grid_sample(source[i : i + 1], grid, align_corners=True)  # 1, C, taps, pixels
            columns = torch.empty(sampled.shape[1:], dtype=x.dtype, device=x.device)
            torch.mul(sampled[0], mask[i, :, rows].reshape(1, taps, -1), out=columns)
            weigh_taps(columns.view(c * taps, -1).t(), columns_to_out, bias, out[i, top * w_out : rows.stop * w_out])
    return out.view(b, h_out, w_out, out_channels).permute(0, 3, 1, 2)


def weigh_taps(taps: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out = taps @ weights (+ bias): the product that ends every deformable kernel, written in place."""
    if bias is None:
        torch.mm(taps, weights, out=out)
    else:
        torch.addmm(bias, taps, weights, out=out)


def set_deform_kernel(name: str) -> str:
    """Chooses the deformable-convolution kernel of every BiRefNet in this process; returns the previous choice.

    "auto" (the default) is what `deform_kernel_name` describes; "torchvision" or
    "grid_sample" force one, to measure or test them against each other.
    """
    global _deform_kernel
    if name not in DEFORM_KERNELS:
        raise ValueError(f"unknown deformable-convolution kernel {name!r}: use {', '.join(DEFORM_KERNELS)}.")
    if name == "triton" and importlib.util.find_spec("triton") is None:
        raise ValueError(
            "the 'triton' deformable-convolution kernel needs the triton package, which PyTorch's CUDA "
            "wheels for Linux install: install PyTorch with CUDA, or choose another kernel."
        )
    previous, _deform_kernel = _deform_kernel, name
    return previous


def deform_kernel_name(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel `DeformableConv2d` runs on `device` in `dtype`: one of DEFORM_KERNELS but "auto".

    "auto" is ours everywhere. torchvision's CUDA kernel is faster in eager mode, but replayed
    from a CUDA graph it gave wrong masks (measured on an H200: see BENCHMARKS.md), and with
    graph replay ours is the faster path anyway; on the CPU ours is faster and also runs in
    bfloat16. `set_deform_kernel("torchvision")` still selects it, for measurements, as
    `set_deform_kernel("grid_sample_native")` selects ours sampling in `dtype` and
    `set_deform_kernel("triton")` ours with the sampling fused into one Triton kernel.
    """
    return "grid_sample" if _deform_kernel == "auto" else _deform_kernel


def _torchvision_deform_conv2d() -> Callable[..., torch.Tensor]:
    """torchvision's kernel, imported on first use: CPU inference never pays for importing torchvision."""
    from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

    return torchvision_deform_conv2d


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
        kernel = deform_kernel_name(x.device, x.dtype)
        weight, bias = self.regular_conv.weight, self.regular_conv.bias
        if kernel == "torchvision":
            return _torchvision_deform_conv2d()(x, offset, weight, bias, padding=(self.padding,) * 2, mask=mask)
        if kernel == "triton":
            from . import triton_deform

            return triton_deform.deform_conv2d(x, offset, weight, self.padding, mask, bias)
        sampling = x.dtype if kernel == "grid_sample_native" else torch.float32
        return deform_conv2d(x, offset, weight, self.padding, mask, bias, sampling)


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
