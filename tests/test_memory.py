"""Memory seen from outside a real server: failed decodes give their memory back at once, and a
request's peak stays within what admission charges for its options (docs/web.md, "Memory").

The server's resident size is read from /proc/PID/status; its peak (VmHWM) is restarted before
each request through /proc/PID/clear_refs.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from live import MODEL, SERVER_ARGS, run_server, sample_image
from PIL import Image

from bgremover.service.admission import BUDGET_BYTES_PER_PIXEL, bytes_per_pixel
from bgremover.service.options import build_request

MB = 1024 * 1024
# What a request needs whatever its image's size (the network's activations at 256 px, the
# encoder's threads): the tolerance on top of the per-pixel charge. Measured at about 100 MB.
FIXED_BYTES = 160 * MB
SIDE = 4000  # the largest image the option server accepts (RMBG_MAX_PIXELS), 16 MP


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak since the last reset), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return {
            line.split(":")[0]: int(line.split()[1]) * 1024 for line in status if line.startswith(("VmRSS", "VmHWM"))
        }


def settled(pid: int) -> int:
    time.sleep(1.0)
    return memory(pid)["VmRSS"]


def reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def truncated_png(side: int = 9999, kept: int = 100_000) -> bytes:
    """A 100 kB PNG whose header claims side x side RGB but whose pixel data stops early."""
    rows = np.random.default_rng(0).integers(0, 256, (64, side * 3 + 1), dtype=np.uint8)
    rows[:, 0] = 0  # filter "none"

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    data = zlib.compress(rows.tobytes(), 0)[:kept]
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def picture(mode: str = "RGB", width: int = SIDE, height: int = SIDE) -> Image.Image:
    """A bright square on a ramp: a subject for crop, cheap to make at 16 MP."""
    grey = np.broadcast_to(np.linspace(0, 255, width, dtype=np.uint8), (height, width)).copy()
    grey[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 230
    image = Image.fromarray(grey)
    return image if mode == "L" else image.convert(mode)


def grey16_png() -> bytes:
    return saved(Image.fromarray(np.asarray(picture("L"), dtype=np.uint16) * 257), "PNG", compress_level=1)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees clockwise to show
    return saved(picture(), "JPEG", quality=80, exif=exif)


@pytest.mark.slow
def test_failed_large_decodes_give_their_memory_back_at_once(tmp_path, hf_home) -> None:
    """Twenty truncated '100 MP' PNGs in a row through the API, then ten through the UI: each gets
    its message, and the server stays within 300 MB of idle (it kept ~75 MB per request before)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bomb = truncated_png()
    upload = tmp_path / "huge.png"
    upload.write_bytes(bomb)
    with run_server(tmp_path, hf_home, *SERVER_ARGS) as server:
        pid = server.process.pid
        assert server.remove(saved(sample_image(), "PNG")).status_code == 200
        idle = settled(pid)
        for _ in range(20):
            response = server.remove(bomb, name="huge.png")
            assert response.status_code == 415 and "truncated" in response.json()["error"]
        assert settled(pid) - idle <= 300 * MB
        client = Client(server.url + "/", verbose=False)
        for _ in range(10):
            with pytest.raises(AppError, match="huge.png: the image data is truncated"):
                client.predict(handle_file(str(upload)), MODEL, api_name="/remove")
        assert settled(pid) - idle <= 300 * MB
        assert server.get("/health").status_code == 200


OPTION_CASES = {
    "default PNG": (lambda: saved(picture(), "PNG", compress_level=1), {}),
    "CMYK JPEG": (lambda: saved(picture("CMYK"), "JPEG", quality=80), {}),
    "EXIF-rotated JPEG": (exif_rotated_jpeg, {}),
    "16-bit grey PNG": (grey16_png, {}),
    "webp": (lambda: saved(picture(), "PNG", compress_level=1), {"format": "webp"}),
    "crop": (lambda: saved(picture(), "PNG", compress_level=1), {"crop": "true"}),
    "refine_edges": (lambda: saved(picture(), "PNG", compress_level=1), {"refine_edges": "true"}),
    "color": (lambda: saved(picture(), "PNG", compress_level=1), {"output": "color", "bg_color": "red"}),
    "mask": (lambda: saved(picture(), "PNG", compress_level=1), {"output": "mask"}),
}


def charged_bytes_per_pixel(fields: dict[str, str]) -> int:
    options = {name: value for name, value in fields.items() if name != "format"}
    return bytes_per_pixel(build_request(**options, fmt=fields.get("format", "png")))


@pytest.mark.slow
def test_the_largest_accepted_image_stays_within_its_charge_under_each_option(tmp_path, hf_home) -> None:
    """Peak over idle <= what admission charges for the request's options, plus FIXED_BYTES."""
    with run_server(tmp_path, hf_home, *SERVER_ARGS, RMBG_MAX_PIXELS=str(SIDE * SIDE)) as server:
        pid = server.process.pid
        assert server.remove(saved(sample_image(), "PNG")).status_code == 200
        peaks = {}
        for name, (make, fields) in OPTION_CASES.items():
            data = make()
            idle = settled(pid)
            reset_peak(pid)
            assert server.remove(data, **fields).status_code == 200, name
            peaks[name] = memory(pid)["VmHWM"] - idle
            charged = charged_bytes_per_pixel(fields) * SIDE * SIDE
            assert peaks[name] <= charged + FIXED_BYTES, f"{name}: {peaks}"


@pytest.mark.slow
def test_two_concurrent_large_16_bit_pngs_stay_within_the_pixel_budget(tmp_path, hf_home) -> None:
    """A 20 MP budget promises 320 MB (16 bytes a pixel). Two 9 MP 16-bit PNGs with refined edges
    fit it by their pixels (18 MP), but each needs twice that many bytes a pixel: admission
    charges them so, and they run one after the other instead of together."""
    budget_mp, side = 20, 3000
    grey = Image.fromarray(np.asarray(picture("L", side, side), dtype=np.uint16) * 257)
    data = saved(grey, "PNG", compress_level=1)
    with run_server(tmp_path, hf_home, *SERVER_ARGS, RMBG_PIXEL_BUDGET_MP=str(budget_mp)) as server:
        pid = server.process.pid
        assert server.remove(saved(sample_image(), "PNG")).status_code == 200
        idle = settled(pid)
        reset_peak(pid)
        with ThreadPoolExecutor(2) as clients:
            sent = [clients.submit(server.remove, data, "grey16.png", refine_edges="true") for _ in range(2)]
            statuses = [future.result().status_code for future in sent]
        assert statuses == [200, 200]
        peak = memory(pid)["VmHWM"] - idle
        assert peak <= budget_mp * 1_000_000 * BUDGET_BYTES_PER_PIXEL + FIXED_BYTES
