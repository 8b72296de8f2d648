"""The CUDA fast paths' preconditions, checked on the CPU.

No GPU in CI: these tests check what a GPU run relies on without running it: every
attention mask handed to SDPA is eligible for the fused kernels, one forward creates no
tensor from Python data and reads no value back to the host (either would break CUDA
graph capture), and the CUDA deformable-convolution kernel gives the network's output.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bgremover.nets import SWIN_T, BiRefNet, ISNet, deform
from bgremover.nets.windows import WindowAttention, _shifted_window_mask, _window_kind_masks, _window_kinds

CPU = torch.device("cpu")
# Small enough for CI, large enough that Swin-T's shifted stages have windows of every kind.
SMALL = (1, 3, 64, 96)

# Ops that break CUDA graph capture: tensors lifted from Python data (a host-to-device copy
# on a GPU), values read back to the host (a synchronisation), data-dependent shapes.
_CAPTURE_BREAKERS = {
    "aten.lift_fresh.default",
    "aten.lift_fresh_copy.default",
    "aten.scalar_tensor.default",
    "aten._local_scalar_dense.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
}


def _random_network(kind: str = "birefnet", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return (BiRefNet(SWIN_T) if kind == "birefnet" else ISNet()).eval()


def _image() -> torch.Tensor:
    return torch.randn(SMALL, generator=torch.Generator().manual_seed(1))


# --- Window attention: masks fit for the fused kernels, built once ----------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_masks_suit_the_fused_kernels(monkeypatch, dtype: torch.dtype) -> None:
    """What the fused SDPA kernels need of a mask: q's dtype, 4-D, last-dim stride 1 (contiguous here)."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        calls.append((q, k, v, attn_mask))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    network = _random_network().to(dtype)
    with torch.inference_mode():
        network(_image().to(dtype))
    assert len(calls) > 2 * sum(SWIN_T.depths)  # shifted blocks make one call per window kind
    for q, k, v, mask in calls:
        assert mask is not None and mask.dtype == q.dtype
        assert mask.is_contiguous() and mask.stride(-1) == 1
        assert q.dim() == mask.dim() == 4 and mask.shape == (1, q.shape[1], q.shape[2], k.shape[2])
        assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1


def test_attention_biases_are_built_once_per_dtype(monkeypatch) -> None:
    builds = []
    build = WindowAttention.build_biases
    monkeypatch.setattr(WindowAttention, "build_biases", lambda self, dtype: builds.append(dtype) or build(self, dtype))
    network = _random_network()
    attention_modules = sum(isinstance(m, WindowAttention) for m in network.modules())
    with torch.inference_mode():
        network(_image())
        assert len(builds) == attention_modules
        network(_image())
        network(_image()[..., :64])  # another input size: the biases do not depend on it
        assert len(builds) == attention_modules
    with torch.no_grad():
        network.to(torch.bfloat16)(_image().bfloat16())
    assert len(builds) == 2 * attention_modules


def _forward(network: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return network(_image())


def test_cached_biases_follow_loaded_weights() -> None:
    """Weights loaded after a forward (as the loader and the tests do) replace the cached biases."""
    network, other = _random_network(seed=0), _random_network(seed=1)
    _forward(network)
    network.load_state_dict(other.state_dict())
    assert torch.equal(_forward(network), _forward(other))


def test_cached_biases_follow_in_place_edits() -> None:
    network, fresh = _random_network(seed=0), _random_network(seed=0)
    _forward(network)
    for model in (network, fresh):
        with torch.no_grad():
            model.bb.layers[0].blocks[1].attn.relative_position_bias_table.add_(1.0)
    assert torch.equal(_forward(network), _forward(fresh))


def test_cached_biases_follow_weights_loaded_into_inference_tensors() -> None:
    """A network built under inference mode has no write counters: loading must still drop the cache."""
    other = _random_network(seed=1)
    with torch.inference_mode():
        network = _random_network(seed=0)
        network(_image())
        network.load_state_dict(other.state_dict())
        assert torch.equal(network(_image()), other(_image()))


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (1, 3), (3, 1), (3, 4)])
def test_window_kinds_reproduce_the_shift_mask(rows: int, cols: int) -> None:
    """One mask per window kind gives every window of any grid the mask the whole-map rule gives it."""
    per_kind = _window_kind_masks(7, 3, CPU)[_window_kinds(rows, cols, shifted=True)]
    assert torch.equal(per_kind, _shifted_window_mask(7 * rows, 7 * cols, 7, 3, CPU))


# --- Deformable convolution kernel per device ----------------------------------------------------


@pytest.fixture
def deform_kernel():
    """Restores the process-wide kernel choice after the test."""
    previous = deform.set_deform_kernel("auto")
    yield deform.set_deform_kernel
    deform.set_deform_kernel(previous)


def test_deform_kernel_choice(deform_kernel) -> None:
    assert deform.deform_kernel_name(CPU, torch.float32) == "grid_sample"
    assert deform.deform_kernel_name(CPU, torch.bfloat16) == "grid_sample"
    # Not torchvision's on CUDA either: replayed from a CUDA graph it gave wrong masks.
    assert deform.deform_kernel_name(torch.device("cuda"), torch.float16) == "grid_sample"
    assert deform_kernel("torchvision") == "auto"
    assert deform.deform_kernel_name(CPU, torch.bfloat16) == "torchvision"
    deform_kernel("grid_sample_native")  # by name only: auto never samples below float32
    assert deform.deform_kernel_name(torch.device("cuda"), torch.float16) == "grid_sample_native"
    with pytest.raises(ValueError, match="grid_sample"):
        deform_kernel("fast")


def test_torchvision_kernel_gives_the_network_output(deform_kernel, monkeypatch) -> None:
    """The CUDA path's code, run on the CPU in float32 (torchvision's CPU kernel), against ours."""
    import torchvision.ops

    calls = []
    kernel = torchvision.ops.deform_conv2d
    monkeypatch.setattr(torchvision.ops, "deform_conv2d", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    network = _random_network()
    deform_kernel("grid_sample")
    ours = _forward(network)
    deform_kernel("torchvision")
    theirs = _forward(network)
    assert len(calls) == 4 * 5  # four deformable branches in each of five decoder blocks
    assert (ours - theirs).abs().max().item() <= 1e-4


class _HostTraffic(TorchDispatchMode):
    """Records every op that would break capture, and every copy from the CPU to another device."""

    def __init__(self) -> None:
        super().__init__()
        self.offending: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in _CAPTURE_BREAKERS or _copies_from_host(name, args, kwargs):
            self.offending.append(name)
        return func(*args, **kwargs)


def _copies_from_host(name: str, args: tuple, kwargs: dict) -> bool:
    """A CPU tensor copied to another device: `_to_copy(cpu, device=...)` or `copy_(device tensor, cpu)`."""
    if name.startswith("aten._to_copy"):
        target = kwargs.get("device")
        return args[0].device.type == "cpu" and target is not None and torch.device(target).type != "cpu"
    if name.startswith("aten.copy_"):
        return args[1].device.type == "cpu" and args[0].device.type != "cpu"
    return False


# --- Capture safety -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "shape"), [("birefnet", SMALL), ("isnet", (1, 3, 64, 64))])
def test_forward_is_capture_safe(kind: str, shape: tuple[int, ...]) -> None:
    """After a warm-up forward (per-shape caches built), a forward neither lifts Python data nor syncs."""
    network = _random_network(kind)
    image = torch.randn(shape)
    with torch.inference_mode():
        network(image)
        with _HostTraffic() as traffic:
            network(image)
    assert traffic.offending == []


# --- torch.compile ------------------------------------------------------------------------------


def test_an_eager_forward_leaves_the_compiler_unimported() -> None:
    """torch._dynamo costs a process 150 MB and a second of start-up: only compiling should pay it."""
    code = (
        "import sys, torch; from bgremover.nets import SWIN_T, BiRefNet; torch.set_grad_enabled(False); "
        "BiRefNet(SWIN_T).eval()(torch.rand(1, 3, 64, 64)); "
        "print([name for name in sys.modules if name.startswith('torch._dynamo')])"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "[]"


@pytest.mark.slow
def test_swin_stages_compile_whole() -> None:
    """Dynamo traces a BiRefNet with one graph break per backbone call, where the window layouts
    are fetched: building them (bincount, nonzero) inside the stages broke every block's graph
    and left the stages eager under `--compile` (BENCHMARKS.md, GPU)."""
    network = _random_network("birefnet")
    with torch.inference_mode():
        explained = torch._dynamo.explain(network)(torch.randn(SMALL))
    sites = [[frame.line for frame in reason.user_stack] for reason in explained.break_reasons]
    # Each break is the call that fetches the layouts, left to run eagerly, not an operator inside it.
    assert sites and all("compiler.disable(" in site[-1] for site in sites), sites
    assert all(any("self.window_layouts(" in line for line in site) for site in sites), sites
    assert explained.graph_count <= 8
