"""The network's input and its mask with NumPy and Pillow: the pipeline's pre/post-processing for
engines fed arrays (OpenVINO), so that a process running a cached export never imports PyTorch.

Each step computes what PyTorch's `F.interpolate(mode="bilinear")` does in `pipeline.Remover`
(half-pixel centres, no corner alignment; antialiased where the family asks for it), so both
engines see the same input and give the same mask, up to float rounding. Full-resolution work
goes in bands of rows, as there: memory stays near one byte per output pixel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

# Pixels per band when a full-resolution image or mask is processed in pieces (bounded memory).
BAND_PIXELS = 1 << 22


def bands(height: int, width: int) -> Iterator[slice]:
    """Row ranges of about `BAND_PIXELS` pixels each, covering `height` rows."""
    step = max(1, BAND_PIXELS // max(width, 1))
    for top in range(0, height, step):
        yield slice(top, min(height, top + step))


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position along one axis: the two input positions it blends and the weight of
    the second, as PyTorch's bilinear interpolation (align_corners=False) computes them."""
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def _blend(low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return (1.0 - weight) * low + weight * high


def _resized(pixels: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """An (H, W, C) image as float32 (h, w, C): columns first over bands of rows, then rows on the narrow result."""
    height, width = size
    if antialias:  # Pillow's bilinear filter widens with the reduction, as PyTorch's antialias does
        channels = [Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32), "F") for c in range(3)]
        resized = [channel.resize((width, height), Image.Resampling.BILINEAR) for channel in channels]
        return np.stack([np.asarray(channel) for channel in resized], axis=-1)
    low, high, weight = _taps(pixels.shape[1], width)
    narrow = np.concatenate(
        [_blend(pixels[rows, low], pixels[rows, high], weight[:, None]) for rows in bands(*pixels.shape[:2])]
    ).astype(np.float32, copy=False)
    low, high, weight = _taps(pixels.shape[0], height)
    return _blend(narrow[low], narrow[high], weight[:, None, None])


def network_input(
    images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float], antialias: bool
) -> np.ndarray:
    """The normalised float32 batch (B, 3, size, size) of RGB images; `mean` and `std` on the 0..1 scale."""
    shift, scale = 255.0 * np.asarray(mean, np.float32), 255.0 * np.asarray(std, np.float32)
    batch = [(_resized(np.asarray(image), (size, size), antialias) - shift) / scale for image in images]
    return np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2), dtype=np.float32)


def mask_image(raw: np.ndarray, size: tuple[int, int], activation: str) -> Image.Image:
    """One raw output (1, h, w) as a mask of `size` (width, height), mode L: upsampled, then the
    family's activation (`sigmoid`, or `stretch` of the full-size map's min..max to 0..1)."""
    width, height = size
    plane = raw.reshape(raw.shape[-2:]).astype(np.float32, copy=False)
    low, high, weight = _taps(plane.shape[0], height)
    tall = _blend(plane[low], plane[high], weight[:, None])
    columns = _taps(plane.shape[1], width)
    rows_of = list(bands(height, width))

    def band(rows: slice) -> np.ndarray:
        part = tall[rows]
        return _blend(part[:, columns[0]], part[:, columns[1]], columns[2])

    floor, span = 0.0, 1.0
    if activation == "stretch":  # min and max of the full-size map: a first pass
        extremes = [(float(values.min()), float(values.max())) for values in map(band, rows_of)]
        floor = min(low for low, _ in extremes)
        span = max(max(high for _, high in extremes) - floor, 1e-8)
    mask = np.empty((height, width), dtype=np.uint8)
    for rows in rows_of:
        values = band(rows)
        if activation == "sigmoid":
            with np.errstate(over="ignore"):  # exp of a very negative logit is inf, and its sigmoid 0
                values = 1.0 / (1.0 + np.exp(-values))
        else:
            values = (values - floor) / span
        mask[rows] = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(mask)
