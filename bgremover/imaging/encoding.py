"""Encoding results into files, and writing them so that no half-written file is ever left."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..choices import COMPRESSIONS, OUTPUT_FORMATS
from . import png
from .decoding import ImageError

# Pillow's lossless WebP effort (method 0-6, quality 0-100); "small" keeps Pillow's defaults.
_WEBP_EFFORT = {"fast": {"method": 0, "quality": 0}, "small": {"method": 4, "quality": 80}}
# zlib levels for the PNG modes that `png.write` leaves to Pillow.
_PILLOW_PNG_LEVEL = {"fast": 1, "small": 9}


def file_suffix(fmt: str) -> str:
    """The file-name suffix of a canonical format: '.jpg' for JPEG (as cameras write it), '.png', '.webp'."""
    return ".jpg" if fmt == "jpeg" else f".{fmt}"


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


def compression_name(value: object) -> str:
    """'fast' or 'small', checked; empty means 'fast'. Callers check it before any inference."""
    name = str(value or "fast").strip().lower()
    if name not in COMPRESSIONS:
        raise ValueError(
            f"unknown compression {value!r}: use fast (quick to write) or small (smaller PNG/WebP files, slower)."
        )
    return name


def encode(
    image: Image.Image,
    fmt: str = "png",
    icc_profile: bytes | None = None,
    quality: int = 95,
    compression: str = "fast",
) -> bytes:
    """PNG and WebP are lossless and keep alpha; JPEG needs an opaque image.

    `compression` trades file size for time in the lossless formats; the pixels are the
    same either way. PNG is written by `png.write` where it can, else by Pillow.
    """
    fmt = output_format(fmt, transparent=image.mode == "RGBA")
    compression = compression_name(compression)
    if fmt == "png" and png.can_write(image):
        return png.write(image, icc_profile, compression)
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "png":
        options.update(compress_level=_PILLOW_PNG_LEVEL[compression])
    elif fmt == "webp":
        options.update(lossless=True, exact=True, **_WEBP_EFFORT[compression])
    elif fmt == "jpeg":
        options.update(quality=quality)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def write_atomic(target: Path, data: bytes) -> None:
    """A run stopped mid-write leaves no half file that a resumed run would take as done.

    The data goes to `NAME.partial` beside the target and is renamed over it when complete;
    if writing fails (disk full, no permission) the partial file is removed before the error
    is raised.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
