"""Stopping a real server while it works (docs/web.md, "Stopping"): what its clients get, its exit
status, and that none of its users' files stay behind in its TMPDIR."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
from gradio_client import Client, handle_file
from live import MODEL, SERVER_ARGS, Server, opened, png_bytes, run_server, sample_image
from PIL import Image

pytestmark = pytest.mark.slow  # servers in subprocesses

# Inference at 1024 px takes seconds on a CPU: long enough to stop the server while requests run.
SLOW_ARGS = ("--model", MODEL, "--size", "1024", "--precision", "fp32")


def _private_temp(tmp_path: Path) -> dict[str, str]:
    """The server's own TMPDIR, Gradio's upload folder in it as by default."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    return {"TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio")}


def _left_in(folder: str) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*"))


def _remove_through_the_ui(server: Server, folder: Path) -> None:
    """One cut-out through the Remove tab's event, as the browser sends it: its result files are
    then in the server's scratch folder and in Gradio's cache."""
    source = folder / "upload.png"
    sample_image(seed=3).save(source)
    client = Client(server.url, verbose=False, download_files=False)
    try:
        client.predict(handle_file(str(source)), MODEL, api_name="/remove")
    finally:
        client.close()


@contextmanager
def _requests_in_flight(server: Server, count: int = 3) -> Iterator[list[Future]]:
    """`count` removals sent at once; a second later one runs and the others wait (RMBG_WORKERS=1)."""
    image = png_bytes(sample_image())
    with ThreadPoolExecutor(max_workers=count) as pool:
        outcomes = [pool.submit(server.remove, image) for _ in range(count)]
        time.sleep(1.0)
        yield outcomes


def _check_refused_or_whole(outcomes: list[Future]) -> list[int]:
    """Each client got a whole image or a JSON 503 that says to come back: never a 500 or a short body."""
    statuses = []
    for outcome in outcomes:
        response = outcome.result()
        statuses.append(response.status_code)
        if response.status_code == 200:
            opened(response)  # the whole PNG, as its Content-Length said
        else:
            assert response.status_code == 503, response.text
            assert "shutting down" in response.json()["error"] and response.headers["Retry-After"] == "5"
    return statuses


def test_sigterm_lets_requests_finish_exits_0_and_deletes_the_users_files(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    with run_server(tmp_path, hf_home, *SLOW_ARGS, RMBG_DRAIN_SECONDS="120", **env) as server:
        _remove_through_the_ui(server, tmp_path)
        assert any(name.startswith("rmbg-web-") for name in _left_in(env["TMPDIR"]))
        result: dict = {}
        sender = threading.Thread(target=lambda: result.update(response=server.remove(png_bytes(sample_image()))))
        sender.start()
        time.sleep(1.0)  # the upload is in; inference at 1024 px is under way
        server.process.send_signal(signal.SIGTERM)
        sender.join(timeout=300)
        assert opened(result["response"]).mode == "RGBA"
        assert server.process.wait(timeout=60) == 0
    assert _left_in(env["TMPDIR"]) == []
    assert "Traceback" not in server.log.read_text()


def test_requests_unanswered_at_the_drain_deadline_get_a_json_503(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    with run_server(tmp_path, hf_home, *SLOW_ARGS, RMBG_DRAIN_SECONDS="1", RMBG_WORKERS="1", **env) as server:
        _remove_through_the_ui(server, tmp_path)
        with _requests_in_flight(server) as outcomes:
            server.process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            statuses = _check_refused_or_whole(outcomes)
        assert statuses.count(503) >= 2  # one at a time, and each takes longer than the 1 s drain
        assert server.process.wait(timeout=60) == 0
        assert time.monotonic() - stopped < 10  # not waiting for the inference it answered 503 for
    assert _left_in(env["TMPDIR"]) == []
    log = server.log.read_text()
    assert "unanswered got 503" in log and "Traceback" not in log


def test_a_second_signal_stops_at_once_and_still_deletes_the_users_files(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    with run_server(tmp_path, hf_home, *SLOW_ARGS, RMBG_DRAIN_SECONDS="120", RMBG_WORKERS="1", **env) as server:
        _remove_through_the_ui(server, tmp_path)
        with _requests_in_flight(server) as outcomes:
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.get("/health").json()["status"] == "draining"
            server.process.send_signal(signal.SIGINT)
            stopped = time.monotonic()
            assert server.process.wait(timeout=30) == 128 + signal.SIGINT
            assert time.monotonic() - stopped < 10  # without waiting for the two requests still to run
            statuses = _check_refused_or_whole(outcomes)
        assert statuses.count(503) >= 2
    assert _left_in(env["TMPDIR"]) == []
    assert "Traceback" not in server.log.read_text()


def test_a_server_that_cannot_start_leaves_no_files(tmp_path, hf_home) -> None:
    """Its port is taken: the second server exits with status 3 (uvicorn's for a failed start), and
    its scratch folder goes with it."""
    with run_server(tmp_path, hf_home, *SLOW_ARGS) as server:
        second = tmp_path / "second"
        second.mkdir()
        env = _private_temp(second)
        port = server.url.rsplit(":", 1)[1]
        taken = pytest.raises(RuntimeError, match="exited with status 3:")
        with taken, run_server(second, hf_home, *SLOW_ARGS, "--port", port, **env):
            pass
    assert _left_in(env["TMPDIR"]) == []


def test_sigterm_while_the_model_still_loads_exits_0(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    with run_server(tmp_path, hf_home, *SLOW_ARGS, ready="/api/models", **env) as server:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert _left_in(env["TMPDIR"]) == []
    assert "Traceback" not in server.log.read_text()


def test_a_response_cut_off_by_a_second_signal_is_an_error_for_its_client_not_a_short_200(tmp_path, hf_home) -> None:
    """A client reads a large result slowly while the server is stopped at once: it must be able to
    tell that its image is incomplete (the declared Content-Length is not reached)."""
    env = _private_temp(tmp_path)
    noise = np.random.default_rng(0).integers(0, 256, (2500, 2500, 3), dtype=np.uint8)
    upload = io.BytesIO()
    Image.fromarray(noise).save(upload, "PNG", compress_level=0)  # a 25 MB cut-out: more than socket buffers hold
    with run_server(tmp_path, hf_home, *SERVER_ARGS, **env) as server:
        files = {"file": ("noise.png", upload.getvalue())}
        response = requests.post(server.url + "/api/remove", files=files, stream=True, timeout=120)
        assert response.status_code == 200 and int(response.headers["Content-Length"]) > 20_000_000
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=30) == 128 + signal.SIGINT
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
            response.content  # noqa: B018 - reading the body is the point
    assert _left_in(env["TMPDIR"]) == []
