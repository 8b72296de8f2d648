"""`rmbg bench`: how fast and how large a model runs here, and how far its fast path drifts from float32.

It times the network itself on a normalised batch (decoding, resizing and encoding
images are left out): load time, first-result latency, steady latency (p50/p90),
images per second and peak memory. Then it runs one fixed input through the same
fast path and through the float32 eager network and reports how much the alpha masks
differ, in 1/255 steps, so a speed-up is never quoted without its accuracy cost.

`--e2e IMAGE` times what a user waits for instead: the service path of every front end
(decode, queue, infer, finish, encode) on real files, with the output options given.

`--synthetic` needs no download: the zoo entry's architecture gets deterministic
pseudo-random weights, generated here per tensor from its name (so any run, on any
machine, gets the same network) with the scale a trained layer would have.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import hub, settings, zoo
from .engines import Engine, choose_engine, native_bf16_cpu, pick_device, pick_dtype
from .engines.openvino import OpenVinoEngine, engine_cache_dir, openvino_available
from .engines.pytorch import TorchEngine
from .errors import ChildFailed
from .hub import load_model
from .imaging import png
from .nets import BACKBONES, BiRefNet, ISNet, describe
from .pipeline import Remover, check_inference_size
from .service.options import Request, build_request
from .service.pool import ModelPool
from .service.removal import RemovalService

# Seed of the fixed input the accuracy check feeds both paths.
_CHECK_SEED = 20240601
# Commit name of the synthetic checkpoint in the temporary Hub cache of the cold-start test.
_SYNTHETIC_COMMIT = "0" * 40
# What the cold-start child process runs: import, load, report; no inference.
_COLD_START_CODE = """
import resource, sys
from bgremover.pipeline import Remover
Remover.load(sys.argv[1], sys.argv[2], sys.argv[3])
print("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
"""


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
    cold_start_s: list[float] | None = None
    cold_start_peak_mib: float | None = None
    torch_version: str = torch.__version__
    load_average: tuple[float, float, float] | None = None


# --- Synthetic weights -----------------------------------------------------------------------


def synthetic_value(name: str, like: torch.Tensor) -> torch.Tensor:
    """The deterministic float32 value of one state-dict entry, from its name and shape.

    Convolution and linear weights are normal with variance 1/fan_in (activations keep
    their scale through deep stacks), norm scales near 1, biases and bias tables small,
    batch-norm statistics plausible; integer buffers keep their computed values.
    """
    if not like.dtype.is_floating_point:
        return like.clone()
    shape = tuple(like.shape)
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.5 * torch.rand(shape, generator=generator)
    normal = torch.randn(shape, generator=generator)
    if leaf == "running_mean":
        return 0.1 * normal
    if leaf == "relative_position_bias_table":
        return 0.02 * normal
    if len(shape) > 1:
        return normal / math.sqrt(math.prod(shape[1:]))
    return 1.0 + 0.1 * normal if leaf == "weight" else 0.02 * normal


@torch.no_grad()
def fill_synthetic(network: nn.Module) -> nn.Module:
    """Overwrites every parameter and buffer in place, one tensor at a time (no second copy of the model)."""
    for name, tensor in network.state_dict(keep_vars=True).items():
        tensor.copy_(synthetic_value(name, tensor.detach().cpu()))
    return network


def synthetic_architecture(model: str) -> tuple[nn.Module, zoo.ModelInfo]:
    """An untrained network with the zoo model's architecture, and its zoo entry."""
    info = _zoo_entry(model)
    if info.family == zoo.ISNET:
        return ISNet(), info
    return BiRefNet(BACKBONES[info.backbone]), info


def _zoo_entry(model: str) -> zoo.ModelInfo:
    info = zoo.lookup(model)
    if info is None:
        raise ValueError(f"--synthetic needs a zoo model name ({', '.join(zoo.ZOO)}), not {model!r}.")
    return info


def synthetic_network(model: str, device: torch.device, dtype: torch.dtype) -> tuple[nn.Module, zoo.ModelInfo]:
    """The zoo model's architecture with synthetic weights, in eval mode on `device` in `dtype`.

    The network is converted before it is filled, so float32 and the target dtype are
    never held whole at the same time.
    """
    network, info = synthetic_architecture(model)
    network = fill_synthetic(network.eval().to(device=device, dtype=dtype))
    return network, info


# --- Measuring -------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak GPU memory allocated by PyTorch on CUDA, else the process's peak resident set (ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20, "process peak RSS"


def fixed_input(batch: int, size: int, device: torch.device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A reproducible stand-in for a normalised image batch (standard normal, like the golden inputs)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).to(device=device, dtype=dtype)


def alpha(output: torch.Tensor, info: zoo.ModelInfo) -> torch.Tensor:
    """The mask in [0, 1] as float32: sigmoid of BiRefNet's logits, IS-Net's probability as it is."""
    output = output.float()
    return torch.sigmoid(output) if info.processing.activation == "sigmoid" else output


def _run(engine: Engine, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    output = engine(batch)
    _sync(engine.device)
    return output, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _load(
    model: str,
    device: torch.device,
    precision: str,
    synthetic: bool,
    fast_path: bool,
    compiled: bool = False,
    graphs: bool | None = None,
) -> TorchEngine:
    """The engine as `Remover` runs it (`fast_path`), or the plain eager one the accuracy check compares with."""
    dtype = pick_dtype(precision, device)
    if synthetic:
        network, info = synthetic_network(model, device, dtype)
        label = describe(network.state_dict())
    else:
        loaded = load_model(model, device, dtype)
        network, info, label = loaded.network, loaded.info, loaded.label
    return TorchEngine(network, info, label, compiled, fast_path, graphs, int8=precision == "int8")


def _load_openvino(model: str, precision: str, synthetic: bool) -> OpenVinoEngine:
    """The OpenVINO engine; with `synthetic`, over a synthetic checkpoint kept beside its exports,
    so a second bench run reuses the export instead of converting again."""
    if not synthetic:
        return OpenVinoEngine.load(model, precision)
    info = _zoo_entry(model)
    checkpoint = engine_cache_dir() / "synthetic-weights" / info.name / "model.safetensors"
    if not checkpoint.is_file():
        hub.save_checkpoint(checkpoint, synthetic_network(model, torch.device("cpu"), torch.float32)[0].state_dict())
    # As `OpenVinoEngine.load`: the network is read from the checkpoint only for a size not yet exported.
    return OpenVinoEngine(None, info, describe(hub.read_shapes(checkpoint, info.name)), checkpoint, precision)


def float32_delta(
    model: str, info: zoo.ModelInfo, fast_alpha: torch.Tensor, sample: torch.Tensor, synthetic: bool
) -> dict:
    """Mean and max |fast_alpha - alpha of the float32 eager network| over `sample`, in 1/255 steps.

    Called once the fast network is released, so the two are never resident together.
    """
    reference = _load(model, sample.device, "fp32", synthetic, fast_path=False)
    reference_alpha = alpha(_run(reference, sample)[0], info)
    delta = (fast_alpha - reference_alpha).abs() * 255.0
    return {"mean_delta_255": delta.mean().item(), "max_delta_255": delta.max().item(), "size": sample.shape[-1]}


def _time_forwards(engine: Engine, batch: torch.Tensor, runs: int) -> tuple[float, list[float]]:
    """The first forward's latency (one-time setup included), then `runs` steady ones."""
    first = _run(engine, batch)[1]
    return first, [_run(engine, batch)[1] for _ in range(runs)]


def _bench_engine(engine: str | None, fast_path: bool, device: torch.device, family: str, precision: str) -> str:
    """The runtime a bench run times: as `load_engine` chooses for the fast path, and PyTorch for
    the plain network, which is the reference every engine is compared with whatever `auto` picks."""
    if fast_path:
        return choose_engine(engine, device, family, precision)
    if engine not in (None, "auto", "torch"):
        raise ValueError(
            "--plain runs PyTorch's eager network, the reference the other engines are compared with: "
            "leave out --engine, or use --engine torch."
        )
    return "torch"


def run_bench(
    model: str = zoo.DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    size: int | None = None,
    batch_size: int = 1,
    runs: int = 5,
    synthetic: bool = False,
    check: bool = True,
    compiled: bool | None = None,
    fast_path: bool = True,
    graphs: bool | None = None,
    engine_name: str | None = None,
) -> BenchResult:
    """Loads the model as `Remover` would, times the first and `runs` more forwards, then checks accuracy.

    Peak memory is read before the check, whose float32 network would otherwise dominate it.
    The first forward of the OpenVINO engine includes its export when none is cached yet.
    """
    chosen = pick_device(device)
    engine_name = _bench_engine(engine_name, fast_path, chosen, hub.resolve(model).family, precision)
    compiled = fast_path and engine_name == "torch" and (settings.compile_network() if compiled is None else compiled)
    if chosen.type == "cuda":
        torch.cuda.reset_peak_memory_stats(chosen)
    start = time.perf_counter()
    if engine_name == "openvino":
        engine: Engine = _load_openvino(model, precision, synthetic)
    else:
        engine = _load(model, chosen, precision, synthetic, fast_path, compiled, graphs)
    dtype = engine.dtype
    info = engine.info
    _sync(chosen)
    load_s = time.perf_counter() - start
    size = check_inference_size(size or info.input_size)
    first_s, latencies = _time_forwards(engine, fixed_input(batch_size, size, chosen, dtype, size), runs)
    peak, peak_kind = peak_memory_mib(chosen)
    p50 = statistics.median(latencies) if latencies else first_s
    result = BenchResult(
        model=info.name,
        network=engine.label,
        engine=engine.describe(),
        synthetic=synthetic,
        device=str(chosen),
        dtype=engine.precision,
        fast_path=fast_path,
        compiled=compiled,
        size=size,
        batch_size=batch_size,
        runs=runs,
        threads=torch.get_num_threads(),
        load_s=load_s,
        first_s=first_s,
        p50_s=p50,
        p90_s=_percentile(latencies, 0.9) if latencies else first_s,
        images_per_s=batch_size / p50,
        peak_mib=peak,
        peak_kind=peak_kind,
        latencies_s=latencies,
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )
    if check:
        sample = fixed_input(1, size, chosen, torch.float32, _CHECK_SEED)
        fast_alpha = alpha(_run(engine, sample)[0], info)
        del engine
        result.check = float32_delta(model, info, fast_alpha, sample, synthetic)
    return result


# --- Engine comparison ------------------------------------------------------------------------

# What each comparison row runs: `rmbg bench` in a fresh process, so peak RSS is that engine's own.
_BENCH_CODE = "import sys; from bgremover.cli import main; sys.exit(main(sys.argv[1:]))"


def engine_choices(family: str) -> list[tuple[str, str, bool]]:
    """(engine, precision, plain) rows this CPU can run for a model of `family`: float32 eager first
    (the reference), then every fast path; bf16 only where the CPU computes it natively, int8 for
    the models with linear layers (BiRefNet), OpenVINO only when installed."""
    precisions = ["fp32", "bf16"] if native_bf16_cpu() else ["fp32"]
    rows = [("torch", "fp32", True)] + [("torch", precision, False) for precision in precisions]
    if family == zoo.BIREFNET:
        rows.append(("torch", "int8", False))
    if openvino_available():
        rows += [("openvino", precision, False) for precision in precisions]
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
            raise ChildFailed(f"the {engine} {precision} run failed: {_last_line(child.stderr)}")
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


def _last_line(stderr: str) -> str:
    """What a failed child said last (the CLI's own `error: ...` line when it caught the failure)."""
    lines = stderr.strip().splitlines()
    return lines[-1].removeprefix("error: ") if lines else "no message (see its exit status)"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Cold start --------------------------------------------------------------------------------


def write_synthetic_cache(model: str, hub_dir: Path) -> Path:
    """Saves the zoo model's synthetic float32 weights where the Hub cache would keep its checkpoint."""
    network, info = synthetic_network(model, torch.device("cpu"), torch.float32)
    return hub.store_in_cache(hub_dir, info.repo_id, network.state_dict(), _SYNTHETIC_COMMIT)


def _time_to_ready(model: str, device: str, precision: str, env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawning a fresh interpreter until its `Remover` is loaded (inference excluded),
    and that process's peak RSS in MiB by then (the loading transient)."""
    command = [sys.executable, "-c", _COLD_START_CODE, model, device, precision]
    start = time.perf_counter()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        line = child.stdout.readline()
        elapsed = time.perf_counter() - start
        _, errors = child.communicate()
    if not line.startswith("ready"):
        raise ChildFailed(f"the cold-start process failed: {_last_line(errors)}")
    return elapsed, float(line.split()[1])


def cold_start(model: str, device: str, precision: str, synthetic: bool, repeats: int = 3) -> list[tuple[float, float]]:
    """Process start to a ready `Remover`, with the weights already cached, `repeats` times: (seconds, peak MiB).

    With `synthetic`, a synthetic checkpoint is written to a temporary Hub cache that
    the child processes use offline, so the real loading code path is measured.
    """
    with tempfile.TemporaryDirectory(prefix="rmbg-bench-") as home:
        env = dict(os.environ)
        if synthetic:
            write_synthetic_cache(model, Path(home) / "hub")
            env.update(HF_HOME=home, HF_HUB_OFFLINE="1")
            env.pop("HF_HUB_CACHE", None)
            model = zoo.lookup(model).name
        return [_time_to_ready(model, device, precision, env) for _ in range(repeats)]


# --- End to end ------------------------------------------------------------------------------

E2E_STAGES = ("decode", "queue", "infer", "finish", "encode", "total")


@dataclass
class EndToEndResult:
    """One image through the service path: the stage split of the run with the median total (so the
    parts add up to at most the total; the rest is Python between stages), in seconds.

    `infer` includes more than the network: `resize_in_s` (the image to the model's input) and
    `mask_out_s` (the output to a full-size mask) are timed apart, so `outside_network_s` is
    everything a faster network would not shorten.
    """

    image: str
    width: int
    height: int
    model: str
    synthetic: bool
    device: str
    precision: str
    size: int
    output: str
    format: str
    compression: str
    png_writer: str
    refine_edges: bool
    runs: int
    stages_s: dict[str, float]
    outside_inference_s: float
    resize_in_s: float
    mask_out_s: float
    outside_network_s: float
    totals_s: list[float]
    output_bytes: int
    soft_mask_share: float
    threads: int = field(default_factory=torch.get_num_threads)
    torch_version: str = torch.__version__
    load_average: tuple[float, float, float] | None = None


def _smooth(rng: np.random.Generator, cells: tuple[int, int, int], scale: float, size: tuple[int, int]):
    """Random values on a coarse grid, bicubically enlarged to `size` (height, width)."""
    grid = torch.from_numpy(rng.normal(0, scale, cells).astype(np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(grid, size=size, mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()


def synthetic_photo(width: int = 4032, height: int = 3024, seed: int = 0) -> Image.Image:
    """A stand-in for a phone photo where none can be shipped: broad colour gradients, mid-scale
    texture, fine grain and sensor noise, so lossless encoders meet photo-like statistics
    (save it as JPEG to get a camera-like input)."""
    rng = np.random.default_rng(seed)
    size = (height, width)
    pixels = 125 + _smooth(rng, (6, 8, 3), 55, size) + _smooth(rng, (height // 24, width // 24, 3), 18, size)
    pixels += _smooth(rng, (height // 4, width // 4, 1), 4, size) + rng.normal(0, 1.5, (height, width, 1))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_matte(width: int = 4032, height: int = 3024) -> Image.Image:
    """A cut-out's alpha: a wavy subject (about a third of the frame) with a soft edge 6 pixels wide,
    36 where hair would be, and alpha 0 around it, as real cut-outs have."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * 0.55, width * 0.5
    angle = np.arctan2(y - cy, x - cx)
    radius = np.hypot((y - cy) / (height * 0.40), (x - cx) / (width * 0.28))
    wobble = 1 + 0.08 * np.sin(5 * angle) + 0.04 * np.sin(13 * angle + 1) + 0.02 * np.sin(41 * angle)
    inside = (wobble - radius) * height * 0.40
    alpha = np.clip(0.5 + inside / (6 + 30 * (np.sin(3 * angle) > 0.6)), 0, 1)
    return Image.fromarray((alpha * 255 + 0.5).astype(np.uint8))


@contextmanager
def synthetic_hub(model: str) -> Iterator[str]:
    """This process pointed (offline) at a temporary Hub cache holding `model`'s synthetic checkpoint,
    so the real loading path runs without a download; yields the zoo name."""
    names = ("HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="rmbg-bench-") as home:
        write_synthetic_cache(model, Path(home) / "hub")
        os.environ.update(HF_HOME=home, HF_HUB_OFFLINE="1")
        os.environ.pop("HF_HUB_CACHE", None)
        try:
            yield zoo.lookup(model).name
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def run_e2e(
    images: list[str | Path],
    request: Request,
    model: str = zoo.DEFAULT_MODEL,
    device: str = "auto",
    precision: str = "auto",
    size: int | None = None,
    runs: int = 5,
    synthetic: bool = False,
) -> list[EndToEndResult]:
    """Each image once to warm up, then `runs` times through `RemovalService.remove`, as the front ends call it."""
    if runs < 1:
        raise ValueError("--e2e needs --runs of at least 1.")
    with synthetic_hub(model) if synthetic else nullcontext(model) as name:
        service = RemovalService(ModelPool(name, device, precision, size))
        service.pool.get()
        return [_time_image(service, Path(image), request, runs, synthetic) for image in images]


def _time_image(service: RemovalService, path: Path, request: Request, runs: int, synthetic: bool) -> EndToEndResult:
    data = path.read_bytes()  # from memory, as an upload arrives: the disk is not part of the path
    service.remove(data, request, path.name)
    splits, totals = [], []
    for _ in range(runs):
        started = time.perf_counter()
        removal = service.remove(data, request, path.name)
        totals.append(time.perf_counter() - started)
        splits.append(removal.timings.as_dict())
    middle = sorted(range(runs), key=totals.__getitem__)[(runs - 1) // 2]
    stages = {**splits[middle], "total": totals[middle]}
    outside_inference = stages["total"] - stages["infer"] - stages["queue"]
    resize_in, mask_out = _time_resizes(service.remover(request), removal.original, runs)
    alpha = np.asarray(removal.result.mask)
    pool = service.pool
    return EndToEndResult(
        image=path.name,
        width=removal.original.width,
        height=removal.original.height,
        model=removal.model,
        synthetic=synthetic,
        device=str(pool.device),
        precision=pool.precision_name,
        size=removal.size,
        output=request.options.output,
        format=request.fmt,
        compression=request.compression,
        png_writer=png.library(request.compression),
        refine_edges=request.options.refine_edges,
        runs=runs,
        stages_s=stages,
        outside_inference_s=outside_inference,
        resize_in_s=resize_in,
        mask_out_s=mask_out,
        outside_network_s=outside_inference + resize_in + mask_out,
        totals_s=totals,
        output_bytes=len(removal.data),
        soft_mask_share=float(((alpha > 0) & (alpha < 255)).mean()),
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )


def _time_resizes(remover: Remover, image: Image.Image, runs: int) -> tuple[float, float]:
    """Median seconds of the two resizes inside `infer`: the image to the model's input, and an
    output (zeros: the values do not change the work) back to a mask of the image's size."""
    inputs, outputs = [], []
    with torch.inference_mode():
        for _ in range(runs):
            started = time.perf_counter()
            batch = remover.preprocess([image])
            _sync(remover.device)
            inputs.append(time.perf_counter() - started)
            prediction = torch.zeros(batch.shape[-2:], device=remover.device)[None]
            started = time.perf_counter()
            remover.to_mask(prediction, image.size)
            outputs.append(time.perf_counter() - started)
    return statistics.median(inputs), statistics.median(outputs)


def format_e2e(results: list[EndToEndResult]) -> str:
    """A table: one row per image, the stage split of its median run."""
    first = results[0]
    source = "synthetic weights" if first.synthetic else "checkpoint"
    refine = "on" if first.refine_edges else "off"
    lines = [
        f"{first.model} ({source}) at {first.size} px on {first.device}, {first.precision}, {first.threads} threads, "
        f"torch {first.torch_version}; {first.output} as {first.format}, compression {first.compression} "
        f"(PNG: {first.png_writer}), refine edges {refine}; median of {first.runs} runs after a warm-up",
        f"{'image':24} {'pixels':>11} "
        + " ".join(f"{stage:>7}" for stage in E2E_STAGES)
        + "  no-infer  in+out  no-network    output",
    ]
    for result in results:
        stages = " ".join(f"{result.stages_s[stage]:7.3f}" for stage in E2E_STAGES)
        pixels = f"{result.width}x{result.height}"
        lines.append(
            f"{result.image[:24]:24} {pixels:>11} {stages} {result.outside_inference_s:9.3f}"
            f" {result.resize_in_s + result.mask_out_s:7.3f} {result.outside_network_s:11.3f}"
            f" {result.output_bytes / 1e6:7.2f} MB"
        )
    lines.append(
        "seconds; no-infer = total - infer - queue; in+out = the two resizes inside infer (image to the "
        "model's input, output to a full-size mask); no-network = no-infer + in+out"
    )
    if first.load_average:
        lines.append("load average    " + " ".join(f"{v:.2f}" for v in first.load_average) + " (other processes)")
    return "\n".join(lines)


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
    if result.cold_start_s:
        runs = ", ".join(f"{t:.2f}" for t in result.cold_start_s)
        lines.append(
            f"cold start      {statistics.median(result.cold_start_s):8.2f} s   (median; new process to loaded "
            f"Remover, weights cached: {runs}; its peak RSS {result.cold_start_peak_mib:.0f} MiB)"
        )
    if result.load_average:
        lines.append("load average    " + " ".join(f"{v:.2f}" for v in result.load_average) + " (other processes)")
    return "\n".join(lines)


def run_command(args: argparse.Namespace) -> int:
    """`rmbg bench`: the CLI front-end of `run_bench`."""
    if args.batch_size < 1 or args.runs < 0:
        raise ValueError("--batch-size must be at least 1 and --runs at least 0.")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.e2e:
        return _run_e2e_command(args)
    if args.engines:
        results = compare_engines(args.model, args.size, args.runs, args.synthetic)
        print(json.dumps([asdict(result) for result in results]) if args.json else format_comparison(results))
        return 0
    result = run_bench(
        model=args.model,
        device=args.device,
        precision=args.precision,
        size=args.size,
        batch_size=args.batch_size,
        runs=args.runs,
        synthetic=args.synthetic,
        check=not args.no_check,
        compiled=True if args.compile else None,
        fast_path=not args.plain,
        graphs=False if args.no_graphs else None,
        engine_name=args.engine,
    )
    if args.cold_start:
        runs = cold_start(args.model, args.device, args.precision, args.synthetic, args.cold_start)
        result.cold_start_s = [seconds for seconds, _ in runs]
        result.cold_start_peak_mib = max(peak for _, peak in runs)
    print(json.dumps(asdict(result)) if args.json else format_result(result))
    return 0


def _run_e2e_command(args: argparse.Namespace) -> int:
    request = build_request(
        output=args.output, fmt=args.format, compression=args.compression, refine_edges=args.refine_edges
    )
    results = run_e2e(args.e2e, request, args.model, args.device, args.precision, args.size, args.runs, args.synthetic)
    print(json.dumps([asdict(result) for result in results]) if args.json else format_e2e(results))
    return 0
