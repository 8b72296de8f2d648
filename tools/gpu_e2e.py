"""End-to-end measurements through the removal service on a GPU (issues #11 and #14).

Run from the repository root on a CUDA machine (synthetic RMBG-2.0 weights in a temporary
Hugging Face cache, offline):

    python3 tools/gpu_e2e.py              # about two minutes on an H100
    DRY=1 python3 tools/gpu_e2e.py        # tiny sizes on a CPU: checks the script itself

What it reports, each as the median of several runs after a warm-up:
- one request end to end (`RemovalService.remove`: decode, queue, infer, finish, encode)
  for 640x480, 1920x1080 and 4032x3024 JPEGs, as a cut-out PNG, and the 12 MP one also with
  refined edges, and the refinement alone for a subject's matte and a mask soft everywhere;
- a folder of 12 MP photos through `remove_many` (what `rmbg remove DIR` runs): photos/s at
  batches 1, 4 and 8 with an I/O thread per core, and at batch 1 with 4 and 8 I/O threads;
- 32 concurrent single requests with micro-batching off and on: images/s.
Writes $OUT/gpu_e2e.json and prints a table last.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgremover import synthetic  # noqa: E402 - the repository root must be importable first
from bgremover.imaging import composing  # noqa: E402
from bgremover.service.config import ServiceConfig, build_service  # noqa: E402
from bgremover.service.options import build_request  # noqa: E402
from bgremover.service.removal import Item, RemovalService  # noqa: E402

DRY = os.environ.get("DRY", "") == "1"
MODEL = os.environ.get("MODEL", "BiRefNet_lite" if DRY else "RMBG-2.0")
DEVICE = "cuda" if torch.cuda.is_available() and not DRY else "cpu"
SIZE = 64 if DRY else None  # None: the model's own 1024
PHOTOS = [(160, 120), (320, 180), (640, 480)] if DRY else [(640, 480), (1920, 1080), (4032, 3024)]
RUNS = 2 if DRY else 7
FOLDER = 4 if DRY else 32
CONCURRENT = 4 if DRY else 32


def photo(width: int, height: int) -> bytes:
    """A JPEG like a product shot (`synthetic.product_photo`, stripes 7 pixels apart)."""
    buffer = io.BytesIO()
    synthetic.product_photo(width, height, seed=2).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def median_split(service: RemovalService, data: bytes, request) -> dict:
    service.remove(data, request)  # warm-up: this shape's graph capture, cuDNN choices
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        removal = service.remove(data, request)
        runs.append({**removal.timings.as_dict(), "total": time.perf_counter() - started})
    split = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
    return {**split, "bytes": len(removal.data), "engine": service.pool.get().engine.describe()}


def refinement_alone(data: bytes) -> dict:
    """Milliseconds of `refined_cutout` on the device alone (median), for a subject's matte and
    for a mask soft everywhere, which is what synthetic weights give the full pipeline."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    mattes = {"subject": synthetic.synthetic_matte(*image.size), "soft": Image.new("L", image.size, 128)}
    medians = {}
    for name, matte in mattes.items():
        composing.refined_cutout(image, matte, DEVICE)
        runs = []
        for _ in range(RUNS):
            started = time.perf_counter()
            composing.refined_cutout(image, matte, DEVICE)
            runs.append(time.perf_counter() - started)
        medians[name] = statistics.median(runs) * 1000
    return medians


def folder_rate(service: RemovalService, data: bytes, batch_size: int) -> dict:
    items = [Item(f"{i}.jpg", data) for i in range(FOLDER)]
    request = build_request()
    list(service.remove_many(items[:batch_size], request, batch_size))  # warm-up at this batch size
    started = time.perf_counter()
    done = sum(1 for removal in service.remove_many(items, request, batch_size) if removal.data)
    seconds = time.perf_counter() - started
    threads = service.io_threads
    return {"batch_size": batch_size, "io_threads": threads, "photos": done, "photos_per_s": done / seconds}


def concurrent_rate(served: RemovalService, data: bytes, window_ms: int) -> dict:
    service = served.sharing_pool(batch_window=window_ms / 1000)
    request = build_request(fmt="png")
    service.remove(data, request)
    seen: list[float] = []

    def one() -> None:
        seen.append(service.remove(data, request).timings.infer)

    threads = [threading.Thread(target=one) for _ in range(CONCURRENT)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"window_ms": window_ms, "requests": CONCURRENT, "seconds": seconds, "images_per_s": CONCURRENT / seconds}


def main() -> int:
    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "device": DEVICE, "model": MODEL, "dry": DRY}
    if DEVICE == "cuda":
        report["gpu"] = torch.cuda.get_device_name()
    report["cpu_count"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="rmbg-e2e-") as home, synthetic.synthetic_hub(MODEL, Path(home)):
        config = ServiceConfig(MODEL, DEVICE, size=SIZE, batch_window=0.0, io_threads=os.cpu_count() or 2)
        service = build_service(config)
        photos = {f"{w}x{h}": photo(w, h) for w, h in PHOTOS}
        report["single"] = {name: median_split(service, data, build_request()) for name, data in photos.items()}
        largest = list(photos)[-1]
        report["refine_edges"] = median_split(service, photos[largest], build_request(refine_edges=True))
        report["refinement_ms"] = refinement_alone(photos[largest])
        report["folder"] = [folder_rate(service, photos[largest], b) for b in (1, 4, 8)]
        # Fewer I/O threads than cores: do decoding and encoding threads compete with PyTorch's and
        # the deflate pool's on the same cores?
        for threads in sorted({4, 8} - {service.io_threads}):
            fewer = service.sharing_pool(io_threads=threads)
            report["folder"].append(folder_rate(fewer, photos[largest], 1))
        small = photos[list(photos)[0]]
        report["concurrent"] = [concurrent_rate(service, small, window) for window in (0, 5)]
    (out / "gpu_e2e.json").write_text(json.dumps(report, indent=1))
    print(f"torch {report['torch']} on {report.get('gpu', DEVICE)}, {MODEL}, {report['cpu_count']} CPUs")
    for name, split in [*report["single"].items(), (f"{largest} refine", report["refine_edges"])]:
        stages = " ".join(f"{k} {split[k] * 1000:7.1f}" for k in ("decode", "queue", "infer", "finish", "encode"))
        print(f"{name:>16}: total {split['total'] * 1000:7.1f} ms | {stages} | {split['bytes'] / 1e6:.1f} MB")
    refinement = ", ".join(f"{name} matte {ms:.1f} ms" for name, ms in report["refinement_ms"].items())
    print(f"refinement alone at {largest}: {refinement}")
    for row in report["folder"]:
        rate = f"{row['photos_per_s']:.2f} photos/s"
        print(f"folder of {largest}, batch {row['batch_size']}, {row['io_threads']} I/O threads: {rate}")
    for row in report["concurrent"]:
        print(f"{CONCURRENT} concurrent requests, window {row['window_ms']} ms: {row['images_per_s']:.1f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
