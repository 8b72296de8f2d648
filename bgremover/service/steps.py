"""The steps of a removal around inference: an input decoded upright and within limits, and an
output finished and encoded.

`RemovalService` runs them around `Remover.predict`, and a Ray job runs them in CPU tasks, so
both decode and encode alike. Free of PyTorch (edge refinement imports it when it is asked for),
so that a Ray worker that only decodes and encodes does not spend its start and its memory on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..imaging import decoding, encoding
from ..results import Result, Timings, finish
from .options import RemovalRequest

if TYPE_CHECKING:
    import torch

# Quarter turns to the left (counter-clockwise), as the UI's batch tab asks for them.
_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def rotated(image: Image.Image, turns: int) -> Image.Image:
    """`turns` quarter turns to the left; negative turns go right."""
    turns %= 4
    return image.transpose(_TURNS[turns]) if turns else image


def decode_input(
    source: bytes | str | Path, name: str = "image", turns: int = 0, max_pixels: int | None = None
) -> decoding.Decoded:
    """An input as upright RGB, refused past `max_pixels`; shared with the Ray batch stages so that
    a distributed run decodes exactly as a local one. Raises ImageError with the fix."""
    decoded = decoding.decode(source, name=name, max_pixels=max_pixels)
    decoded.rgb = rotated(decoded.rgb, turns)
    return decoded


def encoded(result: Result, request: RemovalRequest, timings: Timings) -> bytes:
    """The output file's bytes in the request's format and compression (timed as `encode`)."""
    with timings.stage("encode"):
        return encoding.encode(result.image, request.fmt, result.icc_profile, compression=request.compression)


def finish_and_encode(
    decoded: decoding.Decoded,
    mask: Image.Image,
    request: RemovalRequest,
    timings: Timings,
    device: str | torch.device = "cpu",
) -> tuple[Result, bytes]:
    """Everything after inference for one image: its output per the request's options (edge
    refinement on `device`), then the file.

    Kept apart from inference so that it can run beside it (worker threads here, CPU tasks in a
    Ray batch).
    """
    with timings.stage("finish"):
        result = finish(decoded, mask, request.options, device)
    return result, encoded(result, request, timings)
