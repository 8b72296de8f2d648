"""int8 IS-Net on the OpenVINO engine (`--precision int8`, NNCF) against its bf16 and fp32, on real
photos (BENCHMARKS.md, "int8 IS-Net"; docs/engines.md): the product's own engines, as a user gets them.

Masks: each precision's cut-out masks of scikit-image's astronaut, chelsea and coffee (none of
them among the calibration photos, engines/openvino_int8.py) against fp32's, at each photo's
size. Speed: one 1024² forward of each engine, run in turn (A B C A B C) so that load changes
hit all alike; the median of `--runs`.

    pip install '.[int8]'
    python tools/int8_isnet.py [--model isnet-general-use] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from PIL import Image
from skimage import data

from bgremover.engines import load_engine
from bgremover.pipeline import Remover

EVALUATION = ("astronaut", "chelsea", "coffee")
PRECISIONS = ("fp32", "bf16", "int8")


def compare(reference: list[np.ndarray], other: list[np.ndarray]) -> str:
    """Per photo: IoU of α>127, mean and max |Δα| in 1/255 steps."""
    rows = []
    for name, a, b in zip(EVALUATION, reference, other, strict=True):
        fa, fb = a > 127, b > 127
        delta = np.abs(a.astype(int) - b.astype(int))
        iou = (fa & fb).sum() / max((fa | fb).sum(), 1)
        rows.append(f"{name} IoU {iou:.4f} mean {delta.mean():.2f} max {delta.max()}")
    return "; ".join(rows)


def timed(removers: dict[str, Remover], runs: int) -> dict[str, float]:
    """Median seconds per 1024² forward of each engine, the engines in turn."""
    sample = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024), dtype=np.float32)
    times: dict[str, list[float]] = {name: [] for name in removers}
    for _ in range(runs):
        for name, remover in removers.items():
            with remover.engine.lock:
                started = time.perf_counter()
                remover.engine(sample)
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    removers = {}
    for precision in PRECISIONS:  # the first int8 load quantises (about a minute), then it is cached
        started = time.perf_counter()
        removers[precision] = Remover(load_engine(args.model, "cpu", precision, runtime="openvino"))
        removers[precision].engine.prepare((1024, 1024))
        print(f"{precision}: ready in {time.perf_counter() - started:.1f} s ({removers[precision].engine.describe()})")
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in EVALUATION]
    masks = {name: [np.asarray(mask) for mask in remover.predict(photos)] for name, remover in removers.items()}
    for name in ("bf16", "int8"):
        print(f"{name} vs fp32: {compare(masks['fp32'], masks[name])}")
    speeds = timed(removers, args.runs)
    print("median s per 1024² forward: " + ", ".join(f"{name} {s:.3f}" for name, s in speeds.items()))
    print(f"int8 speed-up over bf16: {speeds['bf16'] / speeds['int8']:.2f}x; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
