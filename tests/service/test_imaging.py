"""Decoding real-world files, compositing and encoding, with generated images and known masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from live import gradient
from PIL import Image, ImageCms

from bgremover.imaging import composing, encoding
from bgremover.imaging.decoding import ImageError, decode


def _bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    image = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode(_bytes(image, "JPEG", exif=exif, quality=100))
    assert decoded.rgb.size == (48, 64)
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(np.asarray(decoded.rgb, dtype=int) - expected).mean() < 3


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode(_bytes(cmyk, "JPEG", quality=100))
    assert decoded.rgb.mode == "RGB"
    r, g, b = decoded.rgb.getpixel((5, 5))
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    array = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    array[0, 0] = 65535
    decoded = decode(_bytes(Image.fromarray(array), "PNG"))
    assert decoded.rgb.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.rgb.getpixel((4, 4)) == (127, 127, 127)  # 32767 / 257 = 127.5, rounded down


def test_palette_with_transparency_la_and_grayscale() -> None:
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    palette_rgb = decode(_bytes(palette, "PNG", transparency=0)).rgb
    assert palette_rgb.mode == "RGB" and palette_rgb.getpixel((2, 2)) == (200, 10, 20)
    la = decode(_bytes(Image.new("LA", (4, 4), (90, 10)), "PNG")).rgb
    assert la.getpixel((1, 1)) == (90, 90, 90)
    gray = decode(_bytes(Image.new("L", (4, 4), 33), "PNG")).rgb
    assert gray.getpixel((1, 1)) == (33, 33, 33)


def test_input_alpha_never_reaches_the_model_input() -> None:
    rgb = gradient()
    opaque, clear = rgb.copy(), rgb.copy()
    opaque.putalpha(255)
    clear.putalpha(0)
    assert np.array_equal(np.asarray(decode(_bytes(opaque, "PNG")).rgb), np.asarray(rgb))
    assert np.array_equal(np.asarray(decode(_bytes(clear, "PNG")).rgb), np.asarray(rgb))


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF", "BMP", "GIF", "PNG", "JPEG"])
def test_common_formats_decode(fmt: str) -> None:
    image = gradient()
    decoded = decode(_bytes(image, fmt), name=f"x.{fmt.lower()}")
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == image.size


def test_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode(data).rgb.getpixel((3, 3)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_decode_upright_with_their_colour_profile(fmt: str) -> None:
    """HEIC (iPhones) and AVIF files, written here by libheif/libavif, with EXIF orientation and an ICC profile."""
    image = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    decoded = decode(_bytes(image, fmt, exif=exif.tobytes(), icc_profile=profile, quality=95), name=f"photo.{fmt}")
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == (48, 64)
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(np.asarray(decoded.rgb, dtype=int) - expected).mean() < 6
    assert decoded.icc_profile == profile


def test_icc_profile_is_kept_into_the_output() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    decoded = decode(_bytes(gradient(), "PNG", icc_profile=profile))
    assert decoded.icc_profile == profile
    cutout = composing.composite(decoded.rgb, Image.new("L", decoded.rgb.size, 255), None)
    for fmt in ("png", "webp"):
        assert Image.open(io.BytesIO(encoding.encode(cutout, fmt, decoded.icc_profile))).info["icc_profile"] == profile


def test_too_many_pixels_is_refused() -> None:
    with pytest.raises(
        ImageError, match=r"big.png: 4000x3000 is 12 megapixels, more than the limit of 10.*RMBG_MAX_PIXELS"
    ):
        decode(_bytes(Image.new("L", (4000, 3000)), "PNG"), name="big.png", max_pixels=10_000_000)


def test_not_an_image_zero_bytes_and_truncated() -> None:
    with pytest.raises(ImageError, match=r"notes.txt: not an image this app can read. Use PNG, JPEG"):
        decode(b"just some text", name="notes.txt")
    with pytest.raises(ImageError, match=r"empty.png: the file is empty \(0 bytes\)"):
        decode(b"", name="empty.png")
    data = _bytes(gradient(256, 256), "PNG")
    with pytest.raises(ImageError, match=r"cut.png: the image data is truncated or damaged"):
        decode(data[: len(data) // 2], name="cut.png")


def test_numpy_arrays_and_paths(tmp_path) -> None:
    array = np.asarray(gradient())
    assert np.array_equal(np.asarray(decode(array).rgb), array)
    assert np.array_equal(np.asarray(decode(array.astype(np.float32) / 255.0).rgb), array)
    path = tmp_path / "g.png"
    gradient().save(path)
    assert decode(path).name == "g.png"
    with pytest.raises(ImageError, match="missing.png: cannot read the file"):
        decode(tmp_path / "missing.png")


def _known_mask() -> Image.Image:
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:6, 5:9] = 255
    mask[7, 15] = 128
    return Image.fromarray(mask)


def test_colour_background_composites_pixel_for_pixel() -> None:
    foreground = Image.new("RGB", (20, 10), (200, 100, 0))
    out = np.asarray(composing.composite(foreground, _known_mask(), (0, 0, 255)), dtype=int)
    assert out.shape == (10, 20, 3)
    assert tuple(out[3, 6]) == (200, 100, 0)
    assert tuple(out[0, 0]) == (0, 0, 255)
    assert np.abs(out[7, 15] - np.array([100, 50, 127])).max() <= 1


def test_image_background_is_cover_fitted() -> None:
    left_red_right_green = Image.new("RGB", (80, 10), (255, 0, 0))
    left_red_right_green.paste((0, 255, 0), (40, 0, 80, 10))
    foreground = Image.new("RGB", (20, 10), (9, 9, 9))
    out = composing.composite(foreground, _known_mask(), left_red_right_green)
    assert out.size == (20, 10)
    assert out.getpixel((6, 3)) == (9, 9, 9)
    # Covering 20x10 keeps the 80x10 image's scale and crops its centre: red then green.
    assert out.getpixel((0, 0))[0] > 200 and out.getpixel((19, 0))[1] > 200


def test_cutout_alpha_is_the_mask() -> None:
    out = composing.composite(gradient(20, 10), _known_mask(), None)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(_known_mask()))


def test_threshold_and_subject_box() -> None:
    hard = np.asarray(composing.binarize(_known_mask(), 0.6))
    assert set(np.unique(hard)) == {0, 255} and hard[7, 15] == 0
    assert composing.subject_box(_known_mask()) == (5, 2, 16, 8)
    assert composing.subject_box(_known_mask(), margin=3) == (2, 0, 19, 10)
    assert composing.subject_box(Image.new("L", (5, 5))) is None


def test_refined_edges_lose_the_old_background() -> None:
    """A red subject on blue: at a half-transparent edge the blended pixel is purple;
    the estimated foreground must be much closer to red."""
    size = 64
    alpha = np.zeros((size, size), dtype=np.float32)
    alpha[:, : size // 2] = 1.0
    alpha[:, size // 2] = 0.5
    red, blue = np.array([230, 20, 20], np.float32), np.array([20, 20, 230], np.float32)
    blended = alpha[..., None] * red + (1 - alpha[..., None]) * blue
    image = Image.fromarray(blended.round().astype(np.uint8))
    mask = Image.fromarray((alpha * 255).round().astype(np.uint8))
    refined = np.asarray(composing.refined_cutout(image, mask), dtype=np.float32)[..., :3]
    edge = (slice(None), size // 2)
    before = np.abs(blended[edge] - red).mean()
    after = np.abs(refined[edge] - red).mean()
    assert after < before / 4


def test_encode_formats() -> None:
    cutout = composing.composite(gradient(20, 10), _known_mask(), None)
    png = Image.open(io.BytesIO(encoding.encode(cutout, "png")))
    webp = Image.open(io.BytesIO(encoding.encode(cutout, "webp")))
    assert png.mode == "RGBA" and np.array_equal(np.asarray(png), np.asarray(cutout))
    assert webp.mode == "RGBA" and np.array_equal(np.asarray(webp)[..., 3], np.asarray(cutout)[..., 3])
    with pytest.raises(ImageError, match="JPEG has no transparency"):
        encoding.encode(cutout, "jpeg")
    flat = composing.composite(gradient(20, 10), _known_mask(), (255, 255, 255))
    assert Image.open(io.BytesIO(encoding.encode(flat, "jpg"))).format == "JPEG"


def test_parse_color_accepts_what_users_and_pickers_send() -> None:
    assert composing.parse_color("#00ff00") == composing.parse_color("0f0") == (0, 255, 0)
    assert composing.parse_color("rgba(10, 20, 30, 0.5)") == composing.parse_color("10,20,30") == (10, 20, 30)
    assert composing.parse_color("Red") == (255, 0, 0) and composing.parse_color("white") == (255, 255, 255)
    assert composing.parse_color("#fff") == (255, 255, 255) and composing.parse_color("rgb(0, 128, 0)") == (0, 128, 0)
    assert composing.parse_color("rgba(12.5, 20.4, 30, 1)") == (12, 20, 30)  # what Gradio's picker sends
    for bad in ("#12", "1,2", "300,0,0", "blurple", ""):
        with pytest.raises(ValueError, match=f"{bad!r} is not a colour: use a name such as white"):
            composing.parse_color(bad)
