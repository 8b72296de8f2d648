"""Scale-out measurements for BENCHMARKS.md ("Scale-out (Ray)"): `rmbg remove --ray` against
`rmbg remove` on one folder, and the per-stage seconds that the GPU projection is built from.

Run from the repository root with Ray installed (requirements-ray.txt):

    python3 tools/scale_bench.py setup /tmp/scale     # synthetic BiRefNet_lite cache + 20 photos; prints the commands
    python3 tools/scale_bench.py rate /tmp/scale/out  # images/s between the first and the last output written
    python3 tools/scale_bench.py stages /tmp/scale    # decode, inference, finish+encode: seconds per image
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

MODEL, SIZE, PHOTOS = "BiRefNet_lite", 512, 20
FORMATS = ("jpg", "png", "webp")


def setup(root: Path) -> None:
    """The synthetic model in `root/hf` and 20 photos of 1600x1200 (JPEG, PNG, WebP) in `root/photos`."""
    from bgremover import synthetic

    synthetic.write_synthetic_cache(MODEL, root / "hf" / "hub")
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(PHOTOS):
        synthetic.product_photo(1600, 1200, index).save(folder / f"photo{index:02d}.{FORMATS[index % 3]}", quality=90)
    common = f"--model {MODEL} --size {SIZE} --device cpu -q"
    print(f"export HF_HOME={root / 'hf'} HF_HUB_OFFLINE=1")
    print(f"time python rmbg.py remove {folder} -o {root}/out-single {common}")
    print(f"time python rmbg.py remove --ray local {folder} -o {root}/out-ray {common} --ray-actors 1")


def rate(out: Path) -> None:
    """Steady throughput: images between the first and the last output written, per second."""
    times = sorted(p.stat().st_mtime for p in out.rglob("*.png"))
    span = times[-1] - times[0]
    print(f"{len(times)} outputs, {span:.1f} s from first to last: {(len(times) - 1) / span:.2f} images/s steady")


def stages(root: Path) -> None:
    """Median seconds per image of each stage, one image at a time, in this process."""
    import os

    from bgremover import synthetic
    from bgremover.results import Timings
    from bgremover.service.config import ServiceConfig, build_service
    from bgremover.service.options import build_request
    from bgremover.service.steps import decode_input, finish_and_encode

    os.environ.update(synthetic.hub_environment(root / "hf"))

    remover, request = build_service(ServiceConfig(MODEL, "cpu", size=SIZE)).pool.get(), build_request()
    rows = []
    for path in sorted((root / "photos").iterdir()):
        started = time.perf_counter()
        decoded = decode_input(path.read_bytes(), path.name)
        decoded_at = time.perf_counter()
        mask = remover.predict([decoded.rgb], Timings())[0]
        inferred_at = time.perf_counter()
        finish_and_encode(decoded, mask, request, Timings())
        rows.append((decoded_at - started, inferred_at - decoded_at, time.perf_counter() - inferred_at))
    for name, values in zip(("decode", "inference", "finish+encode"), zip(*rows, strict=True), strict=True):
        print(f"{name:14s} median {statistics.median(values):.3f} s/image (min {min(values):.3f})")


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    {"setup": setup, "rate": rate, "stages": stages}[command](folder)
