"""`rmbg bench --e2e IMAGE`: what a user waits for, not the network alone.

Each image goes through the service path of every front end (decode, queue, infer, finish,
encode), built by the same `build_service`, with the output options given; the two resizes
inside `infer` are timed apart, so the report says what a faster network would not shorten.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bench import BenchRun, synchronize
from .imaging import png
from .pipeline import Remover
from .service.config import ServiceConfig, build_service
from .service.options import RemovalRequest
from .service.removal import RemovalService
from .synthetic import synthetic_hub

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
    engine: str  # the runtime that ran, as `Engine.describe` says it
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


def run_e2e(
    images: list[str | Path], request: RemovalRequest, config: ServiceConfig, runs: int = 5, synthetic: bool = False
) -> list[EndToEndResult]:
    """Each image once to warm up, then `runs` times through `RemovalService.remove`, as the front ends call it
    (the service built by the same `build_service`, so engine, precision and limits are theirs too)."""
    if runs < 1:
        raise ValueError("--e2e needs --runs of at least 1.")
    with synthetic_hub(config.model) if synthetic else nullcontext(config.model) as name:
        service = build_service(config.with_model(name))
        service.pool.get()
        return [_time_image(service, Path(image), request, runs, synthetic) for image in images]


def _time_image(
    service: RemovalService, path: Path, request: RemovalRequest, runs: int, synthetic: bool
) -> EndToEndResult:
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
        engine=service.remover(request).engine.describe(),
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
            synchronize(remover.device)
            inputs.append(time.perf_counter() - started)
            if isinstance(batch, np.ndarray):  # an engine fed arrays: the NumPy upsampling
                prediction = np.zeros((1, *batch.shape[-2:]), np.float32)
            else:
                prediction = torch.zeros(batch.shape[-2:], device=str(remover.device))[None]
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
        f"{first.model} ({source}) at {first.size} px on {first.engine}, {first.threads} threads, "
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


def run_e2e_command(run: BenchRun, config: ServiceConfig, request: RemovalRequest) -> int:
    """`rmbg bench --e2e`: `run.e2e`'s images through the service of `config`, finished as `request` asks."""
    if run.threads:
        torch.set_num_threads(run.threads)
    results = run_e2e(list(run.e2e), request, config, run.runs, run.synthetic)
    print(json.dumps([asdict(result) for result in results]) if run.json else format_e2e(results))
    return 0
