"""One GPU measurement run for the CUDA fast paths (issue #14): speed, accuracy and kernel choice.

Run from the repository root on a CUDA machine (no network needed; synthetic weights):

    python3 tools/gpu_check.py            # meant to finish within about 6 minutes without COMPILE
    DRY=1 python3 tools/gpu_check.py      # tiny sizes, 1-2 runs: checks the script itself, on a CPU too
    COMPILE=RMBG-1.4,RMBG-2.0 python3 tools/gpu_check.py  # adds torch.compile for those models
    KNOWN=0 python3 tools/gpu_check.py    # leaves out the variants BENCHMARKS.md already settled

COMPILE adds compile time that no deadline bounds (minutes): its models are compiled last,
in COMPILE_MODE (default "default"; also "max-autotune-no-cudagraphs"), and each compiled
network is also measured replayed from CUDA graphs. COMPILE_SWEEP=1 adds the compiled
network's batch sweep, and COMPILE_DYNAMIC=0 compiles each batch size statically. MODELS takes
a comma-separated subset of the three models.

For RMBG-2.0, RMBG-1.4 and BiRefNet_lite at 1024², batch 1: float32 eager (the accuracy
reference), float16 eager, float16 through GraphRunner (CUDA graphs, the default path)
and beside it: batch norms left unfolded, cuDNN's benchmark mode, and for the BiRefNets
attention forced to the memory-efficient kernel, the deformable sampling in fp16
(`grid_sample_native`) instead of float32, and the sampling fused into one Triton kernel
(`triton`, eager and replayed). Then each deformable kernel alone at RMBG-2.0's layer shapes,
the Triton one at several block shapes. With KNOWN=1 (default) also torchvision's
deformable-convolution kernel and the attention masks as strided as they were before.
Then images/s over batch sizes with graphs, which SDPA kernel the window attention can
use, and a profiler table of the top kernels. Every variant reports
median/min/max latency and mean/max |Δalpha| in 1/255 steps against float32 eager. Each
variant catches its own errors (OOM included), so one failure does not end the run.

Prints a compact table at the end and writes everything to $OUT/gpu_check.json (OUT
defaults to ./out). DEADLINE_S (default 330) skips the sections not yet started once that
many seconds have passed.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgremover import bench, synthetic  # noqa: E402 - the repository root must be importable first
from bgremover.engines.cuda_graphs import GraphRunner  # noqa: E402
from bgremover.engines.pytorch import prepare_network  # noqa: E402
from bgremover.nets.deform import deform_kernel_name, set_deform_kernel  # noqa: E402
from bgremover.nets.windows import WindowAttention  # noqa: E402

DRY = os.environ.get("DRY", "") == "1"
KNOWN = os.environ.get("KNOWN", "1") == "1"
COMPILE = tuple(filter(None, os.environ.get("COMPILE", "").split(",")))
COMPILE_MODE = os.environ.get("COMPILE_MODE", "default")
# COMPILE_DYNAMIC=0: one static compilation per input shape instead of Dynamo's dynamic batch
# dimension after the first new batch size (which lowered RMBG-1.4's batched rate on the H200).
COMPILE_DYNAMIC = None if os.environ.get("COMPILE_DYNAMIC", "") != "0" else False
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if DRY and DEVICE.type == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # so that the Triton kernel's rows run on CPU tensors too
FAST_DTYPE = torch.float16
SIZE = 64 if DRY else 1024
WARMUP = 1 if DRY else 3
RUNS = 2 if DRY else 20
REFERENCE_RUNS = 1 if DRY else 5
BATCH_RUNS = 1 if DRY else 5
BATCHES = (1, 2) if DRY else (1, 4, 8, 16, 32)
SWEEP_MODELS = ("RMBG-2.0", "RMBG-1.4", "BiRefNet_lite")
# (input channels, map size, kernel size) of RMBG-2.0's costliest deformable layers at 1024².
DEFORM_SHAPES = ((8, 16, 7), (8, 16, 3)) if DRY else ((64, 256, 7), (64, 256, 3), (64, 256, 1), (64, 128, 7))
# (pixels, channels) per program of the Triton kernel: the first is its default.
TRITON_BLOCKS = ((64, 64), (128, 32), (32, 64), (128, 64))
MODELS = tuple(os.environ.get("MODELS", "RMBG-2.0,RMBG-1.4,BiRefNet_lite").split(","))
DEADLINE_S = float(os.environ.get("DEADLINE_S", "330"))
CHECK_SEED = 20240601
START = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - START


def log(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", flush=True)


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def free_memory() -> None:
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(DEVICE)


def peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated(DEVICE) / 2**20 if DEVICE.type == "cuda" else None


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def timed(fn: Callable[[], torch.Tensor], warmup: int, runs: int) -> dict:
    """Latency of `fn` in ms after `warmup` calls: median, min, max of `runs`, synchronised around each call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": runs}


def delta_255(fast_alpha: torch.Tensor, reference_alpha: torch.Tensor) -> dict:
    delta = (fast_alpha.float() - reference_alpha).abs() * 255.0
    return {"mean_d255": delta.mean().item(), "max_d255": delta.max().item()}


@contextlib.contextmanager
def deform_kernel(name: str) -> Iterator[None]:
    previous = set_deform_kernel(name)
    try:
        yield
    finally:
        set_deform_kernel(previous)


@contextlib.contextmanager
def strided_masks() -> Iterator[None]:
    """Attention masks with the same values but last-dim stride != 1, as before this work (SDPA's math path)."""
    original = WindowAttention.attention_biases

    def strided(self, dtype, device):
        return original(self, dtype, device).transpose(-1, -2).contiguous().transpose(-1, -2)

    WindowAttention.attention_biases = strided
    try:
        yield
    finally:
        WindowAttention.attention_biases = original


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN times its algorithms per shape (during GraphRunner's warm-up, before capture)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


@contextlib.contextmanager
def only_attention_backend(name: str) -> Iterator[None]:
    """SDPA restricted to one backend (the graph captures whichever kernel ran)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, name)]):
        yield


# --- One model's variants ---------------------------------------------------------------------


class ModelCheck:
    """The synthetic network of one zoo model, its float32 reference alpha, and the variants measured on it."""

    def __init__(self, model: str):
        self.model = model
        start = time.perf_counter()
        network, self.info = synthetic.synthetic_network(model, DEVICE, torch.float32)
        self.build_s = time.perf_counter() - start
        self.is_birefnet = self.info.family == "birefnet"
        self.check_input = bench.fixed_input(1, SIZE, DEVICE, torch.float32, CHECK_SEED)
        self.results: list[dict] = []
        self.compiled: Callable | None = None
        self.network = network
        self.reference = self._alpha(network, self.check_input)
        self._record("fp32 eager (reference)", torch.float32, "eager", lambda: self._eager(torch.float32))
        # The float16 network has the float32 one's weights rounded: the same as synthetic_network in float16.
        half = network.to(FAST_DTYPE)
        self.unfolded = copy.deepcopy(half).to(memory_format=torch.channels_last)  # prepared but for the fold
        self.network = prepare_network(half)

    def _alpha(self, network: Callable, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            output = network(batch)
        return bench.alpha(output, self.info)

    def input_batch(self, batch: int = 1, dtype: torch.dtype = FAST_DTYPE) -> torch.Tensor:
        """The timing input (normal noise seeded by the size, as `rmbg bench` uses)."""
        return bench.fixed_input(batch, SIZE, DEVICE, dtype, SIZE)

    def _eager(self, dtype: torch.dtype) -> dict:
        batch = self.input_batch(dtype=dtype)
        with torch.inference_mode():
            timing = timed(lambda: self.network(batch), 1 if dtype == torch.float32 else WARMUP, self._runs(dtype))
        return timing | delta_255(self._alpha(self.network, self.check_input.to(dtype)), self.reference)

    def _runs(self, dtype: torch.dtype) -> int:
        return REFERENCE_RUNS if dtype == torch.float32 else RUNS

    def _graphed(self, network: Callable | None = None) -> dict:
        runner = GraphRunner(self.network if network is None else network)
        batch = self.input_batch()
        timing = timed(lambda: runner(batch), WARMUP, RUNS)
        accuracy = delta_255(self._alpha(runner, self.check_input.to(FAST_DTYPE)), self.reference)
        return timing | accuracy | {"mode": runner.mode, "capture_error": runner.capture_error}

    def _record(self, name: str, dtype: torch.dtype, runner: str, measure: Callable[[], dict]) -> None:
        """Runs one variant; any error, OOM included, is recorded instead of raised."""
        free_memory()
        entry = {"variant": name, "dtype": str(dtype).removeprefix("torch."), "runner": runner, "batch": 1}
        if self.is_birefnet:
            entry["deform"] = deform_kernel_name(DEVICE, dtype)
        log(f"{self.model}: {name}")
        try:
            entry |= measure()
        except Exception as error:
            entry["error"] = error_text(error)
            traceback.print_exc()
        entry["peak_mib"] = peak_mib()
        self.results.append(entry)

    def run_variants(self) -> None:
        self._record("fp16 eager", FAST_DTYPE, "eager", lambda: self._eager(FAST_DTYPE))
        self._record("fp16 graph (default)", FAST_DTYPE, "GraphRunner", self._graphed)
        self._record("fp16 graph, BN unfolded", FAST_DTYPE, "GraphRunner", lambda: self._graphed(self.unfolded))
        with cudnn_benchmark():
            self._record("fp16 graph, cudnn.benchmark", FAST_DTYPE, "GraphRunner", self._graphed)
        if self.is_birefnet:
            with only_attention_backend("EFFICIENT_ATTENTION"):
                self._record("fp16 graph, efficient attention", FAST_DTYPE, "GraphRunner", self._graphed)
            with deform_kernel("grid_sample_native"):
                self._record("fp16 graph, fp16 deform sampling", FAST_DTYPE, "GraphRunner", self._graphed)
            with deform_kernel("triton"):
                self._record("fp16 eager, triton deform", FAST_DTYPE, "eager", lambda: self._eager(FAST_DTYPE))
                self._record("fp16 graph, triton deform", FAST_DTYPE, "GraphRunner", self._graphed)
        if self.is_birefnet and KNOWN:
            with deform_kernel("torchvision"):
                self._record("fp16 eager, deform torchvision", FAST_DTYPE, "eager", lambda: self._eager(FAST_DTYPE))
                self._record("fp16 graph, deform torchvision", FAST_DTYPE, "GraphRunner", self._graphed)
            with strided_masks():
                before = "fp16 eager, strided masks (before)"
                self._record(before, FAST_DTYPE, "eager", lambda: self._eager(FAST_DTYPE))

    def run_compiled(self) -> None:
        self._record(f"fp16 compiled ({COMPILE_MODE})", FAST_DTYPE, "eager", self._compiled)
        if self.compiled is not None:
            graphed = lambda: self._graphed(self.compiled)  # noqa: E731
            self._record(f"fp16 compiled ({COMPILE_MODE}) + graph", FAST_DTYPE, "GraphRunner", graphed)

    def _compiled(self) -> dict:
        # Each Swin stage has its own shapes: more recompilations than Dynamo's default limit,
        # which would otherwise leave the later stages eager.
        torch._dynamo.config.recompile_limit = 64
        self.compiled = compiled = torch.compile(self.network, mode=COMPILE_MODE, dynamic=COMPILE_DYNAMIC)
        batch = self.input_batch()
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(batch)
        sync()
        first_s = time.perf_counter() - start
        with torch.inference_mode():
            timing = timed(lambda: compiled(batch), WARMUP, RUNS)
        result = timing | delta_255(self._alpha(compiled, self.check_input.to(FAST_DTYPE)), self.reference)
        return result | {"compile_first_call_s": first_s}

    def batch_sweep(self, network: Callable | None = None) -> list[dict]:
        """Images/s per batch size through one GraphRunner (buckets sharing its pool); stops at the first OOM."""
        runner, sweep = GraphRunner(self.network if network is None else network), []
        for size in BATCHES:
            free_memory()
            log(f"{self.model}: batch {size}")
            entry = {"batch": size, "deform": deform_kernel_name(DEVICE, FAST_DTYPE) if self.is_birefnet else None}
            try:
                batch = self.input_batch(size)
                entry |= timed(lambda b=batch: runner(b), 2, BATCH_RUNS)
                entry |= {"images_per_s": 1e3 * size / entry["median_ms"], "mode": runner.mode}
            except torch.cuda.OutOfMemoryError as error:
                entry["error"] = error_text(error)
                sweep.append(entry)
                break
            except Exception as error:
                entry["error"] = error_text(error)
                traceback.print_exc()
            entry["peak_mib"] = peak_mib()
            sweep.append(entry)
        return sweep


# --- Deformable kernels alone ----------------------------------------------------------------------


def _triton_with_blocks(pixels: int, channels: int, *args: torch.Tensor | int) -> torch.Tensor:
    """The Triton kernel with another block shape (its module constants, restored afterwards)."""
    from bgremover.nets import triton_deform

    saved = triton_deform._BLOCK_PIXELS, triton_deform._MAX_BLOCK_CHANNELS
    triton_deform._BLOCK_PIXELS, triton_deform._MAX_BLOCK_CHANNELS = pixels, channels
    try:
        return triton_deform.deform_conv2d(*args)
    finally:
        triton_deform._BLOCK_PIXELS, triton_deform._MAX_BLOCK_CHANNELS = saved


def deform_kernels() -> list[dict]:
    """Each deformable kernel alone at RMBG-2.0's layer shapes (batch 1, 256 output channels), the
    Triton kernel at several block shapes; `max_diff` is the largest difference from the default
    kernel's output."""
    from bgremover.nets.grid_deform import deform_conv2d

    dtype = FAST_DTYPE if DEVICE.type == "cuda" else torch.float32
    rows = []
    for channels, size, k in DEFORM_SHAPES:
        generator = torch.Generator().manual_seed(0)
        taps, padding = k * k, k // 2
        x = torch.randn(1, channels, size, size, generator=generator).to(DEVICE, dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        offset = (2.0 * torch.randn(1, 2 * taps, size, size, generator=generator)).to(DEVICE, dtype)
        mask = torch.rand(1, taps, size, size, generator=generator).to(DEVICE, dtype)
        weight = (torch.randn(256, channels, k, k, generator=generator) / (channels * taps) ** 0.5).to(DEVICE, dtype)
        arguments = (x, offset, weight, padding, mask)
        kernels = {
            "grid_sample": lambda a=arguments: deform_conv2d(*a),
            "grid_sample_native": lambda a=arguments: deform_conv2d(*a, sampling_dtype=dtype),
        }
        for pixels, block_channels in TRITON_BLOCKS:
            kernels[f"triton {pixels}x{block_channels}"] = lambda a=arguments, p=pixels, c=block_channels: (
                _triton_with_blocks(p, c, *a)
            )
        log(f"deformable kernels alone: {channels} channels, {size}², {k}x{k}")
        with torch.inference_mode():
            reference = deform_conv2d(*arguments).float()
            for name, run in kernels.items():
                entry = {"channels": channels, "size": size, "kernel_size": k, "kernel": name}
                try:
                    entry |= timed(run, WARMUP, RUNS)
                    entry["max_diff"] = (run().float() - reference).abs().max().item()
                except Exception as error:
                    entry["error"] = error_text(error)
                rows.append(entry)
    return rows


def deform_line(row: dict) -> str:
    k = row["kernel_size"]
    head = f"deform {k}x{k} {row['channels']:4} ch {row['size']:4}²  {row['kernel']:20}"
    if "error" in row:
        return f"{head} ERROR {row['error'][:90]}"
    return f"{head} {row['median_ms']:9.3f} ms  max diff {row['max_diff']:.4f}"


# --- Attention kernel eligibility ------------------------------------------------------------------


def record_attention_calls(network: Callable, batch: torch.Tensor, limit: int = 6) -> list[tuple]:
    """The arguments of the first SDPA call of each distinct shape and stride in one forward."""
    calls, seen = [], set()
    original = F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        key = (q.shape, q.stride(), None if attn_mask is None else (attn_mask.shape, attn_mask.stride()))
        if key not in seen and len(calls) < limit:
            seen.add(key)
            calls.append((q, k, v, attn_mask, kwargs))
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    F.scaled_dot_product_attention = recording
    try:
        with torch.inference_mode():
            network(batch)
    finally:
        F.scaled_dot_product_attention = original
    return calls


def can_use(q, k, v, mask) -> dict:
    """torch.backends.cuda.can_use_*_attention for these arguments, with the reasons it gives when not."""
    backends = torch.backends.cuda
    if not hasattr(backends, "SDPAParams"):
        return {"error": "torch.backends.cuda.SDPAParams not in this torch"}
    try:
        params = backends.SDPAParams(q, k, v, mask, 0.0, False, False)
    except TypeError:  # before enable_gqa was added
        params = backends.SDPAParams(q, k, v, mask, 0.0, False)
    result = {}
    for name in ("flash", "efficient", "cudnn"):
        probe = getattr(backends, f"can_use_{name}_attention", None)
        if probe is None:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result[name] = bool(probe(params, True))
            except Exception as error:
                result[name] = error_text(error)
                continue
        if not result[name]:
            result[f"{name}_why"] = " | ".join(str(w.message)[:200] for w in caught[:3])
    return result


def forced_backends(q, k, v, mask, kwargs: dict) -> dict:
    """Whether SDPA runs with only one backend allowed, per backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    result = {}
    for name in ("EFFICIENT_ATTENTION", "FLASH_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]), torch.inference_mode():
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
            result[name] = "ok"
        except Exception as error:
            result[name] = error_text(error)
    return result


def dispatched_op(q, k, v, mask, kwargs: dict) -> list[str]:
    """The aten attention ops SDPA's default dispatch runs for these arguments."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
        sync()
    names = {event.name for event in prof.events()}
    return sorted(n for n in names if "attention" in n and n != "aten::scaled_dot_product_attention")


def attention_report(check: ModelCheck) -> list[dict]:
    """Per distinct attention call of one fp16 forward: eligibility, forced backends, what runs by default.

    The first call is also checked with its mask made strided (the layout before this work).
    """
    calls = record_attention_calls(check.network, check.input_batch())
    report = []
    for index, (q, k, v, mask, kwargs) in enumerate(calls):
        entry = {
            "q": [list(q.shape), list(q.stride())],
            "mask": None if mask is None else [list(mask.shape), list(mask.stride()), str(mask.dtype)],
            "can_use": can_use(q, k, v, mask),
            "forced": forced_backends(q, k, v, mask, kwargs),
            "default_ops": dispatched_op(q, k, v, mask, kwargs),
        }
        if index == 0 and mask is not None:
            strided = mask.transpose(-1, -2).contiguous().transpose(-1, -2)
            ops = dispatched_op(q, k, v, strided, kwargs)
            entry["strided_mask"] = {"can_use": can_use(q, k, v, strided), "default_ops": ops}
        report.append(entry)
    return report


# --- Profile ----------------------------------------------------------------------------------------


def profile_table(check: ModelCheck, batch_size: int = 1) -> dict:
    """The top-10 kernels (by self device time; CPU ops on a CPU) of one fp16 eager forward."""
    from torch.profiler import ProfilerActivity, profile

    batch = check.input_batch(batch_size)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with torch.inference_mode():
        check.network(batch)
        sync()
        with profile(activities=activities) as prof:
            check.network(batch)
            sync()
    averages = prof.key_averages()
    keys = ("self_device_time_total", "self_cuda_time_total") if DEVICE.type == "cuda" else ("self_cpu_time_total",)
    for key in keys:
        try:
            table = averages.table(sort_by=key, row_limit=10, max_name_column_width=70)
        except Exception:  # the sort key's name changed across torch versions
            continue
        return {"sort_by": key, "table": table}
    return {"error": "no known sort key"}


# --- Run and report ----------------------------------------------------------------------------------


def environment() -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(DEVICE),
        "dry": DRY,
        "size": SIZE,
        "runs": RUNS,
        "batch_runs": BATCH_RUNS,
    }
    with contextlib.suppress(ImportError):
        import torchvision

        info["torchvision"] = torchvision.__version__
    if DEVICE.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(DEVICE), "capability": torch.cuda.get_device_capability(DEVICE)}
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    dtypes = (FAST_DTYPE, torch.bfloat16)
    info["deform_auto"] = {str(d).removeprefix("torch."): deform_kernel_name(DEVICE, d) for d in dtypes}
    return info


def section(report: dict, name: str, run: Callable[[], object]) -> None:
    """Runs one section unless past the deadline; records its result or its error."""
    if elapsed() > DEADLINE_S:
        report[name] = {"skipped": f"past DEADLINE_S={DEADLINE_S:.0f}"}
        log(f"skipping {name}: past the deadline")
        return
    try:
        report[name] = run()
    except Exception as error:
        report[name] = {"error": error_text(error)}
        traceback.print_exc()
    free_memory()


def check_model(report: dict, model: str) -> None:
    log(f"{model}: building synthetic network")
    check = ModelCheck(model)
    entry = report["models"][model] = {"build_s": check.build_s, "variants": check.results}
    check.run_variants()
    if model in SWEEP_MODELS:
        section(entry, "batch_sweep", check.batch_sweep)
    if model == "RMBG-2.0":
        section(report, "attention", lambda: attention_report(check))
        section(report, "profile", lambda: profile_table(check))
        # Where a batch's time goes: the throughput target is set at the best batch size.
        section(report, "profile_batch", lambda: profile_table(check, BATCHES[-2]))


def variant_line(model: str, v: dict) -> str:
    head = f"{model:14} {v['variant']:40} {v.get('deform', ''):18}"
    if "error" in v:
        return f"{head} ERROR {v['error'][:90]}"
    accuracy = f"{v['mean_d255']:.3f}/{v['max_d255']:.2f}"
    line = f"{head} {v.get('mode', 'eager'):10} {v['median_ms']:9.1f} {1e3 / v['median_ms']:7.1f} {accuracy:>13}"
    return line + (f"\n{'':15}capture failed: {v['capture_error'][:100]}" if v.get("capture_error") else "")


def sweep_line(model: str, b: dict) -> str:
    if "error" in b:
        return f"{model:14} batch {b['batch']:<3} with graphs: {b['error'][:90]}"
    speed = f"{b['images_per_s']:8.1f} img/s  {b['median_ms']:8.1f} ms per batch"
    return f"{model:14} batch {b['batch']:<3} with graphs: {speed} ({b['mode']})"


def print_summary(report: dict) -> None:
    env = report["env"]
    print(
        f"\ntorch {env['torch']}, torchvision {env.get('torchvision')}, {env.get('gpu', env['device'])}, {SIZE}x{SIZE}"
    )
    print(f"{'model':14} {'variant':40} {'deform':18} {'mode':10} {'median ms':>9} {'img/s':>7} {'dα mean/max':>13}")
    for model, entry in report["models"].items():
        if "error" in entry or "skipped" in entry:
            print(f"{model:14} {entry.get('error') or entry.get('skipped')}")
        for variant in entry.get("variants", []):
            print(variant_line(model, variant))
        sweep = entry.get("batch_sweep")
        for b in sweep if isinstance(sweep, list) else []:
            print(sweep_line(model, b))
    deform = report.get("deform_kernels")
    for row in deform if isinstance(deform, list) else []:
        print(deform_line(row))
    attention = report.get("attention")
    for call in attention if isinstance(attention, list) else []:
        mask = call["mask"] and call["mask"][0]
        forced = ", ".join(
            f"{name.lower()} {'ok' if result == 'ok' else 'no'}" for name, result in call["forced"].items()
        )
        can_use = ", ".join(f"{k} {v}" for k, v in call["can_use"].items() if not k.endswith("_why"))
        print(f"attention q {call['q'][0]} mask {mask}: runs {call['default_ops']}; only-one-backend: {forced}")
        print(f"    can_use: {can_use}; strided mask: {call.get('strided_mask', {}).get('default_ops', '-')}")
    for name in ("profile", "profile_batch"):
        profile = report.get(name)
        if isinstance(profile, dict) and "table" in profile:
            print(f"{name}:\n{profile['table']}")


def main() -> int:
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    report = {"env": environment(), "models": {}}
    log(f"torch {torch.__version__} on {report['env'].get('gpu', DEVICE)}; dry={DRY} compile={COMPILE}")
    for model in MODELS:
        if elapsed() > DEADLINE_S:
            report["models"][model] = {"skipped": f"past DEADLINE_S={DEADLINE_S:.0f}"}
            continue
        try:
            check_model(report, model)
        except Exception as error:
            report["models"].setdefault(model, {})["error"] = error_text(error)
            traceback.print_exc()
        free_memory()
    section(report, "deform_kernels", deform_kernels)
    write_report(out, report)
    for model in COMPILE:
        log(f"{model}: compiling ({COMPILE_MODE})")
        try:
            check = ModelCheck(model)
            check.run_compiled()
            if check.compiled is not None and os.environ.get("COMPILE_SWEEP") == "1":
                report["models"].setdefault(model, {})["compiled_sweep"] = check.batch_sweep(check.compiled)
            entry = report["models"].setdefault(model, {"variants": []})
            entry.setdefault("variants", []).extend(check.results[1:])
        except Exception as error:
            report["models"].setdefault(model, {})["compile_error"] = error_text(error)
            traceback.print_exc()
        free_memory()
    write_report(out, report)
    print_summary(report)
    return 0


def write_report(out: Path, report: dict) -> None:
    """Written before the compile runs too: a compile cut short by a timeout leaves the rest on disk."""
    report["elapsed_s"] = elapsed()
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    log(f"wrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    sys.exit(main())
