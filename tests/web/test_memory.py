"""Memory seen from outside a real server: failed decodes give their memory back at once, and a
request's peak stays within what admission charges for its options (docs/web.md, "Memory budget").

The inputs and the measurements are those of tools/memory_per_pixel.py, which prints the numbers
that docs/web.md records: the server's resident size from /proc/PID/status, its peak (VmHWM)
restarted before each request through /proc/PID/clear_refs.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from live import MODEL, REPO, SERVER_ARGS, png_bytes, run_server, sample_image

from bgremover.service.admission import BUDGET_BYTES_PER_PIXEL

sys.path.insert(0, str(REPO / "tools"))
import memory_per_pixel as measure  # noqa: E402 - tools/ must be importable first

MB = 1024 * 1024
# What a request needs whatever its image's size (the network's activations at 256 px, the
# encoder's threads): the tolerance on top of the per-pixel charge. Measured at 13-50 MB.
FIXED_BYTES = 160 * MB
SIDE = 4000  # the largest image the options' server accepts (RMBG_MAX_PIXELS): 16 MP


def settled_bytes(pid: int) -> int:
    return measure.settled_rss(pid) * 1024


@pytest.mark.slow
def test_failed_large_decodes_give_their_memory_back_at_once(tmp_path, hf_home) -> None:
    """Twenty truncated '100 MP' PNGs in a row through the API, then ten through the UI: each gets
    its message, and the server stays within 300 MB of idle (it kept ~75 MB per request before)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    bomb = measure.truncated_png()
    upload = tmp_path / "huge.png"
    upload.write_bytes(bomb)
    with run_server(tmp_path, hf_home, *SERVER_ARGS) as server:
        pid = server.process.pid
        assert server.remove(png_bytes(sample_image())).status_code == 200
        idle = settled_bytes(pid)
        for _ in range(20):
            response = server.remove(bomb, name="huge.png")
            assert response.status_code == 415 and "truncated" in response.json()["error"]
        assert settled_bytes(pid) - idle <= 300 * MB
        client = Client(server.url + "/", verbose=False)
        for _ in range(10):
            with pytest.raises(AppError, match="huge.png: the image data is truncated"):
                client.predict(handle_file(str(upload)), MODEL, api_name="/remove")
        assert settled_bytes(pid) - idle <= 300 * MB
        assert server.get("/health").status_code == 200


@pytest.mark.slow
def test_the_largest_accepted_image_stays_within_its_charge_under_each_option(tmp_path, hf_home) -> None:
    """Peak over idle <= what admission charges for the request's options, plus FIXED_BYTES."""
    with run_server(tmp_path, hf_home, *SERVER_ARGS, RMBG_MAX_PIXELS=str(SIDE * SIDE)) as server:
        pid = server.process.pid
        assert server.remove(png_bytes(sample_image())).status_code == 200
        peaks = {}
        for case in measure.CASES:
            peak, status = measure.peak_over_idle(server.url, pid, case.make(SIDE, SIDE), case.fields)
            assert status == 200, case.name
            peaks[case.name] = round(peak / MB)
            charged = measure.charged_bytes_per_pixel(case.fields) * SIDE * SIDE
            assert peak <= charged + FIXED_BYTES, f"{case.name}: peaks in MB {peaks}"


@pytest.mark.slow
def test_two_concurrent_large_16_bit_pngs_stay_within_the_pixel_budget(tmp_path, hf_home) -> None:
    """A 20 MP budget promises 320 MB (16 bytes a pixel). Two 9 MP 16-bit PNGs with refined edges
    fit it by their pixels (18 MP), but each needs twice that many bytes a pixel: admission
    charges them so, and they run one after the other instead of together."""
    budget_mp, side = 20, 3000
    data = measure.grey16_png(side, side)
    with run_server(tmp_path, hf_home, *SERVER_ARGS, RMBG_PIXEL_BUDGET_MP=str(budget_mp)) as server:
        pid = server.process.pid
        assert server.remove(png_bytes(sample_image())).status_code == 200
        idle = settled_bytes(pid)
        measure.reset_peak(pid)
        with ThreadPoolExecutor(2) as clients:
            sent = [clients.submit(server.remove, data, "grey16.png", refine_edges="true") for _ in range(2)]
            statuses = [future.result().status_code for future in sent]
        assert statuses == [200, 200]
        peak = measure.memory_kib(pid)["VmHWM"] * 1024 - idle
        assert peak <= budget_mp * 1_000_000 * BUDGET_BYTES_PER_PIXEL + FIXED_BYTES
