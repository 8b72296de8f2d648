"""`rmbg bench`: how fast and how large a model runs here, and how far its fast path drifts from float32.

It times the network itself on a normalised batch (decoding, resizing and encoding
images are left out): load time, first-result latency, steady latency (p50/p90),
images per second and peak memory. Then it runs one fixed input through the same
fast path and through the float32 eager network and reports how much the alpha masks
differ, in 1/255 steps, so a speed-up is never quoted without its accuracy cost.

`--e2e IMAGE` times what a user waits for instead (`bench_e2e.py`).

`--synthetic` needs no download: the zoo entry's architecture gets the deterministic
weights of `bgremover.synthetic`, kept in a synthetic Hub cache beside the real one and
loaded through the same `load_engine` as a real checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch

from . import hub, zoo
from .bench_cold import ColdStart, cold_start, format_cold_start
from .engines import Engine, load_engine, native_bf16_cpu, pick_device
from .engines.openvino import openvino_available
from .engines.openvino_int8 import missing_packages
from .engines.pytorch import TorchEngine
from .errors import ChildFailed, last_line
from .families import find_family
from .pipeline import check_inference_size
from .synthetic import synthetic_hub

# Seed of the fixed input the accuracy check feeds both paths.
_CHECK_SEED = 20240601


@dataclass(frozen=True)
class BenchRun:
    """What `rmbg bench` was asked for, read off the command line by `cli.py` (`--e2e`'s images
    included: `bench_e2e` times those through the service instead)."""

    model: str
    device: str = "auto"
    precision: str = "auto"
    runtime: str | None = None
    size: int | None = None
    batch_size: int = 1
    runs: int = 5
    synthetic: bool = False
    threads: int = 0
    check: bool = True
    compiled: bool | None = None
    fast_path: bool = True
    graphs: bool | None = None
    engines: bool = False
    cold_start: int = 0
    json: bool = False
    e2e: tuple[str, ...] = ()


@dataclass
class BenchResult:
    """One benchmark run; times in seconds, memory in MiB, alpha deltas in 1/255 steps."""

    model: str
    network: str
    engine: str
    synthetic: bool
    device: str
    dtype: str
    fast_path: bool
    compiled: bool
    size: int
    batch_size: int
    runs: int
    threads: int
    load_s: float
    first_s: float
    p50_s: float
    p90_s: float
    images_per_s: float
    peak_mib: float
    peak_kind: str
    latencies_s: list[float] = field(default_factory=list)
    check: dict | None = None
    cold_start: list[dict] | None = None  # bench_cold.ColdStart of each fresh process
    gemm_gflop_s: float | None = None  # this CPU's side³ GEMM in the run's precision (bf16 or fp32)
    torch_version: str = torch.__version__
    load_average: tuple[float, float, float] | None = None


# --- Measuring -------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Waits for the GPU's queued work, so a timer read after it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(str(device))


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak GPU memory allocated by PyTorch on CUDA, else the process's peak resident set (ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(str(device)) / 2**20, "cuda max_memory_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20, "process peak RSS"


def fixed_input(batch: int, size: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A reproducible stand-in for a normalised image batch (standard normal, like the golden inputs)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).to(device=str(device), dtype=dtype)


def alpha(output: torch.Tensor, info: zoo.ModelInfo) -> torch.Tensor:
    """The mask in [0, 1] as float32: sigmoid of BiRefNet's logits, IS-Net's probability as it is."""
    output = output.float()
    return torch.sigmoid(output) if info.processing.activation == "sigmoid" else output


def _run(engine: Engine, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    output = engine(batch)
    synchronize(engine.device)
    return output, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def float32_delta(model: str, info: zoo.ModelInfo, fast_alpha: torch.Tensor, sample: torch.Tensor) -> dict:
    """Mean and max |fast_alpha - alpha of the float32 eager network| over `sample`, in 1/255 steps.

    Called once the fast network is released, so the two are never resident together.
    """
    from torch.utils.flop_counter import FlopCounterMode

    reference = load_engine(model, str(sample.device), "fp32", runtime="torch", fast_path=False)
    with FlopCounterMode(display=False) as counter:  # the network's arithmetic, counted on the untimed reference
        reference_alpha = alpha(_run(reference, sample)[0], info)
    delta = (fast_alpha - reference_alpha).abs() * 255.0
    return {
        "mean_delta_255": delta.mean().item(),
        "max_delta_255": delta.max().item(),
        "size": sample.shape[-1],
        "gflop": counter.get_total_flops() / 1e9,
    }


def gemm_rate(precision: str, side: int = 4096, runs: int = 3) -> float:
    """This machine's GFLOP/s on one side³ matrix product in `precision` (bf16 or fp32) with the
    threads the network ran on: what a network's achieved rate is a share of (median of `runs`)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    torch.mm(a, b)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - started)
    return 2 * side**3 / statistics.median(seconds) / 1e9


def _time_forwards(engine: Engine, batch: torch.Tensor, runs: int) -> tuple[float, list[float]]:
    """The first forward's latency (one-time setup included), then `runs` steady ones."""
    first = _run(engine, batch)[1]
    return first, [_run(engine, batch)[1] for _ in range(runs)]


def _plain_runtime(runtime: str | None) -> str:
    """The runtime of `--plain`: PyTorch's eager network, the reference every engine is compared
    with, whatever `auto` picks for the fast path."""
    if runtime not in (None, "auto", "torch"):
        raise ValueError(
            "--plain runs PyTorch's eager network, the reference the other engines are compared with: "
            "leave out --engine, or use --engine torch."
        )
    return "torch"


def _time_engine(
    engine: Engine, load_s: float, size: int | None, batch: int, runs: int, synthetic: bool
) -> BenchResult:
    """Times the first and `runs` more forwards of a loaded engine; peak memory is read right after."""
    size = check_inference_size(size or engine.info.input_size)
    first_s, latencies = _time_forwards(engine, fixed_input(batch, size, engine.device, engine.dtype, size), runs)
    peak, peak_kind = peak_memory_mib(engine.device)
    p50 = statistics.median(latencies) if latencies else first_s
    return BenchResult(
        model=engine.info.name,
        network=engine.label,
        engine=engine.describe(),
        synthetic=synthetic,
        device=str(engine.device),
        dtype=engine.precision,
        fast_path=not isinstance(engine, TorchEngine) or engine.fast_path,
        compiled=isinstance(engine, TorchEngine) and engine.compiled,
        size=size,
        batch_size=batch,
        runs=runs,
        threads=torch.get_num_threads(),
        load_s=load_s,
        first_s=first_s,
        p50_s=p50,
        p90_s=_percentile(latencies, 0.9) if latencies else first_s,
        images_per_s=batch / p50,
        peak_mib=peak,
        peak_kind=peak_kind,
        latencies_s=latencies,
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )


def run_bench(run: BenchRun) -> BenchResult:
    """Loads the model as `Remover` would, times the first and `run.runs` more forwards, then checks accuracy.

    Peak memory is read before the check, whose float32 network would otherwise dominate it.
    The first forward of the OpenVINO engine includes its export when none is cached yet.
    """
    chosen = pick_device(run.device)
    runtime = run.runtime if run.fast_path else _plain_runtime(run.runtime)
    with synthetic_hub(run.model) if run.synthetic else nullcontext(run.model) as name:
        if chosen.type == "cuda":
            torch.cuda.reset_peak_memory_stats(chosen)
        start = time.perf_counter()
        options = {"fast_path": run.fast_path, "graphs": run.graphs}
        engine = load_engine(name, run.device, run.precision, run.compiled, runtime, **options)
        synchronize(chosen)
        result = _time_engine(engine, time.perf_counter() - start, run.size, run.batch_size, run.runs, run.synthetic)
        if run.check:
            sample = fixed_input(1, result.size, chosen, torch.float32, _CHECK_SEED)
            info, fast_alpha = engine.info, alpha(_run(engine, sample)[0], engine.info)
            del engine
            result.check = float32_delta(name, info, fast_alpha, sample)
            if chosen.type == "cpu":
                result.gemm_gflop_s = gemm_rate(result.dtype)
    return result


# --- Engine comparison ------------------------------------------------------------------------

# What each comparison row runs: `rmbg bench` in a fresh process, so peak RSS is that engine's own.
_BENCH_CODE = "import sys; from bgremover.cli import main; sys.exit(main(sys.argv[1:]))"


def engine_choices(family: str) -> list[tuple[str, str, bool]]:
    """(engine, precision, plain) rows this CPU can run for a model of `family`: float32 eager first
    (the reference), then every fast path; bf16 only where the CPU computes it natively, int8 for
    the models with linear layers (BiRefNet) on PyTorch and IS-Net on OpenVINO with NNCF installed,
    OpenVINO only when installed."""
    precisions = ["fp32", "bf16"] if native_bf16_cpu() else ["fp32"]
    rows = [("torch", "fp32", True)] + [("torch", precision, False) for precision in precisions]
    known = find_family(family)
    if known is not None and known.int8:
        rows.append(("torch", "int8", False))
    if openvino_available():
        rows += [("openvino", precision, False) for precision in precisions]
        if known is not None and known.openvino_int8 and not missing_packages():
            rows.append(("openvino", "int8", False))
    return rows


def compare_engines(model: str, size: int | None, runs: int, synthetic: bool) -> list[BenchResult]:
    """Every engine and precision of `engine_choices` on the CPU, one child process each."""
    results = []
    for engine, precision, plain in engine_choices(hub.resolve(model).family):
        command = [sys.executable, "-c", _BENCH_CODE, "bench", "--json", "--device", "cpu", "--model", model]
        command += ["--engine", engine, "--precision", precision, "--runs", str(runs)]
        command += ["--synthetic"] * synthetic + ["--plain"] * plain + (["--size", str(size)] if size else [])
        _progress(f"{engine} {precision}{' plain' if plain else ''} ...")
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            raise ChildFailed(f"the {engine} {precision} run failed: {last_line(child.stderr)}")
        results.append(BenchResult(**json.loads(child.stdout.strip().splitlines()[-1])))
    return results


def format_comparison(results: list[BenchResult]) -> str:
    """One table: time, peak memory and drift from float32 eager per engine."""
    first = results[0]
    source = "synthetic weights" if first.synthetic else "checkpoint"
    lines = [
        f"{first.model} ({first.network}, {source}), {first.size}x{first.size}, batch 1, "
        f"{first.threads} threads, torch {first.torch_version}",
        "engine                                    first s    p50 s  peak MiB  mean|dα|  max|dα| (1/255)",
    ]
    for result in results:
        check = result.check or {"mean_delta_255": float("nan"), "max_delta_255": float("nan")}
        lines.append(
            f"{result.engine[:40]:40}  {result.first_s:7.2f}  {result.p50_s:7.2f}  {result.peak_mib:8.0f}  "
            f"{check['mean_delta_255']:8.3f}  {check['max_delta_255']:7.2f}"
        )
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- End to end ------------------------------------------------------------------------------


def format_result(result: BenchResult) -> str:
    """A short human-readable report."""
    source = "synthetic weights" if result.synthetic else "checkpoint"
    path = ("" if result.fast_path else ", plain eager") + (", compiled" if result.compiled else "")
    lines = [
        f"engine          {result.engine}",
        f"{result.model} ({result.network}, {source}) on {result.device}, {result.dtype}{path}, "
        f"{result.size}x{result.size}, batch {result.batch_size}, {result.threads} threads, "
        f"torch {result.torch_version}",
        f"load            {result.load_s:8.2f} s",
        f"first result    {result.first_s:8.2f} s",
        f"steady p50      {result.p50_s:8.3f} s   p90 {result.p90_s:.3f} s   ({result.runs} runs)",
        f"throughput      {result.images_per_s:8.2f} img/s",
        f"peak memory     {result.peak_mib:8.0f} MiB ({result.peak_kind}, before the accuracy check)",
    ]
    if result.check:
        lines.append(
            f"vs float32 eager  mean |d alpha| {result.check['mean_delta_255']:.4f}/255, "
            f"max {result.check['max_delta_255']:.3f}/255 ({result.check['size']}x{result.check['size']})"
        )
    if result.check and result.gemm_gflop_s:
        achieved = result.check["gflop"] * result.batch_size / result.p50_s
        gemm = "bf16" if result.dtype == "bf16" else "fp32"
        lines.append(
            f"arithmetic      {achieved:8.1f} GFLOP/s ({result.check['gflop']:.0f} GFLOP per image at p50) = "
            f"{100 * achieved / result.gemm_gflop_s:.0f} % of this CPU's {gemm} GEMM "
            f"({result.gemm_gflop_s:.0f} GFLOP/s, 4096³, {result.threads} threads)"
        )
    if result.cold_start:
        lines.append(format_cold_start([ColdStart(**run) for run in result.cold_start]))
    if result.load_average:
        lines.append("load average    " + " ".join(f"{v:.2f}" for v in result.load_average) + " (other processes)")
    return "\n".join(lines)


def run_command(run: BenchRun) -> int:
    """`rmbg bench`: the CLI front-end of `run_bench` and `compare_engines` (`--e2e` is `bench_e2e`'s)."""
    if run.batch_size < 1 or run.runs < 0:
        raise ValueError("--batch-size must be at least 1 and --runs at least 0.")
    if run.threads:
        torch.set_num_threads(run.threads)
    if run.engines:
        results = compare_engines(run.model, run.size, run.runs, run.synthetic)
        print(json.dumps([asdict(result) for result in results]) if run.json else format_comparison(results))
        return 0
    result = run_bench(run)
    if run.cold_start:
        starts = cold_start(run.model, run.device, run.precision, run.runtime, run.size, run.synthetic, run.cold_start)
        result.cold_start = [asdict(start) for start in starts]
    print(json.dumps(asdict(result)) if run.json else format_result(result))
    return 0
