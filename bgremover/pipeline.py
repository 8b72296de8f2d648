"""Images in, masks and cut-outs out: the one pipeline behind the CLI, the web app and the API.

A `Remover` loads its model once and applies that model's own pre- and
post-processing as its model card defines it:

- BiRefNet / RMBG-2.0: resize to the input size (antialiased bilinear), ImageNet
  mean/std, sigmoid of the logits, bilinear resize back.
- IS-Net / RMBG-1.4: bilinear resize, mean 0.5 / std 1.0, the first side output,
  bilinear resize back, then stretched so its minimum is 0 and maximum 1.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import imaging, zoo
from .hub import LoadedModel, load_model

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_HELP = "auto (fp16 on CUDA; bf16 on CPUs with native bf16, else fp32), fp32, fp16, bf16"
ImageInput = Image.Image | bytes | str | Path | np.ndarray


def pick_device(device: str = "auto") -> torch.device:
    """`auto` is the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N.") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here. Use --device cpu.")
    return chosen


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Elsewhere oneDNN emulates bf16 and it is slower than float32, so `auto` keeps fp32 there.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on CUDA, bf16 on a CPU with native bf16, else fp32.

    Measured on an AVX512-BF16 CPU (BENCHMARKS.md): bf16 runs RMBG-2.0 at 1024² in about half
    the time of float32 (9.1 s vs 17.2 s) with 0.7 GB less memory, while the alpha mask
    stays within 0.13/255 (mean) and 0.8/255 (max) of float32's; IS-Net within 0.09/255 and 0.6/255.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if native_bf16_cpu() else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use auto, {', '.join(PRECISIONS)}.")
    return PRECISIONS[precision]


def compile_requested() -> bool:
    """RMBG_COMPILE=1 opts into torch.compile.

    Off by default: on a 2-core CPU compiling took minutes for a sub-second gain per image
    (BENCHMARKS.md); on a GPU server that stays up it may pay off, but that is unmeasured.
    """
    return os.environ.get("RMBG_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


def prepare_network(network: torch.nn.Module, compile_network: bool | None = None) -> torch.nn.Module:
    """The fast path applied to a loaded network, shared by `Remover` and `rmbg bench`.

    Convolution weights go channels-last, the layout the networks keep their feature
    maps in (oneDNN and cuDNN run NHWC convolutions fastest). torch.compile is opt-in.
    """
    network = network.to(memory_format=torch.channels_last)
    if compile_requested() if compile_network is None else compile_network:
        network = torch.compile(network)
    return network


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'fp16' or 'bf16': how settings, caches and the UI name a dtype."""
    return next(name for name, known in PRECISIONS.items() if known == dtype)


def check_inference_size(size: int) -> int:
    if size < 32 or size % 32:
        raise ValueError(f"inference size {size} must be a positive multiple of 32 (e.g. 512, 768, 1024).")
    return size


@dataclass
class Options:
    """What to make of an image once its mask is known.

    `output`: "cutout" (RGBA), "mask" (grayscale), "color" or "image" (an opaque
    RGB composite over `background_color` or `background_image`).
    """

    output: str = "cutout"
    background_color: tuple[int, int, int] = (255, 255, 255)
    background_image: Image.Image | None = None
    threshold: float | None = None
    crop: bool = False
    crop_margin: int = 0
    refine_edges: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.output not in ("cutout", "mask", "color", "image"):
            raise ValueError(f"unknown output {self.output!r}: use cutout, mask, color or image.")
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


class Remover:
    """A loaded model and its pre/post-processing; safe to share between threads."""

    def __init__(
        self,
        model: str = zoo.DEFAULT_MODEL,
        device: str = "auto",
        precision: str = "auto",
        inference_size: int | None = None,
        max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    ):
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.loaded: LoadedModel = load_model(model, self.device, self.dtype)
        self.loaded.network = prepare_network(self.loaded.network)
        self.info = self.loaded.info
        self.inference_size = check_inference_size(inference_size or self.info.input_size)
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.info.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.info.std, device=self.device).view(shape)

    @property
    def is_birefnet(self) -> bool:
        return self.info.architecture == zoo.BIREFNET

    def _prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = (self.inference_size, self.inference_size)
        batch = []
        for image in images:
            pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).to(self.device)
            pixels = pixels.permute(2, 0, 1)[None].float() / 255.0
            batch.append(F.interpolate(pixels, size=size, mode="bilinear", antialias=self.is_birefnet))
        return ((torch.cat(batch) - self._mean) / self._std).to(self.dtype)

    def _to_mask(self, prediction: torch.Tensor, size: tuple[int, int]) -> Image.Image:
        width, height = size
        mask = F.interpolate(prediction[None].float(), size=(height, width), mode="bilinear")[0, 0]
        if self.is_birefnet:
            mask = torch.sigmoid(mask)
        else:
            low, high = mask.min(), mask.max()
            mask = (mask - low) / (high - low).clamp(min=1e-8)
        return Image.fromarray((mask * 255.0 + 0.5).clamp(0, 255).byte().cpu().numpy())

    def predict(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """Soft masks (mode L, each the size of its image) for a batch of RGB images."""
        if not images:
            return []
        with self._lock, torch.inference_mode():
            batch = self._prepare(images)
            predictions = self.loaded.network(batch)
            return [self._to_mask(p, image.size) for p, image in zip(predictions, images, strict=True)]

    def decode(self, source: ImageInput, name: str = "image") -> imaging.Decoded:
        return imaging.decode(source, name=name, max_pixels=self.max_pixels)

    def process(self, decoded: Sequence[imaging.Decoded], options: Options | None = None) -> list[Result]:
        """Masks for a batch of decoded images, then each one's output per `options`."""
        options = options or Options()
        masks = self.predict([d.rgb for d in decoded])
        return [finish(d, mask, options) for d, mask in zip(decoded, masks, strict=True)]

    def remove(self, source: ImageInput, options: Options | None = None, **option_fields) -> Image.Image:
        """The one-call library API: background removed from a PIL image, bytes, path or array."""
        options = options or Options(**option_fields)
        return self.process([self.decode(source)], options)[0].image


def finish(decoded: imaging.Decoded, mask: Image.Image, options: Options) -> Result:
    """Applies threshold, output kind, edge refinement and crop to one image and its mask."""
    if options.threshold is not None:
        mask = imaging.binarize(mask, options.threshold)
    if options.output == "mask":
        image = mask
    else:
        foreground = imaging.estimate_foreground(decoded.rgb, mask) if options.refine_edges else decoded.rgb
        background = {
            "cutout": None,
            "color": options.background_color,
            "image": options.background_image,
        }[options.output]
        image = imaging.composite(foreground, mask, background)
    if options.crop:
        box = imaging.subject_box(mask, options.crop_margin)
        if box is not None:
            image, mask = image.crop(box), mask.crop(box)
    return Result(image=image, mask=mask, icc_profile=decoded.icc_profile, name=decoded.name)
