"""Foreground colours at soft edges (blur-fusion), computed only where they can change.

Blur-fusion (Forte & Pitie, "Approximate fast foreground colour estimation", 2021) runs a
coarse pass (box radius 90) and a fine one (radius 6) over the image. Over a whole
full-resolution photo that is slow, and almost all of it is wasted: where alpha is 1 the
result is the input colour, and where alpha is 0 with no alpha > 0 within 6 pixels it is
black. So the result is written directly there, and the formula runs only on the tiles
that hold the rest (the soft band around the subject and its 6-pixel neighbourhood).

The coarse pass only feeds the fine one with window means over 181 pixels, which change
slowly: they are computed on a grid of `BLOCK`-pixel blocks (exact window sums of the
block means, the window's fractional ends included) and interpolated bilinearly. docs/output.md
states how far this is from the whole-image computation, and tests/service/test_full_resolution.py checks it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

COARSE_RADIUS, FINE_RADIUS = 90, 6
BLOCK = 8  # pixels per coarse-grid cell along each axis
TILE = 64  # pixels per work tile along each axis; a multiple of BLOCK
# How much one pass takes. On a CPU, little: the float copies stay in cache. On a GPU a pass costs
# the same few dozen kernel launches at any size, so each takes as much as a memory budget allows.
CPU_TILES_PER_PASS = 32
CPU_ROWS_PER_STRIP = TILE  # rows of the image whose block sums are computed together; a multiple of TILE
GPU_PASS_BYTES = 256 << 20
_FLOATS_PER_TILE_PIXEL = 48  # float32 values a fine pass holds at its peak per tile-and-halo pixel (43 measured)
_FLOATS_PER_STRIP_PIXEL = 8  # float32 values the block sums hold at their peak per pixel of a strip (7 counted)
# What each plane of the block sums is divided by to be in 0..1: alpha, colour * alpha, colour.
_PLANE_SCALES = torch.tensor([255.0] + [255.0**2] * 3 + [255.0] * 3, dtype=torch.float64)
_EPS = 1e-5  # as in the paper's formula: keeps the window means' ratios finite


def refined_cutout(image: Image.Image, mask: Image.Image, device: str | torch.device = "cpu") -> Image.Image:
    """The RGBA cut-out, `mask` as its alpha, with foreground colours free of the old background
    that bleeds through semi-transparent edges.

    Runs on `device` (the model's, so a GPU does the work where there is one). At 12 MP every
    full-size copy of the pixels costs as much as the refinement's arithmetic on a GPU, so the
    pixels cross into and out of PyTorch once each, and the cut-out is made where they are.
    """
    rgb = torch.from_numpy(_pixels(image, "RGB")).to(device)
    alpha = torch.from_numpy(_pixels(mask, "L")).to(device)
    tiles = refine(rgb, alpha).cpu().numpy()
    return Image.frombuffer("RGBA", mask.size, tiles, "raw", "RGBA", tiles.strides[0], 1)


def _pixels(image: Image.Image, mode: str) -> np.ndarray:
    """A writable array of the image's pixels in `mode`, converted only if it is in another."""
    return np.array(image if image.mode == mode else image.convert(mode))


def refine(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The uint8 cut-out of colours (H, W, 3) and alpha (H, W), both uint8: the foreground, then
    that alpha, over whole tiles (H', W', 4), of which the first H rows and W columns are the image.

    Pixels stay in this layout (a PIL image's) at full size; only the tiles are made planar.
    Whole tiles, so that the rows of a CPU result are the image's rows without a copy.
    """
    height, width = alpha.shape
    rgb, alpha = _with_margin(rgb), _with_margin(alpha)
    inner = (slice(FINE_RADIUS, -FINE_RADIUS), slice(FINE_RADIUS, -FINE_RADIUS))
    result = torch.empty(*alpha[inner].shape, 4, dtype=torch.uint8, device=rgb.device)
    foreground = result[..., :3]
    torch.mul(rgb[inner], (alpha[inner] == 255)[..., None], out=foreground)
    result[..., 3] = alpha[inner]
    tiles = _work_tiles(alpha[inner])
    if len(tiles):
        weights, neighbourhoods = _coarse_neighbourhoods(_coarse_means(rgb[inner], alpha[inner], height, width))
        for chunk in tiles.split(_tiles_per_pass(rgb.device)):
            means = _tile_means(weights, neighbourhoods, chunk)
            refined = _fine_pass(_tile_inputs(rgb, alpha, height, width, chunk), means)
            _windows(foreground, TILE, TILE)[chunk[:, 0], chunk[:, 1]] = refined
    return result


def _tiles_per_pass(device: torch.device) -> int:
    """How many tiles one fine pass refines on `device`."""
    return _per_pass(device, CPU_TILES_PER_PASS, _FLOATS_PER_TILE_PIXEL * (TILE + 2 * FINE_RADIUS) ** 2)


def _rows_per_strip(device: torch.device, width: int) -> int:
    """How many rows of a `width`-pixel image one block-sum pass takes on `device`: whole tiles."""
    return _per_pass(device, CPU_ROWS_PER_STRIP, _FLOATS_PER_STRIP_PIXEL * width) // TILE * TILE


def _per_pass(device: torch.device, on_cpu: int, floats_each: int) -> int:
    """How many tiles or rows one pass takes: `on_cpu` on a CPU; on other devices as many as fit
    in GPU_PASS_BYTES (never fewer than on a CPU), each holding `floats_each` float32 values."""
    if device.type == "cpu":
        return on_cpu
    return max(on_cpu, GPU_PASS_BYTES // (4 * floats_each))


def _with_margin(pixels: torch.Tensor) -> torch.Tensor:
    """Zero-padded by the fine window's reach and up to whole tiles (alpha 0: never foreground)."""
    bottom = FINE_RADIUS + (-pixels.shape[0]) % TILE
    right = FINE_RADIUS + (-pixels.shape[1]) % TILE
    sides = (FINE_RADIUS, right, FINE_RADIUS, bottom)
    return F.pad(pixels, sides if pixels.dim() == 2 else (0, 0, *sides))


def _windows(pixels: torch.Tensor, size: int, step: int) -> torch.Tensor:
    """A view (rows, cols, *channels, size, size) of the size x size windows every `step` pixels."""
    return pixels.unfold(0, size, step).unfold(1, size, step)


def _work_tiles(alpha: torch.Tensor) -> torch.Tensor:
    """(n, 2) tile rows and columns holding alpha < 1 with alpha > 0 in or next to the tile.

    The neighbouring tiles stand in for the 6-pixel reach of the fine window: a superset,
    which only costs time, never accuracy.
    """
    blocks = _windows(alpha, TILE, TILE)
    some = (blocks.amax(dim=(2, 3)) > 0).float()[None, None]
    near = F.max_pool2d(some, 3, stride=1, padding=1)[0, 0] > 0
    return torch.nonzero(near & (blocks.amin(dim=(2, 3)) < 255))


def _coarse_means(rgb: torch.Tensor, alpha: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(7, rows, cols) float64 on the block grid: the coarse window means of alpha, colour * alpha
    and colour, each divided by the number of image pixels in its window (windows end at the border)."""
    rows = _rows_per_strip(rgb.device, alpha.shape[1])
    strips = [_block_sums(rgb[top : top + rows], alpha[top : top + rows]) for top in range(0, len(alpha), rows)]
    sums = torch.cat(strips, dim=1) * (BLOCK * BLOCK / _PLANE_SCALES.to(rgb.device))[:, None, None]
    counts = _block_counts(sums.shape[1], sums.shape[2], height, width, sums.device)
    half = (COARSE_RADIUS + 0.5) / BLOCK
    windows = _window_sums(_window_sums(torch.cat([sums, counts[None]]), half, dim=2), half, dim=1)
    return windows[:7] / windows[7:].clamp(min=1)


def _block_counts(rows: int, cols: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """How many image (not padding) pixels each block holds."""
    inside_rows = (height - BLOCK * torch.arange(rows, device=device)).clamp(0, BLOCK)
    inside_cols = (width - BLOCK * torch.arange(cols, device=device)).clamp(0, BLOCK)
    return (inside_rows[:, None] * inside_cols[None, :]).double()


def _block_sums(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(7, rows, cols) float64 means over each block of alpha, colour * alpha and colour, in 8-bit
    units (the caller scales them to 0..1 once, for all strips).

    Called on strips of rows, which keeps the float copies small: in cache on a CPU, within a
    memory budget on a GPU. Each block's mean is the same whatever the strip's height. The
    planes hold the 8-bit values as they are, so every product and block sum is a whole
    number far below float32's 2**24, and its mean over the 64 pixels of a block is exact too.
    """
    planes = torch.empty(7, *alpha.shape, device=alpha.device)
    planes[0] = alpha
    planes[4:] = rgb.permute(2, 0, 1)
    torch.mul(planes[4:], planes[:1], out=planes[1:4])
    return F.avg_pool2d(planes[None], BLOCK)[0].double()


def _window_sums(blocks: torch.Tensor, half: float, dim: int) -> torch.Tensor:
    """Sums over [centre - half, centre + half] blocks along `dim` for every block centre, counting
    the end blocks by the fraction inside (exact for pixels spread evenly over their block).

    Every window has the same length, so its ends fall at the same fraction of a block for
    every centre: each end is a fixed blend of two shifted copies of the running sum, which
    is padded with its end values (a window reaching past the border stops there).
    """
    reach, fraction = divmod(half - 0.5, 1.0)
    reach, count = int(reach), blocks.shape[dim]
    running = blocks.cumsum(dim)
    total = running.narrow(dim, count - 1, 1)
    zeros = torch.zeros_like(total)
    padded = torch.cat([zeros] * (reach + 2) + [running] + [total] * (reach + 2), dim)

    def at(boundary: int) -> torch.Tensor:  # the running sum up to block boundary j + `boundary`, every j
        return padded.narrow(dim, boundary + reach + 1, count)

    upper = at(reach + 1) * (1 - fraction) + at(reach + 2) * fraction
    lower = at(-reach - 1) * fraction + at(-reach) * (1 - fraction)
    return upper - lower


def _interpolation(device: torch.device) -> tuple[torch.Tensor, int, int]:
    """The bilinear weights (tile + halo pixels, grid cells) that take a tile's block-grid
    neighbourhood to its pixels, as F.interpolate(align_corners=False) would; and that
    neighbourhood's first cell and size, relative to the tile's own first cell."""
    pixels = torch.arange(-FINE_RADIUS, TILE + FINE_RADIUS, dtype=torch.float64)
    cells = (pixels + 0.5) / BLOCK - 0.5
    first = math.floor(cells[0].item())
    size = math.floor(cells[-1].item()) + 2 - first
    low = cells.floor().long() - first
    fraction = cells - cells.floor()
    weights = torch.zeros(len(pixels), size, dtype=torch.float64)
    weights[torch.arange(len(pixels)), low] = 1 - fraction
    weights[torch.arange(len(pixels)), low + 1] += fraction
    return weights.to(device=device, dtype=torch.float32), first, size


def _coarse_neighbourhoods(coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear weights of `_interpolation` and a view (7, tile rows, tile cols, cells, cells)
    of the block-grid neighbourhood of every tile; made once, then indexed by each pass.

    Repeating the grid's edge cells makes the interpolation clamp at the border, as F.interpolate does.
    """
    weights, first, size = _interpolation(coarse.device)
    cells_per_tile = TILE // BLOCK
    after = size + first - cells_per_tile
    grid = F.pad(coarse.float()[None], (-first, after, -first, after), mode="replicate")[0]
    return weights, grid.unfold(1, size, cells_per_tile).unfold(2, size, cells_per_tile)


def _tile_means(weights: torch.Tensor, neighbourhoods: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """(n, 7, P, P) coarse means at the pixels of each tile and its fine-window halo (P = TILE + 12)."""
    return weights @ neighbourhoods[:, tiles[:, 0], tiles[:, 1]].transpose(0, 1) @ weights.T


def _tile_inputs(rgb: torch.Tensor, alpha: torch.Tensor, height: int, width: int, tiles: torch.Tensor):
    """(n, 5, P, P) colour, alpha and a 1-inside-the-image flag for each tile and its halo, in 0..1,
    from the zero-margined full-size pixels (outside the image alpha is 0, so nothing there counts)."""
    size = TILE + 2 * FINE_RADIUS
    inputs = torch.empty(len(tiles), 5, size, size, device=rgb.device)
    inputs[:, :3] = _windows(rgb, size, TILE)[tiles[:, 0], tiles[:, 1]]
    inputs[:, 3] = _windows(alpha, size, TILE)[tiles[:, 0], tiles[:, 1]]
    inputs[:, :4] /= 255
    steps = torch.arange(-FINE_RADIUS, TILE + FINE_RADIUS, device=rgb.device)
    rows, cols = tiles[:, :1] * TILE + steps, tiles[:, 1:] * TILE + steps
    inputs[:, 4] = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]).float()
    return inputs


def _fine_pass(inputs: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """(n, 3, TILE, TILE) uint8: the coarse estimate from the window means, then the fine pass over it."""
    color, a, valid = inputs[:, :3], inputs[:, 3:4], inputs[:, 4:5]
    mean_a, mean_color_a, mean_color = means[:, :1], means[:, 1:4], means[:, 4:7]
    coarse_fg = mean_color_a / (mean_a + _EPS)
    coarse_bg = (mean_color - mean_color_a) / (1 - mean_a + _EPS)
    planes = torch.empty(len(inputs), 8, *a.shape[2:], device=a.device)
    planes[:, :1], planes[:, 7:] = a, valid
    torch.mul(_corrected(color, a, coarse_fg, coarse_bg), a, out=planes[:, 1:4])
    torch.mul(coarse_bg, (1 - a) * valid, out=planes[:, 4:7])
    sums = _box_sums(planes)
    count = sums[:, 7:8].clamp(min=1)  # 0 only far outside the image, where nothing is kept
    fine_a = sums[:, :1] / count
    fine_fg = sums[:, 1:4] / count / (fine_a + _EPS)
    fine_bg = sums[:, 4:7] / count / (1 - fine_a + _EPS)
    inner = (slice(None), slice(None), slice(FINE_RADIUS, -FINE_RADIUS), slice(FINE_RADIUS, -FINE_RADIUS))
    result = _corrected(color[inner], a[inner], fine_fg, fine_bg)
    return (result * 255 + 0.5).to(torch.uint8)


def _corrected(color: torch.Tensor, a: torch.Tensor, foreground: torch.Tensor, background: torch.Tensor):
    """The blur-fusion update: the window's foreground mean plus alpha times what it fails to explain."""
    return (foreground + a * (color - a * foreground - (1 - a) * background)).clamp(0, 1)


def _box_sums(planes: torch.Tensor) -> torch.Tensor:
    """Sums over the fine window for the pixels at least FINE_RADIUS inside each tile + halo.

    As two products with a band matrix of ones (one per axis): matrix products are what CPUs
    and GPUs do fastest, many times faster here than pooling or cumulative sums.
    """
    offsets = torch.arange(TILE + 2 * FINE_RADIUS, device=planes.device)[:, None] - torch.arange(
        TILE, device=planes.device
    )
    band = ((offsets >= 0) & (offsets <= 2 * FINE_RADIUS)).to(planes.dtype)
    return band.T @ (planes @ band)
