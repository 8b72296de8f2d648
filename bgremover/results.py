"""What a removal makes of an image once its mask is known (`Options`, `finish`, `Result`), and
what each step cost (`Timings`).

Free of PyTorch (edge refinement imports it when it is asked for), so that processes that only
decode and encode, such as the CPU workers of a Ray job, do not load it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from PIL import Image

from .choices import OUTPUTS
from .imaging import composing, decoding

if TYPE_CHECKING:
    import torch


@dataclass
class Timings:
    """Seconds per stage of one request or batch; `queue` is the wait for the device, not work."""

    decode: float = 0.0
    queue: float = 0.0
    infer: float = 0.0
    finish: float = 0.0
    encode: float = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - started)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Options:
    """What to make of an image once its mask is known.

    `output`: "cutout" (RGBA), "mask" (grayscale), "color" or "image" (an opaque
    RGB composite over `background_color` or `background_image`).
    `keep_hidden_color`: a cut-out keeps the photo's colour where it is fully transparent; by
    default that colour is zeroed, since it is the very background that was removed (any viewer
    that ignores alpha would show it) and it makes files several times larger.
    """

    output: str = "cutout"
    background_color: tuple[int, int, int] = (255, 255, 255)
    background_image: Image.Image | None = None
    threshold: float | None = None
    crop: bool = False
    crop_margin: int = 0
    refine_edges: bool = False
    keep_hidden_color: bool = False

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}: use {', '.join(OUTPUTS)}.")
        if self.output == "image" and self.background_image is None:
            raise ValueError("output 'image' needs a background image.")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold} must be between 0 and 1.")
        if self.crop_margin < 0:
            raise ValueError("crop margin must be 0 or more pixels.")


@dataclass
class Result:
    image: Image.Image
    mask: Image.Image
    icc_profile: bytes | None
    name: str


def finish(
    decoded: decoding.Decoded, mask: Image.Image, options: Options, device: str | torch.device | object = "cpu"
) -> Result:
    """Applies threshold, output kind, edge refinement and crop to one image and its mask.

    Edge refinement runs on `device` (anything whose `str` names one: the engine's `Device` too): the
    model's, so that a GPU does it where there is one.
    """
    if options.threshold is not None:
        mask = composing.binarize(mask, options.threshold)
    if options.output == "mask":
        image = mask
    else:
        foreground = composing.refined_cutout(decoded.rgb, mask, str(device)) if options.refine_edges else decoded.rgb
        background = {
            "cutout": None,
            "color": options.background_color,
            "image": options.background_image,
        }[options.output]
        image = composing.composite(foreground, mask, background)
        if options.output == "cutout" and not options.keep_hidden_color:
            composing.clear_hidden(image, mask)
    if options.crop:
        box = composing.subject_box(mask, options.crop_margin)
        if box is not None:
            image, mask = image.crop(box), mask.crop(box)
    return Result(image=image, mask=mask, icc_profile=decoded.icc_profile, name=decoded.name)
