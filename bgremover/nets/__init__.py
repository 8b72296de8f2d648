"""The networks as plain PyTorch modules: no I/O, no downloads, inference only.

`network_for(state_dict)` reads the architecture off a checkpoint's own names and
shapes, so any fine-tune of these architectures loads without extra configuration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from .birefnet import BiRefNet
from .isnet import ISNet
from .swin import SWIN_L, SWIN_T, SwinConfig

__all__ = ["BiRefNet", "ISNet", "SWIN_L", "SWIN_T", "SwinConfig", "UnknownArchitecture", "network_for"]

_SWIN_NAMES = {SWIN_L: "Swin-L", SWIN_T: "Swin-T"}


class UnknownArchitecture(ValueError):
    """The checkpoint is neither an IS-Net nor a Swin BiRefNet."""


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


def describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short human name for the checkpoint's architecture, e.g. 'BiRefNet (Swin-L)'."""
    if "stage1.rebnconvin.conv_s1.weight" in state_dict:
        return "IS-Net"
    if "bb.patch_embed.proj.weight" in state_dict and "decoder.conv_out1.0.weight" in state_dict:
        config = swin_config_of(state_dict)
        return f"BiRefNet ({_SWIN_NAMES.get(config, f'Swin, {config.embed_dim} channels')})"
    sample = ", ".join(list(state_dict)[:3])
    raise UnknownArchitecture(
        "the checkpoint is neither an IS-Net (RMBG-1.4) nor a BiRefNet (RMBG-2.0, BiRefNet*) network "
        f"(first tensors: {sample})"
    )


def network_for(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """An untrained network whose state dict has the checkpoint's names and shapes."""
    if describe(state_dict) == "IS-Net":
        return ISNet()
    return BiRefNet(swin_config_of(state_dict))
