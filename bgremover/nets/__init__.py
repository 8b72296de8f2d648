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

__all__ = [
    "BACKBONES",
    "BiRefNet",
    "ISNet",
    "SWIN_L",
    "SWIN_T",
    "SwinConfig",
    "UnknownArchitecture",
    "family_of",
    "network_for",
]

# The Swin sizes of the public checkpoints, by the names the zoo uses.
BACKBONES = {"Swin-L": SWIN_L, "Swin-T": SWIN_T}
_SWIN_NAMES = {config: name for name, config in BACKBONES.items()}


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


def family_of(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'isnet' or 'birefnet' (the zoo's family names), from the checkpoint's tensor names."""
    if "stage1.rebnconvin.conv_s1.weight" in state_dict:
        return "isnet"
    if "bb.patch_embed.proj.weight" in state_dict and "decoder.conv_out1.0.weight" in state_dict:
        return "birefnet"
    sample = ", ".join(list(state_dict)[:3])
    raise UnknownArchitecture(
        "the checkpoint is neither an IS-Net (RMBG-1.4) nor a BiRefNet (RMBG-2.0, BiRefNet*) network "
        f"(first tensors: {sample})"
    )


def backbone_of(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """'Swin-L', 'Swin-T', another Swin's width, or None for IS-Net."""
    if family_of(state_dict) == "isnet":
        return None
    config = swin_config_of(state_dict)
    return _SWIN_NAMES.get(config, f"Swin, {config.embed_dim} channels")


def describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short human label for the checkpoint's network, e.g. 'BiRefNet (Swin-L)'."""
    backbone = backbone_of(state_dict)
    return f"BiRefNet ({backbone})" if backbone else "IS-Net"


def network_for(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """An untrained network whose state dict has the checkpoint's names and shapes."""
    if family_of(state_dict) == "isnet":
        return ISNet()
    return BiRefNet(swin_config_of(state_dict))
