"""Parity of the native networks with the reference architectures, on synthetic weights."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    GOLDEN_ARCHS,
    GOLDEN_MODELS,
    GOLDEN_SIZES,
    QUICK_ARCHS,
    architecture,
    golden_input,
    golden_manifest,
    golden_output,
    manifest_state_dict,
    synthetic_state_dict,
)

from bgremover.families import UnknownArchitecture, backbone_of, describe, families, family_of, network_for
from bgremover.zoo import ZOO

_models: dict[str, torch.nn.Module] = {}


def synthetic_model(arch: str) -> torch.nn.Module:
    """The network built from the reference manifest alone, with the golden synthetic weights."""
    if arch not in _models:
        net = network_for(manifest_state_dict(arch))
        net.load_state_dict(synthetic_state_dict(net.state_dict()), strict=True)
        _models[arch] = net.eval()
    return _models[arch]


@pytest.mark.parametrize("arch", list(GOLDEN_MODELS))
def test_state_dict_matches_manifest(arch: str) -> None:
    ours = {name: list(tensor.shape) for name, tensor in synthetic_model(arch).state_dict().items()}
    reference = {name: shape for name, shape, _dtype in golden_manifest(arch)}
    assert ours == reference


@pytest.mark.parametrize("arch", list(GOLDEN_MODELS))
def test_architecture_is_read_from_the_checkpoint(arch: str) -> None:
    """The registry reads family and backbone off the reference checkpoint's names and shapes alone."""
    info = ZOO[GOLDEN_MODELS[arch]]
    state = manifest_state_dict(arch)
    assert (family_of(state), backbone_of(state)) == (info.family, info.backbone)
    assert describe(state) == architecture(info)


@pytest.mark.parametrize("model", list(ZOO))
def test_every_zoo_architecture_has_golden_data(model: str) -> None:
    """A zoo row of a family or backbone that no golden manifest has would never be tested for parity."""
    arch = next(
        (arch for arch, name in GOLDEN_MODELS.items() if architecture(ZOO[name]) == architecture(ZOO[model])), None
    )
    assert arch is not None, f"{model} ({architecture(ZOO[model])}): add its golden files to tests/golden"


def test_every_family_has_a_stand_in_with_golden_data() -> None:
    """Each registered family is tested through its stand-in, which the quick set runs."""
    assert {family.stand_in for family in families()} <= set(GOLDEN_MODELS.values())
    assert {ZOO[GOLDEN_MODELS[arch]].family for arch in QUICK_ARCHS} == {family.name for family in families()}


def test_unknown_architecture_is_named() -> None:
    known = r"none of the networks this project runs \(BiRefNet .*IS-Net \(RMBG-1.4\)\)"
    with pytest.raises(UnknownArchitecture, match=known):
        describe({"encoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("arch", GOLDEN_ARCHS)
@pytest.mark.parametrize(("height", "width"), GOLDEN_SIZES)
def test_matches_golden_output(arch: str, height: int, width: int) -> None:
    with torch.inference_mode():
        out = synthetic_model(arch)(golden_input(height, width))
    expected = golden_output(arch, height, width)
    assert out.shape == expected.shape == (1, 1, height, width)
    assert (out - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", GOLDEN_ARCHS)
def test_batch_matches_single_images(arch: str) -> None:
    model = synthetic_model(arch)
    first = golden_input(256, 384)
    second = torch.flip(first, dims=[3])
    with torch.inference_mode():
        batched = model(torch.cat((first, second), dim=0))
        singles = torch.cat((model(first), model(second)), dim=0)
    assert batched.shape == (2, 1, 256, 384)
    assert (batched - singles).abs().max().item() <= 1e-4
    assert (batched[0] - batched[1]).abs().max().item() > 1e-3
