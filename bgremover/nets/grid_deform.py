"""The default deformable-convolution kernel: every tap sampled with `grid_sample`, then one matmul.

A leaf: it imports nothing else of the project, so `deform.py` (which chooses the kernel) and
`triton_deform.py` (which shares its closing product, `weigh_taps`) can both import it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of the sampled-tap matrix per chunk of output rows in the deformable
# convolution (16 MB in float32): large enough for an efficient matmul, small enough
# to stay in cache and keep memory flat at any image size.
_DEFORM_CHUNK = 1 << 22
# On a GPU, fewer and larger chunks: launch overhead matters more than cache.
_DEFORM_CHUNK_GPU = 1 << 26


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
    # torch.onnx.export traces no out= arguments nor writes into views: the rows are concatenated instead.
    tracing, traced = torch.jit.is_tracing(), []
    for i in range(b):
        for top in range(0, h_out, step):
            rows = slice(top, min(h_out, top + step))
            grid = _tap_grid(offset[i, :, rows], (kh, kw), padding, source.shape[-2:], top).to(sampling_dtype)
            sampled = F.grid_sample(source[i : i + 1], grid, align_corners=True)  # 1, C, taps, pixels
            modulation = mask[i, :, rows].reshape(1, taps, -1)
            if tracing:
                columns = (sampled[0] * modulation).to(x.dtype).view(c * taps, -1).t()
                traced.append(columns @ columns_to_out if bias is None else torch.addmm(bias, columns, columns_to_out))
                continue
            columns = torch.empty(sampled.shape[1:], dtype=x.dtype, device=x.device)
            torch.mul(sampled[0], modulation, out=columns)
            weigh_taps(columns.view(c * taps, -1).t(), columns_to_out, bias, out[i, top * w_out : rows.stop * w_out])
    if tracing:
        out = torch.cat(traced)
    return out.view(b, h_out, w_out, out_channels).permute(0, 3, 1, 2)


def weigh_taps(taps: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out = taps @ weights (+ bias): the product that ends every deformable kernel, written in place."""
    if bias is None:
        torch.mm(taps, weights, out=out)
    else:
        torch.addmm(bias, taps, weights, out=out)
