"""The networks as plain PyTorch modules: no I/O, no downloads, inference only.

Which network a checkpoint holds is the family registry's question (`bgremover.families`);
this package offers the modules and what a Swin backbone's shapes say about its size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .birefnet import BiRefNet
from .isnet import ISNet
from .swin import SWIN_L, SWIN_T, SwinConfig

__all__ = [
    "BACKBONES",
    "BiRefNet",
    "ISNet",
    "SWIN_L",
    "SWIN_T",
    "SwinConfig",
    "backbone_name",
    "swin_config_of",
]

# The Swin sizes of the public checkpoints, by the names the zoo uses.
BACKBONES = {"Swin-L": SWIN_L, "Swin-T": SWIN_T}
_SWIN_NAMES = {config: name for name, config in BACKBONES.items()}


def swin_config_of(state_dict: Mapping[str, torch.Tensor]) -> SwinConfig:
    """Reconstructs the Swin configuration from tensor shapes alone."""
    embed_dim = state_dict["bb.patch_embed.proj.weight"].shape[0]
    stages = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"bb\.layers\.(\d+)\.", k))})
    depths, heads = [], []
    for stage in stages:
        blocks = {int(m.group(1)) for k in state_dict if (m := re.match(rf"bb\.layers\.{stage}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        heads.append(state_dict[f"bb.layers.{stage}.blocks.0.attn.relative_position_bias_table"].shape[1])
    table_rows = state_dict["bb.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (math.isqrt(table_rows) + 1) // 2
    return SwinConfig(embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(heads), window_size=window)


def backbone_name(config: SwinConfig) -> str:
    """'Swin-L' or 'Swin-T' (the zoo's names), else the width of another Swin."""
    return _SWIN_NAMES.get(config, f"Swin, {config.embed_dim} channels")
