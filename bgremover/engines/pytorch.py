"""The PyTorch engine: the project's own networks, eager or compiled, on a CPU or a CUDA GPU."""

from __future__ import annotations

import sys

import torch
from torch import nn

from .. import settings
from ..hub import load_model
from ..nets.deform import deform_kernel_name
from ..nets.folding import fold_batch_norms
from ..zoo import ModelInfo
from .cuda_graphs import GraphRunner
from .devices import device_lock, pick_device, pick_dtype, precision_name
from .packing import PackedLinear, pack_linears, packing_available
from .quantizing import quantize_linears

# Compiled variants Dynamo keeps per code object. The Swin blocks of every stage and both
# input scales share one forward with their own shapes: more than the default 8, which
# left the later stages running eagerly.
_RECOMPILE_LIMIT = 64


def prepare_network(network: nn.Module, compiled: bool = False, int8: bool = False) -> nn.Module:
    """The fast path applied to a loaded network, shared by the engine and `rmbg bench`.

    Batch norms are folded into the convolutions before them (a pass over each feature
    map and a kernel launch fewer per pair), then convolution weights go channels-last,
    the layout the networks keep their feature maps in (oneDNN and cuDNN run NHWC
    convolutions fastest). A bf16 network on a CPU gets its linear layers' weights packed
    once for oneDNN (packing.py); `int8` instead swaps them for int8 ones (a float32 network
    on a CPU). torch.compile is opt-in: its first call takes minutes.
    """
    fold_batch_norms(network)
    network = network.to(memory_format=torch.channels_last)
    if not compiled and not int8 and packs_linears(network):
        pack_linears(network)
    if int8 and not quantize_linears(network):
        raise ValueError(
            f"--precision int8 runs the linear layers in 8 bits, and {type(network).__name__} has none "
            "(IS-Net is all convolutions): use --precision auto or fp32."
        )
    if not compiled:
        return network
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, _RECOMPILE_LIMIT)
    return torch.compile(network)


def packs_linears(network: nn.Module) -> bool:
    """Whether `prepare_network` packs this network's linear layers: bf16 on a CPU, where measured."""
    parameter = next(network.parameters())
    return parameter.dtype == torch.bfloat16 and parameter.device.type == "cpu" and packing_available()


def warn_cpu_compile() -> None:
    """Says before loading what torch.compile costs on a CPU, where a first image otherwise looks hung."""
    print(
        "warning: torch.compile on a CPU (RMBG_COMPILE=1 / --compile) compiles for minutes before the first "
        "image of each size: 514 s for BiRefNet_lite at 512x512 on 2 cores (RMBG-2.0 at 1024x1024 did not finish "
        "in 5.5 minutes), then 1.2x faster than eager, so it pays off after about 1,500 images of one size. "
        "For a few images, unset RMBG_COMPILE; docs/engines.md has the figures.",
        file=sys.stderr,
        flush=True,
    )


class TorchEngine:
    """A loaded network on one device; callers hold `lock` around calls (see `device_lock`)."""

    runtime = "torch"

    def __init__(
        self,
        network: nn.Module,
        info: ModelInfo,
        label: str = "",
        compiled: bool = False,
        fast_path: bool = True,
        graphs: bool | None = None,
        int8: bool = False,
    ):
        """`fast_path=False` runs the network exactly as built: the float32 eager reference of `rmbg bench`.

        `int8` (a float32 network on a CPU, fast path only) runs its linear layers in 8 bits,
        eagerly: torch.compile was never measured with fbgemm's operators, so it is not applied.

        `graphs` (default RMBG_CUDA_GRAPHS, on) replays CUDA graphs per input shape on a GPU,
        of the compiled network too (the fastest combination measured); it does nothing on
        a CPU, and a shape whose capture fails runs eagerly.
        """
        parameter = next(network.parameters())
        self.info = info
        self.label = label or type(network).__name__
        self.device = parameter.device
        self.dtype = parameter.dtype
        self.fast_path = fast_path
        self.precision = "int8" if int8 and fast_path else precision_name(self.dtype)
        self.compiled = compiled and fast_path and self.precision != "int8"
        if self.precision == "int8" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ValueError(f"int8 runs a float32 network on the CPU, not a {self.dtype} one on {self.device}.")
        self.lock = device_lock(self.device)
        self.network = prepare_network(network, self.compiled, self.precision == "int8") if fast_path else network
        self.packed = any(isinstance(module, PackedLinear) for module in self.network.modules())
        graphs = settings.cuda_graphs() if graphs is None else graphs
        replay = graphs and fast_path and self.device.type == "cuda"
        self.runner = GraphRunner(self.network) if replay else None

    @classmethod
    def load(
        cls,
        model: str | ModelInfo,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compiled: bool | None = None,
        fast_path: bool = True,
        graphs: bool | None = None,
    ) -> TorchEngine:
        """Loads `model` through the hub loader; `compiled=None` follows RMBG_COMPILE."""
        chosen = pick_device(device)
        compiled = settings.compile_network() if compiled is None else compiled
        if compiled and fast_path and chosen.type == "cpu":
            warn_cpu_compile()
        loaded = load_model(model, chosen, pick_dtype(precision, chosen))
        return cls(loaded.network, loaded.info, loaded.label, compiled, fast_path, graphs, int8=precision == "int8")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return (self.runner or self.network)(batch.to(self.dtype)).float()

    def prepare(self, hw: tuple[int, int]) -> None:
        """Nothing to do: an eager network takes any size as it comes (torch.compile's first call
        at a size, where asked for, still counts as that call's time)."""

    @property
    def mode(self) -> str:
        """How the last call ran: 'cuda-graph' or 'eager', after 'compiled, ' for a compiled network."""
        replayed = self.runner.mode if self.runner else "eager"
        return f"compiled, {replayed}" if self.compiled else replayed

    def describe(self) -> str:
        """Runtime, precision, device, and which paths the last call took (graph replay, deformable kernel)."""
        path = "" if self.fast_path else ", plain eager"
        kernels = f"{self.mode}, deform {deform_kernel_name(self.device, self.dtype)}"
        kernels += ", linear packed" if self.packed else ""
        return f"torch {self.precision} on {self.device}{path} ({kernels})"
