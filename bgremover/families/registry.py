"""The registry of model families: one record per network family, looked up by its name.

A family is everything the project knows about one kind of network besides a model's
weights: how to recognise its checkpoint from the tensors' names, how to build the network,
how its model card feeds it and reads its output (`Processing`), which engine paths suit it,
and which zoo model's synthetic weights stand in for it in tests. `zoo.py` names a family per
model; every other layer asks this registry instead of comparing family names.

Adding a family is one module that subclasses `Family` under `@register_family`, plus its
import in `families/__init__.py`. This module imports no PyTorch: the records build their
networks with lazy imports, so `rmbg --help` and the zoo stay light.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

# A checkpoint as its tensors' names map to tensors (or to anything with a `.shape`).
StateDict = Mapping[str, Any]


@dataclass(frozen=True)
class Processing:
    """How a family's model card feeds its network and reads its output.

    `antialias`: whether the resize to the input size is antialiased (BiRefNet's torchvision
    transform is; RMBG-1.4's plain bilinear resize is not). `activation`: "sigmoid" for
    logits (BiRefNet), "stretch" for a probability map that RMBG-1.4's pipeline min-max
    stretches to 0..1.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    antialias: bool
    activation: str


class UnknownArchitecture(ValueError):
    """The checkpoint belongs to no registered family."""


class Family:
    """One network family. Subclasses set the class attributes and the three network methods.

    `openvino_on_cpu`: `--engine auto` runs it with OpenVINO on a CPU (where that measured
    faster, BENCHMARKS.md "CPU engines"). `int8`: it has the linear layers `--precision int8`
    quantises on the PyTorch engine. `openvino_int8`: the OpenVINO engine quantises its
    convolutions with NNCF (engines/openvino_int8.py) for `--precision int8`. `stand_in`: the
    zoo model whose synthetic weights represent the family in tests (the smallest one).
    `known_as`: how an error message names it for a user.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    known_as: ClassVar[str]
    processing: ClassVar[Processing]
    stand_in: ClassVar[str]
    openvino_on_cpu: ClassVar[bool] = False
    int8: ClassVar[bool] = False
    openvino_int8: ClassVar[bool] = False

    def recognises(self, state: StateDict) -> bool:
        """Whether `state` is a checkpoint of this family, from its tensors' names."""
        raise NotImplementedError

    def backbone_of(self, state: StateDict) -> str | None:
        """The backbone a checkpoint of this family holds, by the zoo's names; None where there is no choice."""
        return None

    def network_for(self, state: StateDict) -> nn.Module:
        """An untrained network whose state dict has the checkpoint's names and shapes."""
        raise NotImplementedError

    def network_with(self, backbone: str | None) -> nn.Module:
        """An untrained network with a zoo row's backbone (synthetic weights need no checkpoint)."""
        raise NotImplementedError

    def describe(self, backbone: str | None) -> str:
        """A short human label, e.g. 'BiRefNet (Swin-L)'."""
        return f"{self.label} ({backbone})" if backbone else self.label


_FAMILIES: dict[str, Family] = {}


def register_family(cls: type[Family]) -> type[Family]:
    """Class decorator: adds one instance of `cls` to the registry under `cls.name`."""
    if cls.name in _FAMILIES:
        raise ValueError(f"model family {cls.name!r} is registered twice")
    _FAMILIES[cls.name] = cls()
    return cls


def families() -> list[Family]:
    """Every registered family, in registration order (the order checkpoints are tried in)."""
    return list(_FAMILIES.values())


def find_family(name: str) -> Family | None:
    """The family registered as `name`, or None (a model not yet identified has the family "")."""
    return _FAMILIES.get(name)


def get_family(name: str) -> Family:
    """The family registered as `name`; a clear error for any other name."""
    found = find_family(name)
    if found is None:
        raise ValueError(f"unknown model family {name!r}: the registered ones are {', '.join(_FAMILIES)}.")
    return found


def family_of_checkpoint(state: StateDict) -> Family:
    """The first registered family that recognises `state`."""
    for family in _FAMILIES.values():
        if family.recognises(state):
            return family
    known = ", ".join(family.known_as for family in _FAMILIES.values())
    sample = ", ".join(list(state)[:3])
    raise UnknownArchitecture(
        f"the checkpoint is none of the networks this project runs ({known}) (first tensors: {sample})"
    )


def family_of(state: StateDict) -> str:
    """The family's name ('isnet', 'birefnet': the zoo's values), from the checkpoint's tensor names."""
    return family_of_checkpoint(state).name


def backbone_of(state: StateDict) -> str | None:
    """'Swin-L', 'Swin-T', another Swin's width, or None for a family without a backbone choice."""
    return family_of_checkpoint(state).backbone_of(state)


def describe(state: StateDict) -> str:
    """A short human label for the checkpoint's network, e.g. 'BiRefNet (Swin-L)'."""
    family = family_of_checkpoint(state)
    return family.describe(family.backbone_of(state))


def network_for(state: StateDict) -> nn.Module:
    """An untrained network whose state dict has the checkpoint's names and shapes."""
    return family_of_checkpoint(state).network_for(state)
