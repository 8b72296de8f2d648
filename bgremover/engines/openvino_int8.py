"""int8 IS-Net on the OpenVINO engine (`--engine openvino --precision int8`): opt-in, never `auto`.

NNCF, OpenVINO's compression library, quantises the float export after the fact: each
convolution's weights are rounded to 8 bits per output channel, and its input activations
with scales read off real photos run through the float network (calibration). A CPU with
VNNI multiplies 8-bit numbers four at a time, and IS-Net is nearly all convolutions.
The photos are scikit-image's samples (its wheel ships them: nothing is downloaded), each
also mirrored; activations are quantised asymmetrically (NNCF's `MIXED` preset), which kept
the mask closest to float32 of the settings tried. It runs once per input size, about a
minute on 2 cores, and the result is cached beside the float export.

It moves the mask more than bf16 does (docs/engines.md, "int8 IS-Net"), so it is only used
when asked for.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np

from ..families.registry import Processing
from ..imaging.resizing import network_input

if TYPE_CHECKING:
    import openvino
    from PIL import Image

# Photos with a subject and ones without: none of them is in the accuracy check (astronaut, chelsea, coffee).
CALIBRATION_PHOTOS = ("rocket", "stereo_motorcycle", "camera", "retina", "hubble_deep_field", "immunohistochemistry")
INSTALL_HINT = "pip install 'bgremover[int8]' (or: pip install -r requirements-int8.txt)"


def missing_packages() -> list[str]:
    """What the `int8` extra brings that is not installed: NNCF, and scikit-image for its photos."""
    return [name for name in ("nncf", "skimage") if importlib.util.find_spec(name) is None]


def check_installed() -> None:
    """Says what is missing, and the extra to install, before any weights are read."""
    if missing := missing_packages():
        raise ValueError(f"--precision int8 on the OpenVINO engine needs {' and '.join(missing)}: {INSTALL_HINT}.")


def calibration_photos() -> list[Image.Image]:
    """The calibration photos as RGB images, each followed by its mirror image."""
    from PIL import Image
    from skimage import data

    photos = []
    for name in CALIBRATION_PHOTOS:
        pixels = data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(data, name)()
        if pixels.ndim == 2:
            pixels = np.stack([pixels] * 3, axis=-1)
        photo = Image.fromarray(pixels[..., :3])
        photos += [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return photos


def quantize(model: openvino.Model, processing: Processing, size: int) -> openvino.Model:
    """`model` (a float export at `size`², fed as `processing` says) with int8 convolutions."""
    import nncf

    batches = [
        network_input([photo], size, processing.mean, processing.std, processing.antialias)
        for photo in calibration_photos()
    ]
    return nncf.quantize(model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.MIXED, subset_size=len(batches))
