"""IS-Net (RMBG-1.4): one fixed architecture, fed [0, 1] pixels shifted by 0.5."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import Family, Processing, StateDict, register_family

if TYPE_CHECKING:
    from torch import nn


@register_family
class ISNetFamily(Family):
    name = "isnet"
    label = "IS-Net"
    known_as = "IS-Net (RMBG-1.4)"
    processing = Processing((0.5, 0.5, 0.5), (1.0, 1.0, 1.0), antialias=False, activation="stretch")
    stand_in = "RMBG-1.4"
    openvino_on_cpu = True  # faster than PyTorch on both CPU kinds measured
    openvino_int8 = True  # opt-in: measured on real photos in docs/engines.md

    def recognises(self, state: StateDict) -> bool:
        return "stage1.rebnconvin.conv_s1.weight" in state

    def network_for(self, state: StateDict) -> nn.Module:
        return self.network_with(None)

    def network_with(self, backbone: str | None) -> nn.Module:
        from ..nets import ISNet

        return ISNet()
