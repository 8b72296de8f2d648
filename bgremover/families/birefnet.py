"""BiRefNet (RMBG-2.0 and the BiRefNet models): a Swin backbone whose size the checkpoint tells."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import Family, Processing, StateDict, register_family

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_family
class BiRefNetFamily(Family):
    name = "birefnet"
    label = "BiRefNet"
    known_as = "BiRefNet (RMBG-2.0, BiRefNet*)"
    processing = Processing(IMAGENET_MEAN, IMAGENET_STD, antialias=True, activation="sigmoid")
    stand_in = "BiRefNet_lite"
    int8 = True  # the Swin blocks' linear layers

    def recognises(self, state: StateDict) -> bool:
        return "bb.patch_embed.proj.weight" in state and "decoder.conv_out1.0.weight" in state

    def backbone_of(self, state: StateDict) -> str | None:
        from ..nets import backbone_name, swin_config_of

        return backbone_name(swin_config_of(state))

    def network_for(self, state: StateDict) -> nn.Module:
        from ..nets import BiRefNet, swin_config_of

        return BiRefNet(swin_config_of(state))

    def network_with(self, backbone: str | None) -> nn.Module:
        from ..nets import BACKBONES, BiRefNet

        if backbone not in BACKBONES:
            raise ValueError(f"unknown BiRefNet backbone {backbone!r}: use {', '.join(BACKBONES)}.")
        return BiRefNet(BACKBONES[backbone])
