"""The modulated deformable convolution with its sampling fused into one Triton kernel, for CUDA.

`grid_deform.deform_conv2d` samples every tap with `grid_sample` in float32 and then multiplies
by the modulation: on a GPU that is a float32 copy of the input, a grid built in several
small kernels, the sampler and a mixed-type product, each a pass over memory, and together
the larger part of the deformable convolutions' time (BENCHMARKS.md, "Next GPU candidate").
Here one kernel reads the offsets, the modulation and the four neighbours straight from the
network's tensors, whatever their strides, interpolates in float32 and writes the modulated
taps once, in the input's dtype; one matrix product then applies the weights. That is the
default kernel's arithmetic (float32 positions and interpolation, one rounding of the taps
to the input's dtype), so the results agree to float32 rounding.

Chosen by name (`set_deform_kernel("triton")`) until a GPU run shows it faster; with
TRITON_INTERPRET=1 set before this module is imported it also runs on CPU tensors, which is
how the tests check it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grid_deform import weigh_taps

# Elements of the tap matrix per chunk of output pixels: bounds memory at any image size.
_CHUNK = 1 << 26
_BLOCK_PIXELS = 64
_MAX_BLOCK_CHANNELS = 64


@triton.jit
def _corner(row, ys, xs, weight, height, width, y_stride, x_stride, pixels_in, channels_in):
    """One bilinear neighbour times its weight; neighbours outside the image count as zero
    (torchvision's rule, which `grid_sample`'s zero padding with aligned corners matches)."""
    valid = pixels_in & (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    pointers = row + (ys * y_stride + xs * x_stride)[:, None]
    values = tl.load(pointers, mask=valid[:, None] & channels_in[None, :], other=0.0)
    return values.to(tl.float32) * weight[:, None]


@triton.jit
def _sample_taps(
    source,
    offset,
    mask,
    columns,
    first_pixel,
    pixel_count,
    channels,
    height,
    width,
    out_width,
    out_pixels,
    padding,
    source_strides_b,
    source_strides_c,
    source_strides_y,
    source_strides_x,
    offset_strides_b,
    offset_strides_c,
    offset_strides_y,
    offset_strides_x,
    mask_strides_b,
    mask_strides_c,
    mask_strides_y,
    mask_strides_x,
    KERNEL_WIDTH: tl.constexpr,
    TAPS: tl.constexpr,
    BLOCK_PIXELS: tl.constexpr,
    BLOCK_CHANNELS: tl.constexpr,
):
    """columns[p, tap * C + c] = mask * bilinear(source[c], position of `tap` at output pixel p)."""
    tap = tl.program_id(1)
    local = tl.program_id(0) * BLOCK_PIXELS + tl.arange(0, BLOCK_PIXELS)
    pixels_in = local < pixel_count
    pixel = (first_pixel + local).to(tl.int64)
    image = pixel // out_pixels
    out_y = (pixel % out_pixels) // out_width
    out_x = pixel % out_width

    at = image * offset_strides_b + out_y * offset_strides_y + out_x * offset_strides_x
    dy = tl.load(offset + at + (2 * tap) * offset_strides_c, mask=pixels_in, other=0.0).to(tl.float32)
    dx = tl.load(offset + at + (2 * tap + 1) * offset_strides_c, mask=pixels_in, other=0.0).to(tl.float32)
    at = image * mask_strides_b + tap * mask_strides_c + out_y * mask_strides_y + out_x * mask_strides_x
    modulation = tl.load(mask + at, mask=pixels_in, other=0.0).to(tl.float32)

    sample_y = (out_y + tap // KERNEL_WIDTH - padding).to(tl.float32) + dy
    sample_x = (out_x + tap % KERNEL_WIDTH - padding).to(tl.float32) + dx
    y0 = tl.floor(sample_y)
    x0 = tl.floor(sample_x)
    fy = sample_y - y0
    fx = sample_x - x0
    top = y0.to(tl.int64)
    left = x0.to(tl.int64)

    channel = tl.program_id(2) * BLOCK_CHANNELS + tl.arange(0, BLOCK_CHANNELS)
    channels_in = channel < channels
    row = source + image[:, None] * source_strides_b + channel[None, :] * source_strides_c
    ys, xs = source_strides_y, source_strides_x
    value = _corner(row, top, left, (1.0 - fy) * (1.0 - fx), height, width, ys, xs, pixels_in, channels_in)
    value += _corner(row, top, left + 1, (1.0 - fy) * fx, height, width, ys, xs, pixels_in, channels_in)
    value += _corner(row, top + 1, left, fy * (1.0 - fx), height, width, ys, xs, pixels_in, channels_in)
    value += _corner(row, top + 1, left + 1, fy * fx, height, width, ys, xs, pixels_in, channels_in)
    value *= modulation[:, None]

    target = columns + local[:, None] * (TAPS * channels) + tap * channels + channel[None, :]
    tl.store(target, value.to(columns.dtype.element_ty), mask=pixels_in[:, None] & channels_in[None, :])


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    padding: int,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same arguments and result as `grid_deform.deform_conv2d` (stride 1, dilation 1, one offset group).

    The whole batch goes through each launch; the result is channels-last. The input is read
    channels-last (a no-op in the network, whose maps already are), so that each bilinear
    neighbour is one contiguous run of channels.
    """
    x = x.contiguous(memory_format=torch.channels_last)
    b, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = kh * kw
    h_out, w_out = offset.shape[-2:]
    total = b * h_out * w_out
    # The tap matrix is ordered tap-major (tap * C + c), so each program writes whole channel runs.
    taps_to_out = weight.permute(0, 2, 3, 1).reshape(out_channels, taps * c).t()
    out = torch.empty(total, out_channels, dtype=x.dtype, device=x.device)
    block_channels = min(_MAX_BLOCK_CHANNELS, triton.next_power_of_2(c))
    step = max(_BLOCK_PIXELS, _CHUNK // (taps * c) // _BLOCK_PIXELS * _BLOCK_PIXELS)
    for first in range(0, total, step):
        count = min(step, total - first)
        columns = torch.empty(count, taps * c, dtype=x.dtype, device=x.device)
        grid = (triton.cdiv(count, _BLOCK_PIXELS), taps, triton.cdiv(c, block_channels))
        _sample_taps[grid](
            x,
            offset,
            mask,
            columns,
            first,
            count,
            c,
            h,
            w,
            w_out,
            h_out * w_out,
            padding,
            *x.stride(),
            *offset.stride(),
            *mask.stride(),
            KERNEL_WIDTH=kw,
            TAPS=taps,
            BLOCK_PIXELS=_BLOCK_PIXELS,
            BLOCK_CHANNELS=block_channels,
        )
        weigh_taps(columns, taps_to_out, bias, out[first : first + count])
    return out.view(b, h_out, w_out, out_channels).permute(0, 3, 1, 2)
