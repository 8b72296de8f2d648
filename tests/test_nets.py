"""Parity of the native networks with the reference architectures, on synthetic weights."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    ARCHS_SWIN_L_SLOW,
    GOLDEN_SIZES,
    golden_input,
    golden_manifest,
    golden_output,
    manifest_state_dict,
    synthetic_state_dict,
)

from bgremover.families import UnknownArchitecture, describe, network_for
from bgremover.nets import SWIN_L, SWIN_T, BiRefNet, ISNet

ARCHS = ["birefnet", "birefnet_lite", "isnet"]


_models: dict[str, torch.nn.Module] = {}


def synthetic_model(arch: str) -> torch.nn.Module:
    """The network built from the reference manifest alone, with the golden synthetic weights."""
    if arch not in _models:
        net = network_for(manifest_state_dict(arch))
        net.load_state_dict(synthetic_state_dict(net.state_dict()), strict=True)
        _models[arch] = net.eval()
    return _models[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_manifest(arch: str) -> None:
    ours = {name: list(tensor.shape) for name, tensor in synthetic_model(arch).state_dict().items()}
    reference = {name: shape for name, shape, _dtype in golden_manifest(arch)}
    assert ours == reference


@pytest.mark.parametrize(
    ("arch", "expected_type", "expected_name"),
    [
        ("birefnet", BiRefNet, "BiRefNet (Swin-L)"),
        ("birefnet_lite", BiRefNet, "BiRefNet (Swin-T)"),
        ("isnet", ISNet, "IS-Net"),
    ],
)
def test_architecture_is_read_from_the_checkpoint(arch: str, expected_type: type, expected_name: str) -> None:
    state = manifest_state_dict(arch)
    assert describe(state) == expected_name
    net = network_for(state)
    assert type(net) is expected_type
    if expected_type is BiRefNet:
        assert net.bb.config == (SWIN_L if arch == "birefnet" else SWIN_T)


def test_unknown_architecture_is_named() -> None:
    known = r"none of the networks this project runs \(BiRefNet .*IS-Net \(RMBG-1.4\)\)"
    with pytest.raises(UnknownArchitecture, match=known):
        describe({"encoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("arch", ARCHS_SWIN_L_SLOW)
@pytest.mark.parametrize(("height", "width"), GOLDEN_SIZES)
def test_matches_golden_output(arch: str, height: int, width: int) -> None:
    with torch.inference_mode():
        out = synthetic_model(arch)(golden_input(height, width))
    expected = golden_output(arch, height, width)
    assert out.shape == expected.shape == (1, 1, height, width)
    assert (out - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS_SWIN_L_SLOW)
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
