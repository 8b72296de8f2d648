"""The server under load and when stopped: a bounded queue with 503 + Retry-After, and a drain on SIGTERM."""

from __future__ import annotations

import io
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from live import MODEL, png_bytes, run_server, sample_image
from PIL import Image

pytestmark = pytest.mark.slow  # servers in subprocesses

# Inference at 1024 px takes seconds on a CPU: long enough for every request to arrive meanwhile.
SLOW_ARGS = ("--model", MODEL, "--size", "1024", "--precision", "fp32")


def test_requests_beyond_the_queue_limit_get_503_with_retry_after(tmp_path, hf_home) -> None:
    with run_server(tmp_path, hf_home, *SLOW_ARGS, RMBG_WORKERS="1", RMBG_QUEUE_LIMIT="2") as server:
        image = png_bytes(sample_image())
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda _: server.remove(image), range(20)))
        statuses = [response.status_code for response in responses]
        assert statuses.count(200) >= 3  # the running one and the two waiting
        busy = [response for response in responses if response.status_code == 503]
        assert len(busy) >= 10 and len(busy) + statuses.count(200) == 20
        for response in busy:
            assert int(response.headers["Retry-After"]) >= 5
            assert "the server is busy" in response.json()["error"]
        ok = next(response for response in responses if response.status_code == 200)
        assert float(ok.headers["X-Queue-Seconds"]) >= 0 and float(ok.headers["X-Inference-Seconds"]) > 0
        assert server.get("/health").status_code == 200  # still serving after the rush


def test_sigterm_lets_the_request_in_progress_finish(tmp_path, hf_home) -> None:
    with run_server(tmp_path, hf_home, *SLOW_ARGS, RMBG_DRAIN_SECONDS="120") as server:
        image = png_bytes(sample_image())
        result: dict = {}
        # 2048 px: seconds of inference even on a quiet machine, so the request is still running at SIGTERM.
        sender = threading.Thread(target=lambda: result.update(response=server.remove(image, size=2048)))
        sender.start()
        time.sleep(1.0)  # the upload is in; inference is under way
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        health = server.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = server.remove(image)
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
        sender.join(timeout=300)
        response = result["response"]
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).mode == "RGBA"
        assert server.process.wait(timeout=60) == 0  # docs/web.md: a drained stop exits 0
    assert "Traceback" not in server.log.read_text()


def test_an_api_token_and_a_ui_login_protect_the_app_but_not_health(tmp_path, hf_home) -> None:
    args = ("--model", MODEL, "--size", "256", "--precision", "fp32")
    env = {"RMBG_API_TOKEN": "s3cret", "RMBG_AUTH": "ann:pw"}
    with run_server(tmp_path, hf_home, *args, **env) as server:
        image = png_bytes(sample_image())
        refused = server.remove(image)
        assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]
        assert requests.get(server.url + "/api/models", timeout=30).status_code == 401
        response = requests.post(
            server.url + "/api/remove",
            files={"file": ("p.png", image)},
            headers={"Authorization": "Bearer s3cret"},
            timeout=120,
        )
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        assert server.get("/health").status_code == 200
        assert requests.get(server.url + "/config", timeout=30).status_code == 401  # the UI wants its login
        session = requests.Session()
        login = session.post(server.url + "/login", data={"username": "ann", "password": "pw"}, timeout=30)
        assert login.status_code == 200
        assert session.get(server.url + "/config", timeout=30).status_code == 200


def _memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}


# What admission charges a mask request per pixel (docs/web.md, "Memory budget"): 16 bytes over idle.
BYTES_PER_PIXEL_BUDGET = 16


def test_a_100_megapixel_request_stays_in_its_memory_budget_and_memory_is_given_back(tmp_path, hf_home) -> None:
    args = ("--model", MODEL, "--size", "256", "--precision", "fp32")
    with run_server(tmp_path, hf_home, *args) as server:
        pid = server.process.pid
        buffer = io.BytesIO()
        Image.new("RGB", (9999, 9999), (200, 120, 40)).save(buffer, format="PNG")  # 0.3 MB file, 100 MP
        server.remove(png_bytes(sample_image()))  # everything warmed up once
        time.sleep(1.0)
        idle = _memory_kib(pid)["VmRSS"]
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")  # restart the peak (VmHWM) from now
        response = server.remove(buffer.getvalue(), output="mask")
        assert response.status_code == 200
        assert Image.open(io.BytesIO(response.content)).size == (9999, 9999)
        peak = _memory_kib(pid)["VmHWM"]
        assert (peak - idle) * 1024 <= BYTES_PER_PIXEL_BUDGET * 9999 * 9999
        time.sleep(1.0)
        assert _memory_kib(pid)["VmRSS"] - idle <= 300 * 1024  # within 300 MB of idle again


def test_ui_uploads_beyond_the_quota_get_503(tmp_path, hf_home) -> None:
    args = ("--model", MODEL, "--size", "256", "--precision", "fp32")
    uploads = tmp_path / "uploads"
    with run_server(tmp_path, hf_home, *args, RMBG_UPLOAD_QUOTA_MB="1", GRADIO_TEMP_DIR=str(uploads)) as server:
        blob = bytes(700 * 1024)

        def upload(name: str) -> requests.Response:
            return requests.post(server.url + "/gradio_api/upload", files={"files": (name, blob)}, timeout=60)

        assert upload("one.png").status_code == 200
        second = upload("two.png")  # 1.4 MB with the first: refused as its bytes arrive
        assert second.status_code == 503 and "upload space is full" in second.json()["error"]
        assert second.headers["Retry-After"] == "60"
        assert server.get("/health").status_code == 200
