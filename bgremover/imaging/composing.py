"""Turning an image and its mask into the output: thresholds, crops, edge refinement, backgrounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image, ImageColor, ImageOps

if TYPE_CHECKING:
    import torch


def refined_cutout(image: Image.Image, mask: Image.Image, device: str | torch.device = "cpu") -> Image.Image:
    """`refining.refined_cutout`, imported when edges are refined: it needs PyTorch, which
    processes that only composite and encode (the CPU workers of a Ray job) need not load."""
    from .refining import refined_cutout as refined

    return refined(image, mask, device)


def parse_color(text: str) -> tuple[int, int, int]:
    """A colour as users and pickers write it: a CSS name ('red'), '#RRGGBB', '#RGB', 'rgb(r, g, b)',
    'hsl(...)' or 'r,g,b'; any alpha part is ignored."""
    value = (text or "").strip().lower()
    try:
        if "," in value and "(" not in value:
            rgb = tuple(int(part) for part in value.split(","))
        elif value.startswith("rgb"):  # rgb(...) or rgba(...), also with fractional parts as browsers send
            parts = value[value.index("(") + 1 : value.rindex(")")].split(",")[:3]
            rgb = tuple(round(float(part)) for part in parts)
        else:
            rgb = ImageColor.getrgb(value if value[:1].isalpha() else "#" + value.lstrip("#"))[:3]
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{text!r} is not a colour: use a name such as white or red, #RRGGBB (e.g. #00ff00), #RGB or rgb(r, g, b)."
        ) from None
    return rgb


def binarize(mask: Image.Image, threshold: float) -> Image.Image:
    """A hard mask: 255 where the soft mask is at least `threshold` (0..1), 0 elsewhere."""
    cut = int(round(threshold * 255))
    return mask.point(lambda v: 255 if v >= cut else 0)


def subject_box(mask: Image.Image, margin: int = 0, level: int = 8) -> tuple[int, int, int, int] | None:
    """Bounding box (left, top, right, bottom) of mask values >= level, grown by `margin` pixels.

    Found by Pillow on a thresholded copy (1 byte per pixel): the coordinates of every subject
    pixel would take 16 bytes per pixel of a 100 MP image.
    """
    box = mask.point([0] * level + [255] * (256 - level)).getbbox()
    if box is None:
        return None
    left, top, right, bottom = box
    width, height = mask.size
    return max(left - margin, 0), max(top - margin, 0), min(right + margin, width), min(bottom + margin, height)


def cover_fit(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scales the background to cover `size` and crops the centre, keeping its aspect ratio."""
    return ImageOps.fit(background.convert("RGB"), size, method=Image.Resampling.LANCZOS)


def clear_hidden(cutout: Image.Image, alpha: Image.Image) -> None:
    """Zeroes, in place, the colour of an RGBA cut-out's fully transparent pixels (`alpha` is its
    alpha channel, the mask it was made with): that colour is the removed background, there for
    anyone who drops the alpha channel. One byte per pixel extra, the mask of those pixels."""
    cutout.paste((0, 0, 0, 0), mask=alpha.point(_HIDDEN_LEVELS))


_HIDDEN_LEVELS = [255] + [0] * 255  # alpha 0 -> paste everywhere there, nowhere else


def composite(foreground: Image.Image, mask: Image.Image, background: Image.Image | tuple | None) -> Image.Image:
    """RGBA cut-out when `background` is None, else RGB over a colour or (cover-fitted) image.

    `foreground` is RGB, or an RGBA cut-out that already has `mask` as its alpha (`refined_cutout`).
    Each output is made with one image-sized allocation (the cut-out converted straight to RGBA,
    the foreground pasted onto the backdrop in place): at 100 MP every extra copy is 400 MB.
    """
    if background is None:
        if foreground.mode == "RGBA":
            return foreground
        cutout = foreground.convert("RGBA")
        cutout.putalpha(mask)
        return cutout
    if isinstance(background, Image.Image):
        backdrop = cover_fit(background, foreground.size)
    else:
        backdrop = Image.new("RGB", foreground.size, tuple(background))
    backdrop.paste(foreground if foreground.mode == "RGB" else foreground.convert("RGB"), mask=mask)
    return backdrop
