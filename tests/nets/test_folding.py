"""Batch norms folded into convolutions compute what the unfolded network computes."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import golden_input, manifest_state_dict, synthetic_checkpoint
from torch import nn

from bgremover.families import network_for
from bgremover.nets.folding import fold_batch_norms


def _network_with_trained_norms(arch: str, seed: int) -> nn.Module:
    """The golden synthetic network with every batch norm given non-trivial statistics and affine terms,
    as trained checkpoints have (so a fold that dropped or misapplied one would change the output)."""
    network = network_for(manifest_state_dict(arch))
    network.load_state_dict(synthetic_checkpoint(arch), strict=True)
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.5 * torch.randn(channels, generator=generator))
            module.running_var.copy_(0.2 + torch.rand(channels, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(channels, generator=generator))
            module.bias.data.copy_(0.3 * torch.randn(channels, generator=generator))
    return network.eval()


@pytest.mark.parametrize(("arch", "pairs"), [("isnet", 112), ("birefnet_lite", 43)])
def test_folding_keeps_the_output_and_leaves_no_batch_norm(arch: str, pairs: int) -> None:
    network = _network_with_trained_norms(arch, seed=len(arch))
    folded = copy.deepcopy(network)
    assert fold_batch_norms(folded) == pairs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    batch = golden_input(128, 192)
    with torch.inference_mode():
        expected, actual = network(batch), folded(batch)
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= 1e-4 * max(scale, 1.0)
    assert fold_batch_norms(folded) == 0  # a second fold finds nothing left


def test_folding_a_half_precision_network_rounds_the_weights_once() -> None:
    """The fold computes in float32: folding the float16 network gives the float32 fold rounded to float16."""
    network = _network_with_trained_norms("isnet", seed=3)
    in_float32 = copy.deepcopy(network)
    fold_batch_norms(in_float32)
    in_float16 = network.half()
    fold_batch_norms(in_float16)
    conv32, conv16 = in_float32.stage1.rebnconvin.conv_s1, in_float16.stage1.rebnconvin.conv_s1
    assert conv16.weight.dtype == torch.float16
    # The float16 network's own statistics were rounded before the fold: at most a few float16 steps apart.
    assert torch.allclose(conv16.weight.float(), conv32.weight, rtol=4e-3, atol=1e-4)
    assert torch.allclose(conv16.bias.float(), conv32.bias, rtol=4e-3, atol=1e-3)
