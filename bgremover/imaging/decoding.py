"""Decoding real-world image files into upright RGB, with the metadata the output keeps."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import settings

# iPhones save HEIC; pillow-heif (libheif) teaches Pillow to read it. Pillow reads AVIF itself.
pillow_heif.register_heif_opener()

# Pillow's own decompression-bomb guard would fire before ours with a less useful
# message and a fixed limit; `decode` enforces the configurable limit instead.
Image.MAX_IMAGE_PIXELS = None

# What `rmbg remove` picks up from a folder, and what `rmbg eval` pairs by file stem.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif", ".avif"}
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Rows converted at a time from 16 to 8 bits: small temporaries, few numpy calls.
_BAND_ROWS = 256
# EPS is PostScript, a program: Pillow renders it by running Ghostscript where that is installed,
# which no upload may trigger. Every other format Pillow knows is tried.
NEVER_OPENED = ("EPS",)


def _formats() -> list[str]:
    Image.init()
    return [name for name in Image.ID if name not in NEVER_OPENED]


class ImageError(ValueError):
    """An input that is not a usable image; the message names the problem and the fix."""


@dataclass
class Decoded:
    """An input image as RGB, upright, with what must survive into the output."""

    rgb: Image.Image
    icc_profile: bytes | None = None
    name: str = "image"


def to_gray8(image: Image.Image) -> Image.Image:
    """8-bit grayscale; 16-bit images are scaled (Pillow's own conversion would clip them at 255),
    rounded to the nearest level.

    Converted in bands of rows with integers, so that a 100 MP input needs a few MB of
    temporaries beside its 8-bit result instead of 8 bytes per pixel of floats.
    """
    if image.mode not in SIXTEEN_BIT_MODES:
        return image.convert("L")
    values = np.asarray(image)
    divisor = 257 if values.max(initial=0) > 255 else 1
    gray = np.empty(values.shape, dtype=np.uint8)
    for top in range(0, values.shape[0], _BAND_ROWS):
        band = values[top : top + _BAND_ROWS].astype(np.int64)
        gray[top : top + _BAND_ROWS] = np.clip((band + divisor // 2) // divisor, 0, 255)
    return Image.fromarray(gray)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB colours only: any alpha the input has is dropped, never fed to the model."""
    if image.mode in SIXTEEN_BIT_MODES:
        return to_gray8(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode(
    data: bytes | str | Path | Image.Image | np.ndarray,
    name: str | None = None,
    max_pixels: int | None = None,
) -> Decoded:
    """Opens anything Pillow reads (first frame of animations), applies EXIF orientation.

    `max_pixels` defaults to RMBG_MAX_PIXELS; larger images are refused before their pixels are decoded.
    """
    max_pixels = max_pixels or settings.max_pixels()
    if name is None:
        name = Path(data).name if isinstance(data, (str, Path)) else "image"
    if isinstance(data, np.ndarray):
        return Decoded(rgb=_to_rgb(_array_to_image(data)), name=name)
    if isinstance(data, Image.Image):
        image = data
    else:
        if isinstance(data, (str, Path)):
            try:
                data = Path(data).read_bytes()
            except OSError as error:
                raise ImageError(f"{name}: cannot read the file ({error.strerror or error}).") from error
        if not data:
            raise ImageError(f"{name}: the file is empty (0 bytes). Check that it was copied or uploaded fully.")
        try:
            image = Image.open(io.BytesIO(data), formats=_formats())
        except UnidentifiedImageError as error:
            raise ImageError(
                f"{name}: not an image this app can read. Use PNG, JPEG, WebP, HEIC, AVIF, TIFF, BMP or GIF; "
                "a file that is one of these already has a damaged header: re-export it."
            ) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise _damaged(name, error) from error
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageError(
            f"{name}: {image.width}x{image.height} is {pixels / 1e6:.0f} megapixels, more than the limit of "
            f"{max_pixels / 1e6:.0f}. Downscale it first, or raise the limit (RMBG_MAX_PIXELS, --max-pixels)."
        )
    icc = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA", "P") else None
    rgb = _loaded_rgb(image, name, opened_here=not isinstance(data, Image.Image))
    return Decoded(rgb=rgb, icc_profile=icc or None, name=name)


def _loaded_rgb(image: Image.Image, name: str, opened_here: bool) -> Image.Image:
    """The pixels decoded, upright, as RGB; a damaged file's half-decoded pixels are freed at once.

    A file whose header claims 100 MP but whose data stops early has its whole image allocated
    before the decoder finds out. Pillow's exception keeps it alive through its traceback (the
    frames of `load` hold the image and its decoder), and so would any `raise ... from` chain,
    for as long as a server or a logger keeps the error. So the error is raised outside the
    `except` block, with no reference to Pillow's, after closing the image opened here.
    """
    try:
        image.seek(0)
        image.load()
        return _to_rgb(_upright(image, in_place=opened_here))
    except (OSError, SyntaxError, ValueError) as error:
        failure = _damaged(name, error)
    if opened_here:
        image.close()
    raise failure


def _upright(image: Image.Image, in_place: bool) -> Image.Image:
    """EXIF orientation applied; in place for images opened here (one copy of a large image in
    memory instead of two), on a copy for images the caller handed in."""
    if not in_place:
        return ImageOps.exif_transpose(image)
    ImageOps.exif_transpose(image, in_place=True)
    return image


def pixel_count(data: bytes | str | Path) -> int:
    """Width x height from the file's header alone (no pixels decoded); 0 when it is not readable,
    which `decode` then reports properly."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.width * image.height
    except (OSError, SyntaxError, ValueError):
        return 0


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
