"""`rmbg remove --ray` against `rmbg remove` on one GPU machine (issue #12), end to end.

Run from the repository root on a CUDA machine with Ray importable (requirements-ray.txt;
no network needed: synthetic weights in a temporary Hugging Face cache):

    python3 tools/gpu_ray.py            # a folder of 12 MP JPEGs, RMBG-2.0, about three minutes
    DRY=1 python3 tools/gpu_ray.py      # small photos, BiRefNet_lite at 64 px, on the CPU: checks the script

Each command runs as a user would run it (`python3 rmbg.py remove ...` in a fresh process)
and reports its wall time (interpreter, Ray start, model load, every photo) and its steady
rate: photos between the first and the last output written, per second. Then the outputs of
the two commands are compared pixel by pixel. Writes $OUT/gpu_ray.json and prints a table last.
DEADLINE_S (default 240) skips the runs not yet started once that many seconds have passed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bgremover import synthetic  # noqa: E402 - the repository root must be importable first

DRY = os.environ.get("DRY", "") == "1"
MODEL = "BiRefNet_lite" if DRY else os.environ.get("MODEL", "RMBG-2.0")
DEVICE = "cpu" if DRY else "cuda"
WIDTH, HEIGHT = (320, 240) if DRY else (4032, 3024)
DISTINCT, PHOTOS = (2, 6) if DRY else (8, 64)
DEADLINE_S = float(os.environ.get("DEADLINE_S", "240"))
START = time.perf_counter()


def make_folder(folder: Path) -> None:
    """PHOTOS JPEGs, DISTINCT different ones repeated (decoding and encoding cost the same per copy)."""
    folder.mkdir(parents=True)
    encoded = []
    for seed in range(DISTINCT):
        buffer = io.BytesIO()
        synthetic.product_photo(WIDTH, HEIGHT, seed).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    for index in range(PHOTOS):
        (folder / f"photo{index:03d}.jpg").write_bytes(encoded[index % DISTINCT])


def run(name: str, arguments: list[str], env: dict) -> dict:
    """One `rmbg remove` command in a fresh process: wall time, steady rate, outputs."""
    if time.perf_counter() - START > DEADLINE_S:
        return {"name": name, "skipped": f"past DEADLINE_S={DEADLINE_S:.0f}"}
    print(f"[{time.perf_counter() - START:6.1f}s] {name}: rmbg remove {' '.join(arguments)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "rmbg.py", "remove", *arguments], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    out = Path(arguments[arguments.index("-o") + 1])
    times = sorted(p.stat().st_mtime for p in out.glob("*.png")) if out.exists() else []
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    entry = {"name": name, "returncode": done.returncode, "wall_s": wall, "outputs": len(times)}
    entry["photos_per_s_wall"] = len(times) / wall
    entry["photos_per_s_steady"] = (len(times) - 1) / span if span else None
    if done.returncode:
        entry["stderr_tail"] = done.stderr[-1500:]
    print(f"    {json.dumps(entry)[:400]}", flush=True)
    return entry


def compare(first: Path, second: Path, names: list[str]) -> dict:
    """Largest per-channel difference between the two commands' outputs, over `names`."""
    worst = 0
    for name in names:
        a = np.asarray(Image.open(first / name), dtype=np.int16)
        b = np.asarray(Image.open(second / name), dtype=np.int16)
        worst = max(worst, int(np.abs(a - b).max()) if a.shape == b.shape else 256)
    return {"compared": len(names), "max_difference": worst}


def main() -> int:

    out = Path(os.environ.get("OUT", "out"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"model": MODEL, "device": DEVICE, "photo": f"{WIDTH}x{HEIGHT}", "photos": PHOTOS, "dry": DRY}
    report["cpu_count"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="rmbg-ray-") as temporary:
        root = Path(temporary)
        synthetic.write_synthetic_cache(MODEL, root / "hf" / "hub")
        make_folder(root / "photos")
        path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
        env = os.environ | synthetic.hub_environment(root / "hf") | {"PYTHONPATH": path}
        common = ["--model", MODEL, "--device", DEVICE, "-q"] + (["--size", "64"] if DRY else [])
        photos = str(root / "photos")
        runs = [
            ("single process, batch 1", [photos, "-o", str(root / "single"), *common]),
            ("ray local, 1 GPU actor, batch 1", ["--ray", "local", photos, "-o", str(root / "ray"), *common]),
            (
                "ray local, 1 GPU actor, batch 4",
                ["--ray", "local", photos, "-o", str(root / "ray4"), *common, "--batch-size", "4"],
            ),
        ]
        report["runs"] = [run(name, arguments, env) for name, arguments in runs]
        names = [f"photo{index:03d}.png" for index in range(0, PHOTOS, max(1, PHOTOS // 4))]
        if (root / "ray" / names[0]).exists() and (root / "single" / names[0]).exists():
            report["same_pixels"] = compare(root / "single", root / "ray", names)
    (out / "gpu_ray.json").write_text(json.dumps(report, indent=1))
    print(f"\n{MODEL} on {DEVICE}, {PHOTOS} photos of {WIDTH}x{HEIGHT}, {report['cpu_count']} CPUs")
    for entry in report["runs"]:
        if "skipped" in entry:
            print(f"{entry['name']:34} skipped")
            continue
        steady = entry["photos_per_s_steady"] or 0.0
        print(
            f"{entry['name']:34} rc {entry['returncode']} wall {entry['wall_s']:6.1f} s "
            f"{entry['outputs']:3d} outputs  {entry['photos_per_s_wall']:5.2f}/s wall  {steady:5.2f}/s steady"
        )
    print(f"single vs ray outputs: {report.get('same_pixels')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
