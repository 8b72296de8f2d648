"""Turning an image and its mask into the output: thresholds, crops, edge refinement, backgrounds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB' (what HTML colour pickers send), 'rgb(r, g, b)' or 'r,g,b'."""
    value = (text or "").strip().lower()
    try:
        if value.startswith("rgb"):  # rgb(...) or rgba(...): the alpha part is ignored
            parts = value[value.index("(") + 1 : value.rindex(")")].split(",")[:3]
            rgb = tuple(round(float(part)) for part in parts)
        elif "," in value:
            rgb = tuple(int(part) for part in value.split(","))
        else:
            value = value.lstrip("#")
            if len(value) == 3:
                value = "".join(c * 2 for c in value)
            if len(value) != 6:
                raise ValueError
            rgb = tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} is not a colour: use #RRGGBB, e.g. #00ff00.") from None
    return rgb


def binarize(mask: Image.Image, threshold: float) -> Image.Image:
    """A hard mask: 255 where the soft mask is at least `threshold` (0..1), 0 elsewhere."""
    cut = int(round(threshold * 255))
    return mask.point(lambda v: 255 if v >= cut else 0)


def subject_box(mask: Image.Image, margin: int = 0, level: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of mask values >= level, grown by `margin` pixels."""
    rows, cols = np.nonzero(np.asarray(mask) >= level)
    if rows.size == 0:
        return None
    width, height = mask.size
    return (
        max(int(cols.min()) - margin, 0),
        max(int(rows.min()) - margin, 0),
        min(int(cols.max()) + 1 + margin, width),
        min(int(rows.max()) + 1 + margin, height),
    )


def _box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window clipped at the borders, in O(pixels) via integral images."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 0, 1, 0))
    integral = padded.cumsum(-1).cumsum(-2)
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    top, bottom = (ys - radius).clamp(min=0), (ys + radius + 1).clamp(max=h)
    left, right = (xs - radius).clamp(min=0), (xs + radius + 1).clamp(max=w)
    rows_b, rows_t = integral[..., bottom, :], integral[..., top, :]
    total = rows_b[..., right] - rows_b[..., left] - rows_t[..., right] + rows_t[..., left]
    area = (bottom - top)[:, None] * (right - left)[None, :]
    return total / area


def _blur_fusion_step(image, foreground, background, alpha, radius):
    blurred_alpha = _box_blur(alpha, radius)
    blurred_fg = _box_blur(foreground * alpha, radius) / (blurred_alpha + 1e-5)
    blurred_bg = _box_blur(background * (1 - alpha), radius) / (1 - blurred_alpha + 1e-5)
    corrected = blurred_fg + alpha * (image - alpha * blurred_fg - (1 - alpha) * blurred_bg)
    return corrected.clamp(0, 1), blurred_bg


def estimate_foreground(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Foreground colours without the old background bleeding through semi-transparent edges.

    Blur-fusion estimation (Forte & Pitie, "Approximate fast foreground colour
    estimation", 2021): a coarse pass with a large window, then a fine one.
    """
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    alpha = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]
    foreground, background = _blur_fusion_step(rgb, rgb, rgb, alpha, 90)
    foreground, _ = _blur_fusion_step(rgb, foreground, background, alpha, 6)
    array = (foreground.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array)


def cover_fit(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scales the background to cover `size` and crops the centre, keeping its aspect ratio."""
    return ImageOps.fit(background.convert("RGB"), size, method=Image.Resampling.LANCZOS)


def composite(foreground: Image.Image, mask: Image.Image, background: Image.Image | tuple | None) -> Image.Image:
    """RGBA cut-out when `background` is None, else RGB over a colour or (cover-fitted) image."""
    if background is None:
        cutout = foreground.convert("RGB")
        cutout.putalpha(mask)
        return cutout
    if isinstance(background, Image.Image):
        backdrop = cover_fit(background, foreground.size)
    else:
        backdrop = Image.new("RGB", foreground.size, tuple(background))
    return Image.composite(foreground.convert("RGB"), backdrop, mask)
