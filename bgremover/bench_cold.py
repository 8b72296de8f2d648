"""`rmbg bench --cold-start N`: what a fresh process costs before its first result, in stages.

Each run is a new interpreter that imports the pipeline and the runtime that `auto` (or
`--engine`) picks, loads the model, compiles it for the input size and runs one image
through the whole pipeline (resize, network, mask). The stages are read off one clock
shared with the parent, so the first one includes the interpreter's own start:

- imports: interpreter, the project's modules and the runtime (PyTorch or OpenVINO);
- load: finding the checkpoint, and reading it where the engine needs it;
- compile: OpenVINO's compile for the size (converting first, if this size was never
  converted here); nothing for PyTorch's eager engine;
- first inference: one image of the input size through `Remover.predict`.

The child also says whether PyTorch was imported: a run on OpenVINO's cached export must not.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

from .errors import ChildFailed, last_line

STAGES = ("imports", "load", "compile", "first_inference")

_CHILD = """
import importlib, json, resource, sys, time
model, device, precision, runtime, size, spawned = sys.argv[1:7]
from bgremover.engines import choose_runtime, load_engine, pick_device
from bgremover.hub import identify_model
from bgremover.pipeline import Remover
chosen = choose_runtime(runtime or None, pick_device(device), identify_model(model).info.family, precision)
importlib.import_module("openvino" if chosen == "openvino" else "torch")
marks = [float(spawned), time.time()]
remover = Remover(load_engine(model, device, precision, runtime=runtime or None), int(size) or None)
marks.append(time.time())
side = remover.inference_size
remover.engine.prepare((side, side))
marks.append(time.time())
import numpy as np
from PIL import Image
pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
remover.predict([Image.fromarray(pixels)])
marks.append(time.time())
print(json.dumps({
    "stages": [b - a for a, b in zip(marks, marks[1:])],
    "engine": remover.engine.describe(),
    "torch_imported": "torch" in sys.modules,
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}), flush=True)
"""


@dataclass
class ColdStart:
    """One fresh process: seconds per stage (STAGES), its engine, whether it imported PyTorch, its peak RSS."""

    stages: dict[str, float]
    engine: str
    torch_imported: bool
    peak_mib: float

    @property
    def total_s(self) -> float:
        return sum(self.stages.values())


def _one(model: str, device: str, precision: str, runtime: str, size: int) -> ColdStart:
    command = [sys.executable, "-c", _CHILD, model, device, precision, runtime, str(size), repr(time.time())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ChildFailed(f"the cold-start process failed: {last_line(done.stderr)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    stages = dict(zip(STAGES, report.pop("stages"), strict=True))
    return ColdStart(stages=stages, **report)


def cold_start(
    model: str, device: str, precision: str, runtime: str | None, size: int | None, synthetic: bool, repeats: int
) -> list[ColdStart]:
    """`repeats` fresh processes, one after another. With `synthetic`, they load the synthetic
    checkpoint of `synthetic_hub` offline, so the real loading path is measured."""
    if synthetic:
        from .synthetic import synthetic_hub

    with synthetic_hub(model) if synthetic else nullcontext(model) as name:
        return [_one(name, device or "auto", precision, runtime or "", size or 0) for _ in range(repeats)]


def format_cold_start(runs: list[ColdStart]) -> str:
    """Median seconds per stage, and each run's total (the first converts a size OpenVINO has not yet)."""
    medians = {stage: statistics.median(run.stages[stage] for run in runs) for stage in STAGES}
    split = ", ".join(f"{stage.replace('_', ' ')} {seconds:.2f}" for stage, seconds in medians.items())
    totals = ", ".join(f"{run.total_s:.2f}" for run in runs)
    torch_line = "yes" if any(run.torch_imported for run in runs) else "no"
    return (
        f"cold start      {statistics.median(run.total_s for run in runs):8.2f} s   (median of {len(runs)} fresh "
        f"processes to a first result: {split}; runs {totals}; {runs[0].engine}; PyTorch imported: {torch_line}; "
        f"peak RSS {max(run.peak_mib for run in runs):.0f} MiB)"
    )
