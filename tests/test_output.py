"""Full-resolution output: every encoder and setting keeps the pixels; edge refinement stays within
its stated tolerance of the whole-image blur-fusion it replaces.

No timings here: they are measured by `rmbg bench --e2e` and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from bgremover.imaging import encoding, png
from bgremover.service.options import build_request


def photo_like(width: int = 97, height: int = 61, seed: int = 3) -> Image.Image:
    """Smooth gradients plus noise: row-to-row differences like a photo's, odd sizes to catch stride slips."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 / width, y * 200 / height, (x + y) * 100 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape) + 20, 0, 255).astype(np.uint8))


def soft_mask(width: int = 97, height: int = 61) -> Image.Image:
    """A disc with a soft edge and alpha 0 around it, as cut-outs have."""
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot(x - width / 2, y - height / 2)
    return Image.fromarray((np.clip((height / 3 - distance) / 6 + 0.5, 0, 1) * 255).round().astype(np.uint8))


def images() -> dict[str, Image.Image]:
    rgb = photo_like()
    rgba = rgb.copy()
    rgba.putalpha(soft_mask())
    return {"RGBA": rgba, "RGB": rgb, "L": soft_mask(), "LA": rgba.convert("LA")}


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA"])
@pytest.mark.parametrize("fmt", ["png", "webp"])
@pytest.mark.parametrize("compression", encoding.COMPRESSIONS)
def test_every_encoder_keeps_the_pixels_and_the_profile(mode: str, fmt: str, compression: str) -> None:
    image = images()[mode]
    if fmt == "webp" and mode in ("L", "LA"):  # WebP stores RGB(A): compare what Pillow hands it
        image = image.convert("RGBA" if mode == "LA" else "RGB")
    profile = srgb_profile()
    decoded = Image.open(io.BytesIO(encoding.encode(image, fmt, profile, compression=compression)))
    assert decoded.format == fmt.upper() and decoded.mode == image.mode
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert decoded.info["icc_profile"] == profile


@pytest.mark.parametrize("missing", [("isal_zlib",), ("deflate",), ("isal_zlib", "deflate")])
@pytest.mark.parametrize("compression", encoding.COMPRESSIONS)
def test_png_fallbacks_give_the_same_pixels(monkeypatch, missing: tuple[str, ...], compression: str) -> None:
    """Without ISA-L or libdeflate the standard library's zlib compresses: slower or larger, never different."""
    for name in missing:
        monkeypatch.setattr(png, name, None)
    unavailable = {{"isal_zlib": "isal", "deflate": "deflate"}[name] for name in missing}
    assert png.library(compression).split()[0] not in unavailable
    for mode in ("RGBA", "RGB", "L"):
        image = images()[mode]
        decoded = Image.open(io.BytesIO(encoding.encode(image, "png", compression=compression)))
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_png_in_many_idat_chunks_and_without_a_profile(monkeypatch) -> None:
    monkeypatch.setattr(png, "_IDAT_BYTES", 100)
    image = images()["RGBA"]
    data = encoding.encode(image, "png")
    assert data.count(b"IDAT") > 10 and b"iCCP" not in data
    decoded = Image.open(io.BytesIO(data))
    assert "icc_profile" not in decoded.info and np.array_equal(np.asarray(decoded), np.asarray(image))


def test_small_is_smaller_than_fast() -> None:
    image = images()["RGBA"]
    assert len(encoding.encode(image, "png", compression="small")) < len(encoding.encode(image, "png"))


def test_unknown_compression_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown compression 'tiny': use fast .* or small"):
        encoding.encode(images()["RGB"], "png", compression="tiny")
    with pytest.raises(ValueError, match="unknown compression 'Max'"):
        build_request(compression="Max")
    assert build_request().compression == "fast"
    assert build_request(compression=" Small ").compression == "small"
    assert build_request(compression="").compression == "fast"
