"""Images in, masks and cut-outs out: what every front end runs around an engine.

A `Remover` receives an engine (the loaded model on its device) and applies that
model family's own pre- and post-processing as its card defines it, driven by the
family's `Processing` record: the resize filter, mean/std, and the output activation
(sigmoid of BiRefNet's logits; RMBG-1.4's min-max stretch).

An engine fed NumPy arrays (`numpy_io`: OpenVINO) gets them from `imaging.resizing`, which does
the same arithmetic without PyTorch; PyTorch is imported only for the engines that run on it.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from . import zoo
from .engines import Engine, load_engine
from .imaging import decoding, resizing
from .imaging.resizing import bands
from .results import Options, Result, Timings, finish
from .zoo import check_inference_size

if TYPE_CHECKING:
    import torch

ImageInput = Image.Image | bytes | str | Path | np.ndarray


class Remover:
    """An engine plus its model's pre/post-processing; safe to share between threads."""

    def __init__(self, engine: Engine, inference_size: int | None = None):
        self.engine = engine
        self.info = engine.info
        self.device = engine.device
        self.inference_size = check_inference_size(inference_size or self.info.input_size)
        self._numpy = getattr(engine, "numpy_io", False)

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

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor | np.ndarray:
        """The normalised batch at the inference size, built on the engine's device (a NumPy array
        for an engine fed arrays).

        The resize is separable, so it runs as a horizontal pass over bands of rows, then a
        vertical pass over the narrow result: the full-resolution image never exists as floats.
        """
        processing = self.info.processing
        if self._numpy:
            return resizing.network_input(
                images, self.inference_size, processing.mean, processing.std, processing.antialias
            )
        import torch

        height, width = self.inference_size, self.inference_size
        batch = []
        for image in images:
            narrow = [
                _resize(self._float_pixels(image, rows), (rows.stop - rows.start, width), processing.antialias)
                for rows in bands(image.height, image.width)
            ]
            batch.append(_resize(torch.cat(narrow, dim=2), (height, width), processing.antialias))
        # On the 0..255 scale: the division by 255 joins the normalisation of the small resized
        # batch instead of being a pass over every full-resolution pixel.
        mean, std = (
            255.0 * torch.tensor(v, device=self.device).view(1, 3, 1, 1) for v in (processing.mean, processing.std)
        )
        return (torch.cat(batch) - mean) / std

    def _float_pixels(self, image: Image.Image, rows: slice) -> torch.Tensor:
        """Rows of an RGB image as a (1, 3, h, w) float tensor in 0..255 on the device."""
        import torch

        band = np.array(image.crop((0, rows.start, image.width, rows.stop)))  # one writable copy
        return torch.from_numpy(band).to(self.device).permute(2, 0, 1)[None].float()

    def to_mask(self, prediction: torch.Tensor | np.ndarray, size: tuple[int, int]) -> Image.Image:
        """One raw output (1, h, w) as a mask of `size`, PIL's (width, height) as `Image.size` gives it
        (a tensor's (height, width) is named `hw` here and in `Engine.prepare`), mode L.

        The bilinear upsampling is separable: a vertical pass to full height on the narrow
        output, then the horizontal pass and the activation per band of rows, written
        straight into 8 bits. Memory stays near one byte per output pixel at any size.
        """
        if isinstance(prediction, np.ndarray):
            return resizing.mask_image(prediction, size, self.info.processing.activation)
        import torch
        import torch.nn.functional as F

        width, height = size
        tall = F.interpolate(prediction[None].float(), size=(height, prediction.shape[-1]), mode="bilinear")
        rows_of = list(bands(height, width))

        def band(rows: slice) -> torch.Tensor:
            return F.interpolate(tall[:, :, rows], size=(rows.stop - rows.start, width), mode="bilinear")[0, 0]

        low, high = torch.tensor(0.0), torch.tensor(1.0)
        if self.info.processing.activation == "stretch":  # min and max of the full-size map: a first pass
            extremes = [torch.aminmax(band(rows)) for rows in rows_of]
            low, high = min(e.min for e in extremes), max(e.max for e in extremes)
        mask = np.empty((height, width), dtype=np.uint8)
        for rows in rows_of:
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
        with self._no_autograd():
            batch = self.preprocess(images)
            asked = time.perf_counter()
            with self.engine.lock:
                waited = time.perf_counter() - asked
                predictions = self.engine(batch)
            masks = [self.to_mask(p, image.size) for p, image in zip(predictions, images, strict=True)]
        timings.queue += waited
        timings.infer += time.perf_counter() - started - waited
        return masks

    def _no_autograd(self) -> contextlib.AbstractContextManager:
        """PyTorch's inference mode around a PyTorch engine's work; nothing for an engine fed arrays."""
        if self._numpy:
            return contextlib.nullcontext()
        import torch

        return torch.inference_mode()

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


def _resize(x: torch.Tensor, hw: tuple[int, int], antialias: bool) -> torch.Tensor:
    import torch.nn.functional as F

    return F.interpolate(x, size=hw, mode="bilinear", antialias=antialias)
