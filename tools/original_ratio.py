"""Today's CPU paths against the project's first networks, alternating in one process.

For issue #15, whose AVX2 target is a ratio to upstream's float32 eager code. The closest
stand-in this repository holds is its first port of the networks (commit c3d9100: float32,
NCHW, torchvision's `deform_conv2d`), which the bench no longer runs. This extracts those
networks from git into a temporary folder, fills them with the same synthetic weights as
today's, and times the original, today's float32 fast path and `--precision int8` in turn.

    python tools/original_ratio.py RMBG-2.0            # 1024², 4 rounds
    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python tools/original_ratio.py RMBG-2.0   # the AVX2 proxy
    DRY=1 python tools/original_ratio.py BiRefNet_lite  # 64², 1 round: checks the script itself
"""

from __future__ import annotations

import copy
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bgremover import bench, synthetic
from bgremover.engines.pytorch import prepare_network
from bgremover.engines.quantizing import quantize_linears

ORIGINAL = "c3d9100"
DRY = os.environ.get("DRY", "") == "1"


def original_networks(folder: Path):
    """The `nets` package as commit ORIGINAL had it, imported as `original_nets`."""
    archive = subprocess.run(["git", "archive", ORIGINAL, "bgremover/nets"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder), "--strip-components=1"], input=archive, check=True)
    (folder / "nets").rename(folder / "original_nets")
    sys.path.insert(0, str(folder))
    return importlib.import_module("original_nets")


def main(model: str) -> None:
    size, rounds = (64, 1) if DRY else (1024, 4)
    network, info = synthetic.synthetic_network(model, torch.device("cpu"), torch.float32)
    weights = network.state_dict()
    with tempfile.TemporaryDirectory() as folder:
        original = original_networks(Path(folder)).network_for(weights).eval()
    original.load_state_dict(weights)
    fast = prepare_network(copy.deepcopy(network))
    int8 = copy.deepcopy(fast)
    print(
        f"{model}, {size}², CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{quantize_linears(int8)} int8 linear layers, torch {torch.__version__}",
        flush=True,
    )
    paths = {"original fp32": original, "fast fp32": fast, "int8": int8}
    x = bench.fixed_input(1, size, torch.device("cpu"), torch.float32, 0)
    times: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        reference = bench.alpha(original(x), info)
        for name, path in paths.items():
            drift = (bench.alpha(path(x), info) - reference).abs() * 255
            print(f"{name}: Δα against the original mean {drift.mean():.3f} / max {drift.max():.2f} (1/255)")
        for round_ in range(rounds):
            for name in list(paths) if round_ % 2 == 0 else list(paths)[::-1]:
                start = time.perf_counter()
                paths[name](x)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["original fp32"])
    for name, runs in times.items():
        ratios = ", ".join(f"{a / b:.2f}" for a, b in zip(times["original fp32"], runs, strict=True))
        print(
            f"{name}: runs {', '.join(f'{t:.2f}' for t in runs)} s, median {statistics.median(runs):.2f} s, "
            f"original / this {base / statistics.median(runs):.2f}x (per round {ratios})"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "RMBG-2.0")
