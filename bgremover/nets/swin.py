"""Swin Transformer v1 backbone in the dense-prediction form BiRefNet builds on.

Unlike the classification Swin, this variant accepts any input size: feature maps
are zero-padded up to whole windows, and every stage's output goes through its own
LayerNorm (`norm0`..`norm3`) to feed the decoder. Parameter names follow the
checkpoints on the Hub, so their state dicts load as they are.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .windows import WindowAttention, WindowLayout, window_layout


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))


SWIN_L = SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)
SWIN_T = SwinConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, self.shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """x: (B, H*W, C); `layout` matches this block's shift.

        The window padding is added after norm1 (zero tokens), as the checkpoints expect.
        """
        x = x + self.attn(self.norm1(x), layout)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Halves the resolution by stacking each 2x2 neighbourhood into channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        quads = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(quads, -1).view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, downsample: bool):
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(SwinBlock(dim, num_heads, window_size, shifted=i % 2 == 1) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def window_layouts(self, batch: int, h: int, w: int, device: torch.device) -> dict[int, WindowLayout]:
        """The layout of each shift this stage's blocks use, for an h x w token map."""
        size = self.window_size
        return {block.shift: window_layout(batch, h, w, size, block.shift, device) for block in self.blocks}

    def forward(self, x: torch.Tensor, h: int, w: int, layouts: dict[int, WindowLayout]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, layouts[block.shift])
        return x


class PatchEmbed(nn.Module):
    def __init__(self, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Returns normalised tokens (B, H*W, C) and the token grid's height and width."""
        p = self.patch_size
        x = self.proj(F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p)))
        return self.norm(x.flatten(2).transpose(1, 2)), x.shape[2], x.shape[3]


def _outside_compiled_graphs(method):
    """`torch.compiler.disable` for `method`, applied only when torch.compile traces it. Decorating
    at import would import torch._dynamo into every process, which costs 150 MB of memory and over a
    second of start-up (BENCHMARKS.md) to the many that never compile."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():
            return torch.compiler.disable(method)(*args, **kwargs)
        return method(*args, **kwargs)

    return call


class SwinTransformer(nn.Module):
    """Returns the four stage outputs (strides 4, 8, 16, 32) as (B, C, H, W) maps in channels-last memory."""

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.embed_dim)
        channels = config.stage_channels
        last = len(config.depths) - 1
        self.layers = nn.ModuleList(
            SwinStage(channels[i], config.depths[i], config.num_heads[i], config.window_size, i < last)
            for i in range(len(config.depths))
        )
        for i, dim in enumerate(channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    @_outside_compiled_graphs
    def window_layouts(self, batch: int, h: int, w: int, device: torch.device) -> list[dict[int, WindowLayout]]:
        """Every stage's window layouts for an h x w token map, fetched before any stage runs.

        Building a layout counts windows per kind (`bincount`, `nonzero`: shapes that depend on
        data), which torch.compile cannot trace. Fetched here, outside the stage loop, that is
        one graph break per forward instead of one per block, and the stages compile whole.
        """
        layouts = []
        for stage in self.layers:
            layouts.append(stage.window_layouts(batch, h, w, device))
            h, w = (h + 1) // 2, (w + 1) // 2
        return layouts

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, h, w = self.patch_embed(x)
        b = x.shape[0]
        layouts = self.window_layouts(b, h, w, x.device)
        outputs = []
        for i, stage in enumerate(self.layers):
            x = stage(x, h, w, layouts[i])
            norm = getattr(self, f"norm{i}")
            outputs.append(norm(x).view(b, h, w, -1).permute(0, 3, 1, 2))  # channels-last, as the decoder wants
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return outputs
