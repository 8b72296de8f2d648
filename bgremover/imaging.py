"""Decoding real-world image files, compositing cut-outs and encoding results.

Everything here works at the image's full resolution and knows nothing of models.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own decompression-bomb guard would fire before ours with a less useful
# message and a fixed limit; `decode` enforces the configurable limit instead.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = int(os.environ.get("RMBG_MAX_PIXELS", 100_000_000))
OUTPUT_FORMATS = ("png", "webp", "jpeg")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageError(ValueError):
    """An input that is not a usable image; the message names the problem and the fix."""


@dataclass
class Decoded:
    """An input image as RGB, upright, with what must survive into the output."""

    rgb: Image.Image
    icc_profile: bytes | None = None
    name: str = "image"


def to_gray8(image: Image.Image) -> Image.Image:
    """8-bit grayscale; 16-bit images are scaled (Pillow's own conversion would clip them at 255)."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if values.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(values / scale + 0.5, 0, 255).astype(np.uint8))
    return image.convert("L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB colours only: any alpha the input has is dropped, never fed to the model."""
    if image.mode in SIXTEEN_BIT_MODES:
        return to_gray8(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode(
    data: bytes | str | Path | Image.Image | np.ndarray,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Decoded:
    """Opens anything Pillow reads (first frame of animations), applies EXIF orientation."""
    if isinstance(data, np.ndarray):
        return Decoded(rgb=_to_rgb(_array_to_image(data)), name=name)
    if isinstance(data, Image.Image):
        image = data
    else:
        if isinstance(data, (str, Path)):
            name = Path(data).name
            try:
                data = Path(data).read_bytes()
            except OSError as error:
                raise ImageError(f"{name}: cannot read the file ({error.strerror or error}).") from error
        if not data:
            raise ImageError(f"{name}: the file is empty (0 bytes). Check that it was copied or uploaded fully.")
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as error:
            raise ImageError(
                f"{name}: not an image this app can read. Use PNG, JPEG, WebP, TIFF, BMP or GIF."
            ) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise _damaged(name, error) from error
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageError(
            f"{name}: {image.width}x{image.height} is {pixels / 1e6:.0f} megapixels, more than the limit of "
            f"{max_pixels / 1e6:.0f}. Downscale it first, or raise the limit (RMBG_MAX_PIXELS, --max-pixels)."
        )
    try:
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
        rgb = _to_rgb(upright)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(
            f"{name}: the image data is truncated or damaged ({error}). Re-export or re-download it."
        ) from error
    icc = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA", "P") else None
    return Decoded(rgb=rgb, icc_profile=icc or None, name=name)


def _damaged(name: str, error: Exception) -> ImageError:
    return ImageError(f"{name}: the image data is truncated or damaged ({error}). Re-export or re-download it.")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise ImageError(f"numpy arrays must be uint8 (0-255) or float (0-1), not {array.dtype}.")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        return Image.fromarray(array.squeeze(2) if array.ndim == 3 and array.shape[2] == 1 else array)
    raise ImageError(f"numpy arrays must be HxW, HxWx3 or HxWx4, not {array.shape}.")


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


def output_format(fmt: str, transparent: bool) -> str:
    """The canonical format name ('jpg' is 'jpeg'), checked against whether the output has alpha.

    Callers check it before any inference, so a wrong choice costs nothing.
    """
    fmt = fmt.strip().lower().replace("jpg", "jpeg")
    if fmt not in OUTPUT_FORMATS:
        raise ImageError(f"unknown output format {fmt!r}: use png, webp or jpeg.")
    if fmt == "jpeg" and transparent:
        raise ImageError(
            "JPEG has no transparency: choose a background colour or image (or the mask), or use png/webp."
        )
    return fmt


def encode(image: Image.Image, fmt: str = "png", icc_profile: bytes | None = None, quality: int = 95) -> bytes:
    """PNG and WebP are lossless and keep alpha; JPEG needs an opaque image."""
    fmt = output_format(fmt, transparent=image.mode == "RGBA")
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "webp":
        options.update(lossless=True, exact=True)
    elif fmt == "jpeg":
        options.update(quality=quality)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def write_atomic(target: Path, data: bytes) -> None:
    """A run stopped mid-write leaves no half file that a resumed run would take as done."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
