"""How much memory a running `rmbg serve` takes per pixel under each output option, and what it
keeps after failed decodes: the numbers behind the memory budget in docs/web.md.

Start a server first (its process id is what is measured; it must run as your user, since the
peak is read from /proc/PID/status after resetting it through /proc/PID/clear_refs):

    rmbg serve --model RMBG-1.4 --size 256 --port 7860 &
    python tools/memory_per_pixel.py --url http://127.0.0.1:7860 --pid $! --megapixels 25
    python tools/memory_per_pixel.py --url http://127.0.0.1:7860 --pid $! --failed 60 --clients 4

The first prints, per option, the peak resident size over idle in bytes per input pixel and what
admission charges for it; the second sends truncated PNGs whose header claims 9999x9999 and
prints the resident size after them.
"""

from __future__ import annotations

import argparse
import io
import math
import struct
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgremover.service.admission import bytes_per_pixel  # noqa: E402 - the repository root must be importable first
from bgremover.service.options import build_request  # noqa: E402


@dataclass
class Case:
    """One output option: how its input file is made and the form fields sent with it."""

    name: str
    make: Callable[[int, int], bytes]
    fields: dict[str, str] = field(default_factory=dict)


def _picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A subject on a background (so crop has something to crop), cheap to make at 100 MP."""
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    grey = np.broadcast_to(ramp, (height, width)).copy()
    grey[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 230
    image = Image.fromarray(grey)
    return image.convert(mode) if mode != "L" else image


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def rgb_png(width: int, height: int) -> bytes:
    return _saved(_picture(width, height), "PNG", compress_level=1)


def cmyk_jpeg(width: int, height: int) -> bytes:
    return _saved(_picture(width, height, "CMYK"), "JPEG", quality=80)


def exif_rotated_jpeg(width: int, height: int) -> bytes:
    """Stored lying on its side, with EXIF orientation 6 (turn 90 degrees clockwise to show)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _saved(_picture(height, width), "JPEG", quality=80, exif=exif)


def grey16_png(width: int, height: int) -> bytes:
    values = np.asarray(_picture(width, height, "L"), dtype=np.uint16) * 257
    return _saved(Image.fromarray(values), "PNG", compress_level=1)  # mode I;16


CASES = (
    Case("default PNG (RGB)", rgb_png),
    Case("CMYK JPEG", cmyk_jpeg),
    Case("EXIF-rotated JPEG", exif_rotated_jpeg),
    Case("16-bit grey PNG", grey16_png),
    Case("format=webp", rgb_png, {"format": "webp"}),
    Case("crop=true", rgb_png, {"crop": "true"}),
    Case("refine_edges=true", rgb_png, {"refine_edges": "true"}),
    Case("output=color", rgb_png, {"output": "color", "bg_color": "#00ff00"}),
    Case("output=mask", rgb_png, {"output": "mask"}),
)


def truncated_png(width: int = 9999, height: int = 9999, kept: int = 100_000) -> bytes:
    """A PNG whose header claims `width` x `height` RGB but whose pixel data stops after `kept`
    compressed bytes: a decoder allocates the whole image before it finds out."""
    noise = np.random.default_rng(0).integers(0, 256, (64, width * 3 + 1), dtype=np.uint8)
    noise[:, 0] = 0  # filter type "none" for every row
    data = zlib.compress(noise.tobytes(), 0)[:kept]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak since the last reset), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}


def reset_peak(pid: int) -> None:
    """Starts VmHWM over from the current resident size."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def post(url: str, data: bytes, fields: dict[str, str], name: str = "input") -> requests.Response:
    return requests.post(url + "/api/remove", files={"file": (name, data)}, data=fields, timeout=600)


def settled_rss(pid: int, seconds: float = 1.0) -> int:
    """The resident size (KiB) once the server has had `seconds` to hand memory back."""
    time.sleep(seconds)
    return memory_kib(pid)["VmRSS"]


def peak_over_idle(url: str, pid: int, data: bytes, fields: dict[str, str]) -> tuple[int, int]:
    """Peak bytes over the idle resident size while the server answers one request, and its status."""
    idle = settled_rss(pid)
    reset_peak(pid)
    status = post(url, data, fields).status_code
    return (memory_kib(pid)["VmHWM"] - idle) * 1024, status


def charged_bytes_per_pixel(fields: dict[str, str]) -> int:
    """What admission charges per pixel for a request with these form fields."""
    options = {name: value for name, value in fields.items() if name != "format"}
    return bytes_per_pixel(build_request(**options, fmt=fields.get("format", "png")))


def options_table(url: str, pid: int, megapixels: float, only: str = "") -> None:
    side = round(math.sqrt(megapixels * 1e6))
    pixels = side * side
    post(url, rgb_png(256, 256), {})  # everything warmed up once
    fixed, _ = peak_over_idle(url, pid, rgb_png(512, 512), {})
    print(f"a 512x512 request: {fixed / 1e6:.0f} MB over idle (what does not grow with the image)")
    print(f"{side}x{side} inputs ({pixels / 1e6:.1f} MP); peak resident size over idle per input pixel")
    print(f"{'option':22} {'status':>6} {'peak MB':>8} {'B/px':>6} {'charged':>8}")
    for case in [case for case in CASES if only.lower() in case.name.lower()]:
        data = case.make(side, side)
        peak, status = peak_over_idle(url, pid, data, case.fields)
        charged = charged_bytes_per_pixel(case.fields)
        print(f"{case.name:22} {status:6} {peak / 1e6:8.0f} {peak / pixels:6.1f} {charged:8d}", flush=True)


def failed_decodes(url: str, pid: int, count: int, clients: int) -> None:
    data = truncated_png()
    post(url, rgb_png(256, 256), {})
    idle = settled_rss(pid)
    reset_peak(pid)
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: post(url, data, {}).status_code, range(count)))
    after, peak = memory_kib(pid)["VmRSS"], memory_kib(pid)["VmHWM"]
    print(f"{count} truncated 9999x9999 PNGs ({len(data) / 1e3:.0f} kB) from {clients} client(s)")
    print(f"statuses: {sorted(set(statuses))}")
    print(f"idle {idle / 1024:.0f} MB, right after {after / 1024:.0f} MB, peak {peak / 1024:.0f} MB")
    print(f"after 5 s idle: {settled_rss(pid, 5.0) / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860", help="the server's address")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id")
    parser.add_argument("--megapixels", type=float, default=25.0, help="size of the square inputs")
    parser.add_argument("--only", default="", help="only the options whose name contains this")
    parser.add_argument("--failed", type=int, default=0, help="send this many truncated PNGs instead")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for --failed")
    args = parser.parse_args()
    if args.failed:
        failed_decodes(args.url, args.pid, args.failed, args.clients)
    else:
        options_table(args.url, args.pid, args.megapixels, args.only)


if __name__ == "__main__":
    main()
