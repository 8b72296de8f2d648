"""Images in, masks and cut-outs out: what every front end runs around an engine.

A `Remover` receives an engine (the loaded model on its device) and applies that
model family's own pre- and post-processing as its card defines it, driven by the
family's `Processing` record: the resize filter, mean/std, and the output activation
(sigmoid of BiRefNet's logits; RMBG-1.4's min-max stretch).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import zoo
from .engines import Engine, load_engine
from .imaging import decoding
from .results import Options, Result, Timings, finish
from .zoo import check_inference_size

ImageInput = Image.Image | bytes | str | Path | np.ndarray
# Pixels per band when a full-resolution image or mask is processed in pieces (bounded memory).
_BAND_PIXELS = 1 << 22


class Remover:
    """An engine plus its model's pre/post-processing; safe to share between threads."""

    def __init__(self, engine: Engine, inference_size: int | None = None):
        self.engine = engine
        self.info = engine.info
        self.device = engine.device
        self.inference_size = check_inference_size(inference_size or self.info.input_size)
        processing = self.info.processing
        shape = (1, 3, 1, 1)
        # On the 0..255 scale: the division by 255 joins the normalisation of the small resized
        # batch instead of being a pass over every full-resolution pixel.
        self._mean = 255.0 * torch.tensor(processing.mean, device=self.device).view(shape)
        self._std = 255.0 * torch.tensor(processing.std, device=self.device).view(shape)

    @classmethod
    def load(
        cls,
        model: str = zoo.DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        inference_size: int | None = None,
    ) -> Remover:
        """The one-line way in for scripts: `Remover.load("BiRefNet")`. The runtime follows RMBG_ENGINE
        (`auto` when unset: OpenVINO for the families that run faster on it on a CPU where it is
        installed, PyTorch otherwise; `choose_runtime`); `Remover(load_engine(..., runtime=...))` picks one."""
        return cls(load_engine(model, device, precision), inference_size)

    def at_size(self, size: int | None) -> Remover:
        """This remover at another inference size, sharing the engine (no second copy of the model)."""
        if size is None or size == self.inference_size:
            return self
        view = copy.copy(self)
        view.inference_size = check_inference_size(size)
        return view

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The normalised batch at the inference size, built on the engine's device.

        The resize is separable, so it runs as a horizontal pass over bands of rows, then a
        vertical pass over the narrow result: the full-resolution image never exists as floats.
        """
        height, width = self.inference_size, self.inference_size
        antialias = self.info.processing.antialias
        batch = []
        for image in images:
            narrow = [
                _resize(self._float_pixels(image, rows), (rows.stop - rows.start, width), antialias)
                for rows in _bands(image.height, image.width)
            ]
            batch.append(_resize(torch.cat(narrow, dim=2), (height, width), antialias))
        return (torch.cat(batch) - self._mean) / self._std

    def _float_pixels(self, image: Image.Image, rows: slice) -> torch.Tensor:
        """Rows of an RGB image as a (1, 3, h, w) float tensor in 0..255 on the device."""
        band = np.array(image.crop((0, rows.start, image.width, rows.stop)))  # one writable copy
        return torch.from_numpy(band).to(self.device).permute(2, 0, 1)[None].float()

    def to_mask(self, prediction: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        """One raw output (1, h, w) as a mask of `size`, PIL's (width, height) as `Image.size` gives it
        (a tensor's (height, width) is named `hw` here and in `Engine.prepare`), mode L.

        The bilinear upsampling is separable: a vertical pass to full height on the narrow
        output, then the horizontal pass and the activation per band of rows, written
        straight into 8 bits. Memory stays near one byte per output pixel at any size.
        """
        width, height = size
        tall = F.interpolate(prediction[None].float(), size=(height, prediction.shape[-1]), mode="bilinear")
        bands = list(_bands(height, width))

        def band(rows: slice) -> torch.Tensor:
            return F.interpolate(tall[:, :, rows], size=(rows.stop - rows.start, width), mode="bilinear")[0, 0]

        low, high = torch.tensor(0.0), torch.tensor(1.0)
        if self.info.processing.activation == "stretch":  # min and max of the full-size map: a first pass
            extremes = [torch.aminmax(band(rows)) for rows in bands]
            low, high = min(e.min for e in extremes), max(e.max for e in extremes)
        mask = np.empty((height, width), dtype=np.uint8)
        for rows in bands:
            values = band(rows)
            if self.info.processing.activation == "sigmoid":
                values = torch.sigmoid(values)
            else:
                values = (values - low) / (high - low).clamp(min=1e-8)
            mask[rows] = (values * 255.0 + 0.5).clamp(0, 255).byte().cpu().numpy()
        return Image.fromarray(mask)

    def predict(self, images: Sequence[Image.Image], timings: Timings | None = None) -> list[Image.Image]:
        """Soft masks (mode L, each the size of its image) for a batch of RGB images.

        Only the engine call holds the device lock. `timings.queue` gets the wait for it,
        `timings.infer` the rest: resizing and normalising on the device, the network, the masks.
        """
        if not images:
            return []
        timings = timings if timings is not None else Timings()
        started = time.perf_counter()
        with torch.inference_mode():
            batch = self.preprocess(images)
            asked = time.perf_counter()
            with self.engine.lock:
                waited = time.perf_counter() - asked
                predictions = self.engine(batch)
            masks = [self.to_mask(p, image.size) for p, image in zip(predictions, images, strict=True)]
        timings.queue += waited
        timings.infer += time.perf_counter() - started - waited
        return masks

    def process(
        self, decoded: Sequence[decoding.Decoded], options: Options | None = None, timings: Timings | None = None
    ) -> list[Result]:
        """Masks for a batch of decoded images, then each one's output per `options`."""
        options = options or Options()
        timings = timings if timings is not None else Timings()
        masks = self.predict([d.rgb for d in decoded], timings)
        with timings.stage("finish"):
            return [finish(d, mask, options, self.device) for d, mask in zip(decoded, masks, strict=True)]

    def remove(self, source: ImageInput, options: Options | None = None, **option_fields) -> Image.Image:
        """The one-call library API: background removed from a PIL image, bytes, path or array."""
        options = options or Options(**option_fields)
        return self.process([decoding.decode(source)], options)[0].image


def _bands(height: int, width: int) -> Iterator[slice]:
    """Row ranges of about `_BAND_PIXELS` pixels each, covering `height` rows."""
    step = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, step):
        yield slice(top, min(height, top + step))


def _resize(x: torch.Tensor, hw: tuple[int, int], antialias: bool) -> torch.Tensor:
    return F.interpolate(x, size=hw, mode="bilinear", antialias=antialias)
