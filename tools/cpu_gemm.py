"""Float32 linear layers on this CPU: oneMKL (what PyTorch's `F.linear` calls) against oneDNN.

For issue #15. On the AVX2 proxy (an Intel CPU capped to AVX2) the float32 network runs near the
capped CPU's matmul peak, but the issue's AMD Zen 3 figures suggest it reached about 40 % of that
CPU's peak. oneMKL picks its kernels by CPU vendor as well as by instruction set; oneDNN picks them
by instruction set alone. This prints the GEMM rate of both for the Swin-L linear shapes at 1024²,
and the code path oneMKL reports, so that a run on an AMD CPU shows whether the float32 linears
should go through oneDNN there.

    python tools/cpu_gemm.py                # on the CPU to check, nothing else running
    DRY=1 python tools/cpu_gemm.py          # small shapes: checks the script itself
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

DRY = os.environ.get("DRY", "") == "1"
# (tokens, in, out) of the Swin-L stages at 1024² (qkv, fc1, fc2) and one of the decoder's widths.
SHAPES = (
    [(64, 32, 96), (16, 64, 128)]
    if DRY
    else [
        (65536, 192, 576),
        (65536, 192, 768),
        (65536, 768, 192),
        (16384, 384, 1536),
        (4096, 768, 3072),
        (1024, 1536, 6144),
    ]
)
RUNS = 2 if DRY else 5


def rate(function, arguments: tuple, flops: float) -> float:
    """GFLOP/s of the median of RUNS calls after one warm-up."""
    function(*arguments)
    seconds = []
    for _ in range(RUNS):
        started = time.perf_counter()
        function(*arguments)
        seconds.append(time.perf_counter() - started)
    return flops / statistics.median(seconds) / 1e9


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The same product through oneDNN (the operator torch.compile's CPU backend uses)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def mkl_code_path() -> str:
    """oneMKL's own line naming the instruction set it dispatched to (MKL_VERBOSE), from a child process."""
    probe = "import torch; torch.randn(64, 64) @ torch.randn(64, 64)"
    env = {**os.environ, "MKL_VERBOSE": "1"}
    output = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
    return next((line for line in output.splitlines() if "oneMKL" in line or "Intel(R) MKL" in line), "not reported")


def main() -> int:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"oneMKL: {mkl_code_path()}")
    print(f"{'tokens x in -> out':>22} {'oneMKL':>9} {'oneDNN':>9}  GFLOP/s")
    for tokens, inputs, outputs in SHAPES:
        arguments = (torch.randn(tokens, inputs), torch.randn(outputs, inputs), torch.randn(outputs))
        flops = 2.0 * tokens * inputs * outputs
        mkl, dnn = rate(F.linear, arguments, flops), rate(onednn_linear, arguments, flops)
        print(f"{f'{tokens} x {inputs} -> {outputs}':>22} {mkl:9.1f} {dnn:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
