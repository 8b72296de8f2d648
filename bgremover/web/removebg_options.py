"""remove.bg's request fields, read into `RemoveBgOptions`, and what they make of an image and its mask.

The service cuts the subject out (its mask and the upright photo); everything remove.bg
layers on top (output size, region of interest, crop with CSS-like margins, subject scale
and position, background colour or picture, alpha channel only, zip) is done here, on
the photo and mask at their final size. docs/web.md has the table of every field.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass

from PIL import Image

from ..imaging import composing, encoding

# Output megapixels by remove.bg size name (None: the whole image, up to the server's RMBG_MAX_PIXELS).
SIZES: dict[str, int | None] = {
    "preview": 250_000,
    "small": 250_000,
    "regular": 250_000,
    "medium": 1_500_000,
    "hd": 4_000_000,
    "full": None,
    "4k": None,
    "auto": None,
    "50mp": None,
}
FORMATS = ("auto", "png", "jpg", "webp", "zip")
TYPES = ("auto", "person", "product", "animal", "car", "transportation", "graphic", "other")
TYPE_LEVELS = ("none", "1", "2", "latest")
MAX_MARGIN_PX, MAX_MARGIN_PERCENT = 500, 50
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)(px|%)?$")
_HEX = re.compile(r"^#?([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


class NoForeground(ValueError):
    """The mask holds no subject (remove.bg's `unknown_foreground`)."""


@dataclass(frozen=True)
class Length:
    """A length in pixels, or a percentage of some reference length."""

    value: float
    percent: bool

    def pixels(self, reference: float) -> int:
        return round(self.value * reference / 100) if self.percent else round(self.value)


@dataclass
class RemoveBgOptions:
    max_pixels: int | None = 250_000
    fmt: str = "auto"
    channels: str = "rgba"
    bg_color: tuple[int, int, int, int] | None = None
    crop: bool = False
    crop_margin: tuple[Length, Length, Length, Length] = (Length(0, False),) * 4  # top, right, bottom, left
    scale: float | None = None  # None: original
    position: tuple[float, float] | None = None  # None: original; else 0-1 of the free space
    roi: tuple[Length, Length, Length, Length] | None = None  # x1, y1, x2, y2
    semitransparency: bool = True
    type: str = "auto"


def _choice(fields: dict[str, str], name: str, choices: tuple[str, ...] | dict, default: str) -> str:
    value = fields.get(name, "").strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use {', '.join(choices)}.")
    return value


def _flag(fields: dict[str, str], name: str, default: bool) -> bool:
    value = fields.get(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text not in _TRUE + _FALSE:
        raise ValueError(f"{name}={value!r}: use true or false.")
    return text in _TRUE


def _length(text: str, name: str) -> Length:
    match = _LENGTH.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{name}={text!r}: use pixels (30 or 30px) or a percentage (10%).")
    return Length(float(match.group(1)), match.group(2) == "%")


def parse_margin(text: str) -> tuple[Length, Length, Length, Length]:
    """crop_margin as CSS writes margins: one value (all sides), two (top/bottom, left/right) or four
    (top, right, bottom, left); at most 500 px or 50% each, as remove.bg allows."""
    parts = [_length(part, "crop_margin") for part in text.split()] or [Length(0, False)]
    if len(parts) not in (1, 2, 4):
        raise ValueError(f"crop_margin={text!r}: give 1, 2 or 4 values (top right bottom left).")
    for part in parts:
        if part.value > (MAX_MARGIN_PERCENT if part.percent else MAX_MARGIN_PX):
            raise ValueError(f"crop_margin={text!r}: at most {MAX_MARGIN_PX}px or {MAX_MARGIN_PERCENT}% per side.")
    top, right, bottom, left = parts * (4 // len(parts))
    return (top, right, bottom, left) if len(parts) != 2 else (parts[0], parts[1], parts[0], parts[1])


def parse_roi(text: str) -> tuple[Length, Length, Length, Length] | None:
    """roi: 'x1 y1 x2 y2', each in pixels or percent of the image; the subject is looked for inside it."""
    parts = text.split()
    if not parts:
        return None
    if len(parts) != 4:
        raise ValueError(f"roi={text!r}: give four values, x1 y1 x2 y2 (e.g. '0% 0% 100% 100%').")
    return tuple(_length(part, "roi") for part in parts)  # type: ignore[return-value]


def parse_scale(text: str) -> float | None:
    value = text.strip().lower()
    if value in ("", "original"):
        return None
    length = _length(value, "scale")
    if not length.percent or not 10 <= length.value <= 100:
        raise ValueError(f"scale={text!r}: use original or a percentage from 10% to 100%.")
    return length.value / 100


def parse_position(text: str, scaled: bool) -> tuple[float, float] | None:
    """position: original, center, 'X%' or 'X% Y%'; a scaled subject is centred unless told otherwise."""
    value = text.strip().lower() or ("center" if scaled else "original")
    if value == "original":
        return None
    if value == "center":
        return 0.5, 0.5
    parts = [_length(part, "position") for part in value.split()]
    if len(parts) not in (1, 2) or not all(p.percent and p.value <= 100 for p in parts):
        raise ValueError(f"position={text!r}: use original, center, or percentages such as '50%' or '0% 100%'.")
    return parts[0].value / 100, parts[-1].value / 100


def parse_bg_color(text: str) -> tuple[int, int, int, int] | None:
    """bg_color as remove.bg takes it: hex without '#' (81d4fa, fff, 81d4fa77 with alpha) or a colour name."""
    value = text.strip().lower()
    if not value:
        return None
    match = _HEX.match(value)
    if match:
        digits = match.group(1)
        digits = "".join(c * 2 for c in digits) if len(digits) <= 4 else digits
        channels = tuple(int(digits[i : i + 2], 16) for i in range(0, len(digits), 2))
        return (*channels, 255)[:4]  # type: ignore[return-value]
    try:
        return (*composing.parse_color(value), 255)
    except ValueError as error:
        raise ValueError(f"bg_color={text!r}: use hex (81d4fa, fff, 81d4fa77) or a colour name (green).") from error


def parse_options(fields: dict[str, str]) -> RemoveBgOptions:
    """Every remove.bg field checked before any work; ValueError names the field and the values it takes."""
    size = _choice(fields, "size", SIZES, "preview")
    _choice(fields, "type_level", TYPE_LEVELS, "latest")
    if _flag(fields, "add_shadow", False):
        raise ValueError("add_shadow=true is not supported by this server: leave it out or send false.")
    scale = parse_scale(fields.get("scale", ""))
    return RemoveBgOptions(
        max_pixels=SIZES[size],
        fmt=_choice(fields, "format", FORMATS, "auto"),
        channels=_choice(fields, "channels", ("rgba", "alpha"), "rgba"),
        bg_color=parse_bg_color(fields.get("bg_color", "")),
        crop=_flag(fields, "crop", False),
        crop_margin=parse_margin(fields.get("crop_margin", "")),
        scale=scale,
        position=parse_position(fields.get("position", ""), scaled=scale is not None),
        roi=parse_roi(fields.get("roi", "")),
        semitransparency=_flag(fields, "semitransparency", True),
        type=_choice(fields, "type", TYPES, "auto"),
    )


@dataclass
class Shaped:
    """The answer's file, its media type and size, and the subject's box in it (top, left, width, height)."""

    data: bytes
    media_type: str
    size: tuple[int, int]
    foreground: tuple[int, int, int, int]


def _in_roi(mask: Image.Image, roi: tuple[Length, ...]) -> Image.Image:
    width, height = mask.size
    x1, y1, x2, y2 = (part.pixels(width if i % 2 == 0 else height) for i, part in enumerate(roi))
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ValueError("roi: x1 < x2 and y1 < y2 are needed, inside the image.")
    kept = Image.new("L", mask.size, 0)
    kept.paste(mask.crop((x1, y1, x2, y2)), (x1, y1))
    return kept


def _cropped(cutout: Image.Image, box: tuple[int, int, int, int], margin: tuple[Length, ...]) -> Image.Image:
    """The cut-out cropped to the subject and its margins; margins past the edge are transparent."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    m_top, m_right, m_bottom, m_left = (m.pixels(height if i % 2 == 0 else width) for i, m in enumerate(margin))
    return cutout.crop((left - m_left, top - m_top, right + m_right, bottom + m_bottom))


def _placed(cutout: Image.Image, box: tuple[int, int, int, int], options: RemoveBgOptions) -> Image.Image:
    """The subject scaled to `scale` of the canvas (fit) and put at `position` of the free space."""
    left, top, right, bottom = box
    subject = cutout.crop(box)
    if options.scale is not None:
        factor = options.scale * min(cutout.width / subject.width, cutout.height / subject.height)
        size = (max(1, round(subject.width * factor)), max(1, round(subject.height * factor)))
        subject = subject.resize(size, Image.Resampling.LANCZOS)
    if options.position is None:  # original: the subject keeps its centre
        x = round((left + right) / 2 - subject.width / 2)
        y = round((top + bottom) / 2 - subject.height / 2)
    else:
        x = round((cutout.width - subject.width) * options.position[0])
        y = round((cutout.height - subject.height) * options.position[1])
    canvas = Image.new("RGBA", cutout.size, (0, 0, 0, 0))
    canvas.paste(subject, (x, y))  # a plain copy onto the transparent canvas; parts past the edge are cut
    return canvas


def shape(
    photo: Image.Image,
    mask: Image.Image,
    options: RemoveBgOptions,
    background: Image.Image | None = None,
    icc_profile: bytes | None = None,
) -> Shaped:
    """The remove.bg answer for an upright RGB photo and its mask (same size)."""
    if options.roi is not None:
        mask = _in_roi(mask, options.roi)
    if not options.semitransparency:
        mask = composing.binarize(mask, 0.5)
    if composing.subject_box(mask) is None:
        raise NoForeground("no foreground found in the image: nothing to cut out (remove.bg's unknown_foreground).")
    if options.max_pixels and photo.width * photo.height > options.max_pixels:
        factor = math.sqrt(options.max_pixels / (photo.width * photo.height))
        size = (max(1, int(photo.width * factor)), max(1, int(photo.height * factor)))
        photo, mask = photo.resize(size, Image.Resampling.LANCZOS), mask.resize(size, Image.Resampling.BILINEAR)
    cutout = composing.composite(photo, mask, None)
    box = composing.subject_box(cutout.getchannel("A"), level=1) or (0, 0, *cutout.size)
    if options.crop:
        cutout = _cropped(cutout, box, options.crop_margin)
    if options.scale is not None or options.position is not None:
        box = composing.subject_box(cutout.getchannel("A"), level=1) or (0, 0, *cutout.size)
        cutout = _placed(cutout, box, options)
    alpha = cutout.getchannel("A")
    left, top, right, bottom = alpha.getbbox() or (0, 0, 0, 0)
    foreground = (top, left, right - left, bottom - top)
    return Shaped(*_encoded(cutout, alpha, options, background, icc_profile), cutout.size, foreground)


def _backed(cutout: Image.Image, options: RemoveBgOptions, background: Image.Image | None) -> Image.Image:
    if background is not None:
        backdrop = composing.cover_fit(background, cutout.size).convert("RGBA")
    elif options.bg_color is not None:
        backdrop = Image.new("RGBA", cutout.size, options.bg_color)
    else:
        return cutout
    backdrop.alpha_composite(cutout)
    return backdrop


def _encoded(
    cutout: Image.Image,
    alpha: Image.Image,
    options: RemoveBgOptions,
    background: Image.Image | None,
    icc_profile: bytes | None,
) -> tuple[bytes, str]:
    image = alpha if options.channels == "alpha" else _backed(cutout, options, background)
    if options.fmt == "zip":
        color = _backed(cutout, options, background).convert("RGB")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("color.jpg", encoding.encode(color, "jpeg", icc_profile))
            archive.writestr("alpha.png", encoding.encode(alpha, "png"))
        return buffer.getvalue(), "application/zip"
    opaque = image.mode != "RGBA" or image.getchannel("A").getextrema()[0] == 255
    fmt = ("png" if not opaque else "jpeg") if options.fmt == "auto" else options.fmt.replace("jpg", "jpeg")
    if image.mode == "RGBA" and (opaque or fmt == "jpeg"):  # JPEG has no alpha: white behind, as remove.bg
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image)
        image = flat.convert("RGB")
    return encoding.encode(image, fmt, icc_profile if image.mode != "L" else None), f"image/{fmt}"
