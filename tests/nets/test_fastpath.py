"""The fast inference paths stay within their accuracy budget of the float32 eager reference.

Budgets, on the alpha mask in 1/255 steps: mean |delta| <= 0.5 and max |delta| <= 16 for
a default path; the custom deformable convolution matches torchvision's to ~1e-4 in float32.
No timings here: speed is measured by `rmbg bench` and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch
from helpers import (
    GOLDEN_ARCHS,
    QUICK_ARCHS,
    SHARED_GOLDEN,
    STAND_INS,
    golden_archs,
    golden_input,
    golden_output,
    manifest_state_dict,
    synthetic_checkpoint,
)
from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

from bgremover import synthetic, zoo
from bgremover.cli import main
from bgremover.engines import native_bf16_cpu, pick_dtype
from bgremover.engines.pytorch import prepare_network
from bgremover.families import get_family, network_for
from bgremover.nets import windows
from bgremover.nets.grid_deform import deform_conv2d
from bgremover.nets.windows import WindowLayout

MEAN_BUDGET_255 = 0.5
MAX_BUDGET_255 = 16.0
CPU = torch.device("cpu")
INT8_ARCHS = golden_archs(lambda info: get_family(info.family).int8)  # the families with int8 linear layers


def _alpha(output: torch.Tensor, arch: str) -> torch.Tensor:
    output = output.float()
    return output if arch == "isnet" else torch.sigmoid(output)


def _fast_network(arch: str, dtype: torch.dtype, int8: bool = False) -> torch.nn.Module:
    """The golden synthetic network as `Remover` runs it: eval, converted to `dtype`, then the fast-path hook."""
    network = network_for(manifest_state_dict(arch))
    network.load_state_dict(synthetic_checkpoint(arch), strict=True)
    return prepare_network(network.eval().to(dtype=dtype), int8=int8)


def _delta_255(arch: str, dtype: torch.dtype, height: int = 256, width: int = 384, int8: bool = False) -> torch.Tensor:
    with torch.inference_mode():
        output = _fast_network(arch, dtype, int8)(golden_input(height, width).to(dtype))
    assert output.shape == (1, 1, height, width)
    return (_alpha(output, arch) - _alpha(golden_output(arch, height, width), arch)).abs() * 255.0


# --- Deformable convolution ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "padding", "height", "width"),
    [(1, 0, 13, 9), (3, 1, 17, 24), (3, 0, 40, 70), (7, 3, 20, 33), (7, 2, 12, 12), (3, 1, 1, 6), (7, 3, 1, 1)],
)
def test_deform_conv2d_matches_torchvision(kernel: int, padding: int, height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(kernel * 1000 + height * 10 + width)
    channels, taps = 16, kernel * kernel
    out_h, out_w = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
    x = torch.randn(2, channels, height, width, generator=generator)
    # Offsets of several pixels: many taps land between pixels, at the border or fully outside.
    offset = 3.0 * torch.randn(2, 2 * taps, out_h, out_w, generator=generator)
    mask = 2.0 * torch.rand(2, taps, out_h, out_w, generator=generator)
    weight = torch.randn(32, channels, kernel, kernel, generator=generator) / (channels * taps) ** 0.5
    bias = torch.randn(32, generator=generator) if kernel != 1 else None  # folded batch norms give it one
    expected = torchvision_deform_conv2d(x, offset, weight, bias, padding=(padding, padding), mask=mask)
    actual = deform_conv2d(x, offset, weight, padding, mask, bias)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= 1e-4


def test_deform_conv2d_samples_outside_the_image_as_zero() -> None:
    x = torch.randn(1, 4, 6, 6)
    offset = torch.full((1, 2 * 9, 6, 6), 50.0)  # every tap far outside
    out = deform_conv2d(x, offset, torch.randn(8, 4, 3, 3), 1, torch.ones(1, 9, 6, 6))
    assert out.abs().max().item() == 0.0


def test_deform_conv2d_large_input_is_chunked_exactly() -> None:
    """Enough rows for several chunks: the seams between chunks must not show."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(1, 64, 48, 160, generator=generator)
    offset = 2.0 * torch.randn(1, 98, 48, 160, generator=generator)
    mask = torch.rand(1, 49, 48, 160, generator=generator)
    weight = torch.randn(16, 64, 7, 7, generator=generator) / (64 * 49) ** 0.5
    expected = torchvision_deform_conv2d(x, offset, weight, padding=(3, 3), mask=mask)
    assert (deform_conv2d(x, offset, weight, 3, mask) - expected).abs().max().item() <= 1e-4


def _deform_case(seed: int) -> tuple[torch.Tensor, ...]:
    """x, offset, mask and weight of a 3x3 deformable convolution, and torchvision's float32 result."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 20, 20, generator=generator)
    offset = 2.0 * torch.randn(1, 18, 20, 20, generator=generator)
    mask = torch.rand(1, 9, 20, 20, generator=generator)
    weight = torch.randn(32, 16, 3, 3, generator=generator) / 12.0
    return x, offset, mask, weight, torchvision_deform_conv2d(x, offset, weight, padding=(1, 1), mask=mask)


def test_deform_conv2d_samples_in_the_dtype_asked_for() -> None:
    """The GPU measurement of fp16 sampling (`grid_sample_native`) rests on this: a float32 convolution
    sampling in bfloat16 (as a GPU's would in fp16) carries that rounding, and only the sampling's:
    the result stays float32, and the usual float32 sampling stays exact."""
    x, offset, mask, weight, expected = _deform_case(4)
    coarse = deform_conv2d(x, offset, weight, 1, mask, sampling_dtype=torch.bfloat16)
    assert coarse.dtype == torch.float32
    assert 1e-3 < (coarse - expected).abs().max().item() <= 0.5  # bfloat16 positions: 8 bits of mantissa
    assert (deform_conv2d(x, offset, weight, 1, mask) - expected).abs().max().item() <= 1e-4


def test_deform_conv2d_bfloat16_stays_close() -> None:
    x, offset, mask, weight, expected = _deform_case(3)
    actual = deform_conv2d(x.bfloat16(), offset.bfloat16(), weight.bfloat16(), 1, mask.bfloat16())
    assert actual.dtype == torch.bfloat16
    assert (actual.float() - expected).abs().max().item() <= 0.1


# --- Window layout -----------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "shift"), [(14, 21, 0), (14, 21, 3), (9, 5, 3), (7, 7, 3)])
def test_window_layout_round_trip(h: int, w: int, shift: int) -> None:
    layout = WindowLayout(2, h, w, 7, shift, CPU)
    tokens = torch.randn(2, h * w, 5)
    fill = torch.arange(5.0)
    cut = layout.partition(tokens, fill)
    assert cut.shape[1:] == (49, 5)
    assert torch.equal(layout.merge(cut, 2), tokens)
    padding_rows = cut.view(-1, 5)[layout._padding]
    assert torch.equal(padding_rows, fill.expand_as(padding_rows))


def _fill_layout_cache() -> None:
    """More shapes than the cache holds, none of them 14 x 21."""
    for h in range(1, 2 * windows._CACHED_LAYOUTS):
        windows.window_layout(1, h, 3, 7, 0, CPU)


def test_window_layouts_are_reused_and_the_cache_stays_bounded(monkeypatch) -> None:
    monkeypatch.setattr(windows, "_graph_layouts", {})
    first = windows.window_layout(2, 14, 21, 7, 3, CPU)
    assert windows.window_layout(2, 14, 21, 7, 3, CPU) is first
    _fill_layout_cache()
    assert windows._cached_layout.cache_info().currsize == windows._CACHED_LAYOUTS
    rebuilt = windows.window_layout(2, 14, 21, 7, 3, CPU)
    assert rebuilt is not first and torch.equal(rebuilt._gather, first._gather)
    assert not windows._graph_layouts and not windows._capturing_graph(CPU)


def test_a_layout_used_in_a_graph_capture_outlives_the_cache(monkeypatch) -> None:
    """A captured graph reads the layout's index tensors by address: they must never be freed."""
    monkeypatch.setattr(windows, "_graph_layouts", {})
    monkeypatch.setattr(windows, "_capturing_graph", lambda device: True)
    captured = windows.window_layout(2, 14, 21, 7, 3, CPU)
    monkeypatch.setattr(windows, "_capturing_graph", lambda device: False)
    _fill_layout_cache()
    assert windows.window_layout(2, 14, 21, 7, 3, CPU) is captured
    assert list(windows._graph_layouts.values()) == [captured]


# --- Whole networks on the golden synthetic weights --------------------------------------------


def test_auto_precision_on_cpu() -> None:
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if native_bf16_cpu() else torch.float32)


@pytest.mark.parametrize("arch", GOLDEN_ARCHS)
def test_fast_path_hook_keeps_float32_exact(arch: str) -> None:
    """Channels-last weights change memory layout only: float32 stays at golden parity."""
    with torch.inference_mode():
        output = _fast_network(arch, torch.float32)(golden_input(256, 384))
    assert (output - golden_output(arch, 256, 384)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", GOLDEN_ARCHS)
def test_default_cpu_path_within_budget(arch: str) -> None:
    """bfloat16 + channels-last, what `auto` picks on a CPU with native bf16, tested on any CPU."""
    delta = _delta_255(arch, torch.bfloat16)
    assert delta.mean().item() <= MEAN_BUDGET_255
    assert delta.max().item() <= MAX_BUDGET_255


@pytest.mark.parametrize("arch", INT8_ARCHS)
def test_int8_cpu_path_within_budget(arch: str) -> None:
    """`--precision int8`: every linear layer in 8 bits, the rest of the network float32."""
    network = _fast_network(arch, torch.float32, int8=True)
    assert not [name for name, module in network.named_modules() if type(module) is torch.nn.Linear]
    delta = _delta_255(arch, torch.float32, int8=True)
    assert 0.0 < delta.mean().item() <= MEAN_BUDGET_255  # not zero: the linear layers did run in int8
    assert delta.max().item() <= MAX_BUDGET_255


@pytest.mark.parametrize("arch", QUICK_ARCHS)
def test_cuda_default_dtype_runs_on_cpu(arch: str) -> None:
    """The CUDA default is float16: its dtype handling (deformable sampling, masks, folded heads) is checked here.

    Float16 is slow on a CPU, so a small input, against this network's own float32 eager output.
    """
    image = golden_input(96, 128)
    reference = network_for(manifest_state_dict(arch))
    reference.load_state_dict(synthetic_checkpoint(arch), strict=True)
    with torch.inference_mode():
        expected = _alpha(reference.eval()(image), arch)
        actual = _alpha(_fast_network(arch, torch.float16)(image.half()), arch)
    delta = (actual - expected).abs() * 255.0
    assert delta.mean().item() <= MEAN_BUDGET_255
    assert delta.max().item() <= MAX_BUDGET_255


# --- rmbg bench ----------------------------------------------------------------------------------


if (SHARED_GOLDEN / "synthetic_weights.py").is_file():  # the scheme's own code, where the shared data is

    @pytest.mark.parametrize("model", STAND_INS)
    def test_bench_synthetic_weights_follow_the_golden_scheme(model: str) -> None:
        spec = importlib.util.spec_from_file_location("synthetic_weights", SHARED_GOLDEN / "synthetic_weights.py")
        scheme = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scheme)
        network, _ = synthetic.synthetic_network(model, CPU, torch.float32)
        ours = network.state_dict()
        golden = scheme.synthetic_state_dict(ours)
        assert all(torch.equal(ours[name], value) for name, value in golden.items())


def test_bench_architectures_follow_the_zoo() -> None:
    assert type(synthetic.synthetic_architecture("RMBG-1.4")[0]).__name__ == "ISNet"
    assert synthetic.synthetic_architecture("BiRefNet_lite")[0].bb.config.embed_dim == 96
    assert synthetic.synthetic_architecture(zoo.DEFAULT_MODEL)[0].bb.config.embed_dim == 192
    with pytest.raises(ValueError, match="zoo model"):
        synthetic.synthetic_architecture("someone/else")


def test_bench_command_json(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # the synthetic Hub cache goes here, not to the user's
    status = main(["bench", "--synthetic", "--model", "RMBG-1.4", "--size", "64", "--runs", "2", "--json"])
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "RMBG-1.4" and result["size"] == 64 and len(result["latencies_s"]) == 2
    assert result["peak_mib"] > 0 and result["images_per_s"] > 0
    assert result["check"]["mean_delta_255"] <= MEAN_BUDGET_255
    assert result["check"]["max_delta_255"] <= MAX_BUDGET_255


def test_bench_command_text(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    status = main(["bench", "--synthetic", "--model", "RMBG-1.4", "--size", "64", "--runs", "1", "--precision", "fp32"])
    assert status == 0
    text = capsys.readouterr().out
    for label in ("load", "first result", "steady p50", "img/s", "peak memory", "vs float32 eager"):
        assert label in text
    assert "mean |d alpha| 0.0000/255" in text
    # the network's arithmetic (IS-Net: 0.32 TFLOP at 1024², so 1.25 GFLOP at 64²) beside this CPU's GEMM rate
    found = re.search(
        r"arithmetic +([\d.]+) GFLOP/s \(([\d.]+) GFLOP per image at p50\) = "
        r"(\d+) % of this CPU's fp32 GEMM \(([\d.]+) GFLOP/s",
        text,
    )
    assert found, text
    achieved, per_image, share, gemm = (float(value) for value in found.groups())
    expected = 100 * achieved / gemm
    rounding = 0.5 + expected * (0.05 / achieved + 0.5 / gemm)  # the line prints each figure rounded
    assert round(per_image) == 1 and abs(share - expected) <= rounding


@pytest.mark.slow
def test_cold_start_splits_fresh_processes_and_openvino_needs_no_pytorch(capsys, tmp_path, monkeypatch) -> None:
    """`--cold-start` runs fresh interpreters to a first result; on RMBG-1.4's cached OpenVINO export
    (the in-process run converted it) none of them imports PyTorch."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("RMBG_ENGINE", "auto")
    args = ["bench", "--synthetic", "--model", "RMBG-1.4", "--device", "cpu", "--size", "64", "--runs", "0"]
    assert main([*args, "--no-check", "--cold-start", "2", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["cold_start"]
    assert len(runs) == 2
    for run in runs:
        assert list(run["stages"]) == ["imports", "load", "compile", "first_inference"]
        assert all(seconds >= 0 for seconds in run["stages"].values()) and run["stages"]["imports"] > 0
        assert run["engine"].startswith("openvino ") and run["torch_imported"] is False


def test_compile_on_a_cpu_says_what_the_first_image_costs_before_loading(offline_hub, capsys, monkeypatch) -> None:
    """RMBG_COMPILE=1 on a CPU: the measured cost is said as the engine loads, not discovered as a
    first image that seems to hang; without it, nothing is said."""
    from bgremover.engines import load_engine

    monkeypatch.setenv("RMBG_COMPILE", "1")
    engine = load_engine("BiRefNet_lite", "cpu", "fp32", runtime="torch")
    warning = capsys.readouterr().err
    assert engine.compiled and warning.startswith("warning: torch.compile on a CPU")
    assert "514 s" in warning and "unset RMBG_COMPILE" in warning
    monkeypatch.delenv("RMBG_COMPILE")
    assert not load_engine("BiRefNet_lite", "cpu", "fp32", runtime="torch").compiled
    assert capsys.readouterr().err == ""
