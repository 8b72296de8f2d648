"""Synthetic weights, photos and Hub caches: models and inputs where none can be downloaded or shipped.

`rmbg bench --synthetic`, the tests and the measurement tools share them. The weights are
deterministic per tensor, from its name and shape (so any run, on any machine, gets the same
network), with the scale a trained layer would have; they are the scheme of the golden
parity data (`tests/golden`), so they must stay bit-identical. A synthetic Hub cache holds
such a checkpoint in huggingface_hub's own layout, so the real by-name loading path runs
offline.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import checkpoints, settings, zoo
from .families import get_family

# Commit name of synthetic checkpoints in a Hub cache.
SYNTHETIC_COMMIT = "0" * 40
# `rmbg demo`'s architecture: IS-Net, the fastest on a CPU.
DEMO_MODEL = "RMBG-1.4"
DEMO_NOTE = (
    "Demo on synthetic weights: the model here has made-up weights (bgremover/synthetic.py): its cut-outs "
    "show how the app works, not how well it removes backgrounds. For real cut-outs start `rmbg`, which "
    "serves an open model where RMBG-2.0 needs a token (docs/models.md)."
)
# The environment variables a synthetic Hub cache sets (HF_HUB_CACHE would override HF_HOME).
_HUB_VARIABLES = ("HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE")


def synthetic_value(name: str, like: torch.Tensor) -> torch.Tensor:
    """The deterministic float32 value of one state-dict entry, from its name and shape.

    Convolution and linear weights are normal with variance 1/fan_in (activations keep
    their scale through deep stacks), norm scales near 1, biases and bias tables small,
    batch-norm statistics plausible; integer buffers keep their computed values.
    """
    if not like.dtype.is_floating_point:
        return like.clone()
    shape = tuple(like.shape)
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.5 * torch.rand(shape, generator=generator)
    normal = torch.randn(shape, generator=generator)
    if leaf == "running_mean":
        return 0.1 * normal
    if leaf == "relative_position_bias_table":
        return 0.02 * normal
    if len(shape) > 1:
        return normal / math.sqrt(math.prod(shape[1:]))
    return 1.0 + 0.1 * normal if leaf == "weight" else 0.02 * normal


@torch.no_grad()
def fill_synthetic(network: nn.Module) -> nn.Module:
    """Overwrites every parameter and buffer in place, one tensor at a time (no second copy of the model)."""
    for name, tensor in network.state_dict(keep_vars=True).items():
        tensor.copy_(synthetic_value(name, tensor.detach().cpu()))
    return network


def zoo_model(model: str) -> zoo.ModelInfo:
    """The zoo row of `model`: synthetic weights need the architecture a zoo row names."""
    info = zoo.lookup(model)
    if info is None:
        raise ValueError(f"--synthetic needs a zoo model name ({', '.join(zoo.ZOO)}), not {model!r}.")
    if info.archive:  # its synthetic stand-in would live in a Hub cache it is never in
        raise ValueError(
            f"{info.name} needs no Hub: `rmbg download {info.name}` and run without --synthetic, or time "
            "the same network with --synthetic --model RMBG-1.4."
        )
    return info


def synthetic_architecture(model: str) -> tuple[nn.Module, zoo.ModelInfo]:
    """An untrained network with the zoo model's architecture (its family's, at its backbone), and its zoo row."""
    info = zoo_model(model)
    return get_family(info.family).network_with(info.backbone), info


def synthetic_network(model: str, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, zoo.ModelInfo]:
    """The zoo model's architecture with synthetic weights, in eval mode on `device` in `dtype`.

    The network is converted before it is filled, so float32 and the target dtype are
    never held whole at the same time.
    """
    network, info = synthetic_architecture(model)
    return fill_synthetic(network.eval().to(device=device, dtype=dtype)), info


def synthetic_checkpoint(model: str) -> dict[str, torch.Tensor]:
    """The zoo model's synthetic float32 weights as a checkpoint (CPU tensors, the Hub's names)."""
    return synthetic_network(model, torch.device("cpu"), torch.float32)[0].state_dict()


def write_synthetic_cache(model: str, hub_dir: Path) -> Path:
    """Saves the zoo model's synthetic checkpoint where the Hub cache `hub_dir` would keep its download."""
    return checkpoints.store_in_cache(hub_dir, zoo_model(model).repo_id, synthetic_checkpoint(model), SYNTHETIC_COMMIT)


def synthetic_home() -> Path:
    """Where `rmbg bench --synthetic` keeps its synthetic Hub cache: beside the real one, so a
    second run reuses the checkpoint (and OpenVINO's exports of it) instead of writing them again."""
    return settings.hub_cache_dir().parent / "rmbg-synthetic"


def demo_checkpoint(home: Path | None = None) -> Path:
    """A folder with IS-Net's synthetic checkpoint (written once, beside the Hub cache): what `rmbg
    demo` serves, as the local model `local:synthetic-weights`, so the name says what it is."""
    folder = (synthetic_home() if home is None else home) / "demo" / "synthetic-weights"
    if not (folder / "model.safetensors").is_file():
        partial = checkpoints.save_checkpoint(folder / "partial.safetensors", synthetic_checkpoint(DEMO_MODEL))
        partial.replace(folder / "model.safetensors")  # a stopped first run leaves no half-written model
    return folder


def hub_environment(home: Path) -> dict[str, str]:
    """The environment of a process that loads models offline from the Hugging Face home `home`."""
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def ensure_synthetic_cache(model: str, home: Path) -> str:
    """`home`'s Hub cache with `model`'s synthetic checkpoint (written once); returns the zoo name."""
    info = zoo_model(model)
    snapshot = home / "hub" / ("models--" + info.repo_id.replace("/", "--")) / "snapshots" / SYNTHETIC_COMMIT
    if not (snapshot / info.filename).is_file():
        write_synthetic_cache(info.name, home / "hub")
    return info.name


@contextmanager
def synthetic_hub(model: str, home: Path | None = None) -> Iterator[str]:
    """This process pointed (offline) at a Hub cache in `home` (default `synthetic_home()`) that holds
    `model`'s synthetic checkpoint, so the real loading path runs without a download; yields the
    zoo name and restores the environment afterwards."""
    home = synthetic_home() if home is None else home
    name = ensure_synthetic_cache(model, home)
    saved = {variable: os.environ.get(variable) for variable in _HUB_VARIABLES}
    os.environ.pop("HF_HUB_CACHE", None)
    os.environ.update(hub_environment(home))
    try:
        yield name
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def product_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A stand-in photo like a product shot: a smooth backdrop, a textured subject (its stripes
    `5 + seed` pixels apart) and sensor noise, so PNGs and JPEGs compress as they would a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    backdrop = 200 + 30 * (y / height)[..., None] * np.array([1.0, 0.9, 0.8])
    subject = ((x - width / 2) / (width / 3)) ** 2 + ((y - height / 2) / (height / 2.5)) ** 2 < 1
    texture = 90 + 60 * np.sin(x / (5 + seed))[..., None] * np.array([1.0, 0.5, 0.2])
    pixels = np.where(subject[..., None], texture, backdrop) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_matte(width: int = 4032, height: int = 3024) -> Image.Image:
    """A cut-out's alpha: a wavy subject (about a third of the frame) with a soft edge 6 pixels wide,
    36 where hair would be, and alpha 0 around it, as real cut-outs have."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * 0.55, width * 0.5
    angle = np.arctan2(y - cy, x - cx)
    radius = np.hypot((y - cy) / (height * 0.40), (x - cx) / (width * 0.28))
    wobble = 1 + 0.08 * np.sin(5 * angle) + 0.04 * np.sin(13 * angle + 1) + 0.02 * np.sin(41 * angle)
    inside = (wobble - radius) * height * 0.40
    alpha = np.clip(0.5 + inside / (6 + 30 * (np.sin(3 * angle) > 0.6)), 0, 1)
    return Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))
