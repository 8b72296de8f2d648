"""Encoding results into files, and writing them so that no half-written file is ever left."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from .decoding import ImageError

OUTPUT_FORMATS = ("png", "webp", "jpeg")


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
