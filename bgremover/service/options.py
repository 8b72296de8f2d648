"""A removal request, checked once for every front end before any work is done.

The HTTP API hands in form strings, the UI widget values and the CLI parsed arguments;
all of them go through `build_request`, so a value means the same everywhere and a
mistake costs a clear message instead of an inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from ..choices import OUTPUTS
from ..imaging import composing, encoding
from ..results import Options
from ..settings import parse_flag
from ..zoo import check_inference_size

# Wider than any accepted image (RMBG_MAX_PIXELS), so a larger margin could only ever mean "all of it".
MAX_CROP_MARGIN = 100_000


@dataclass
class RemovalRequest:
    """What to run (`model`, `size`: None for the server's or model's default) and what to make of it."""

    options: Options
    fmt: str = "png"
    model: str | None = None
    size: int | None = None
    compression: str = "fast"


def parse_size(value: object, default: int | None = None) -> int | None:
    """An inference size from a form, a dropdown or the command line; empty, 0 or 'default' mean `default`."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "0", "default", "none", "model default"):
        return default
    number = _finite(text)
    if number is None or not number.is_integer():
        raise ValueError(f"size={value!r} is not a whole number: use a multiple of 32 such as 1024.")
    size = int(number)
    return check_inference_size(size)


def _finite(text: str) -> float | None:
    """`text` as a finite float, else None: inf and nan would pass range checks or overflow later."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_number(
    value: object, name: str, kind: type = float, default: float | None = None, limits: tuple[float, float] = (0, 1)
) -> float | None:
    """A finite number within `limits` from a form field or widget; empty or 'none' give `default`."""
    text = str(value if value is not None else "").strip()
    if text.lower() in ("", "none"):
        return default
    number = _finite(text)
    low, high = limits
    if number is None or (kind is int and not number.is_integer()):
        raise ValueError(f"{name}={text!r} is not a{'n integer' if kind is int else ' number'}: use {low} to {high}.")
    if not low <= number <= high:
        raise ValueError(f"{name}={text!r} is out of range: use {low} to {high}.")
    return kind(number)


def parse_color(value: object) -> tuple[int, int, int]:
    """bg_color from a form, a picker or a tuple; the message names the field and the forms it takes."""
    if isinstance(value, tuple):
        return value
    try:
        return composing.parse_color(str(value or "#ffffff"))
    except (ValueError, OverflowError) as error:  # rgb(inf, 0, 0) overflows round()
        raise ValueError(
            f"bg_color={value!r} is not a colour: use a name such as white, #RRGGBB, #RGB or rgb(r, g, b) with 0-255."
        ) from error


def build_request(
    *,
    output: str = "cutout",
    bg_color: str | tuple[int, int, int] | None = None,
    bg_image: Image.Image | None = None,
    threshold: object = None,
    crop: object = False,
    crop_margin: object = 0,
    refine_edges: object = False,
    fmt: str = "png",
    model: str | None = None,
    size: object = None,
    outputs: tuple[str, ...] = OUTPUTS,
    compression: object = "fast",
    keep_hidden_color: object = False,
) -> RemovalRequest:
    """Every option checked and converted; raises ValueError with the fix on the first bad one.

    `outputs` narrows the choice where a front end offers fewer (the HTTP API has no background image).
    """
    output = str(output or "cutout").strip().lower()
    if output not in outputs:
        raise ValueError(f"output={output!r}: use {', '.join(outputs)}.")
    fmt = encoding.output_format(str(fmt or "png"), transparent=output == "cutout")
    color = parse_color(bg_color)
    options = Options(
        output=output,
        background_color=color,
        background_image=bg_image,
        threshold=parse_number(threshold, "threshold"),
        crop=parse_flag(crop, "crop"),
        crop_margin=int(parse_number(crop_margin, "crop_margin", int, 0, (0, MAX_CROP_MARGIN))),
        refine_edges=parse_flag(refine_edges, "refine_edges"),
        keep_hidden_color=parse_flag(keep_hidden_color, "keep_hidden_color"),
    )
    model = str(model).strip() if model is not None and str(model).strip() else None
    compression = encoding.compression_name(compression)
    return RemovalRequest(options=options, fmt=fmt, model=model, size=parse_size(size), compression=compression)
