"""Running it like a service: /livez, /readyz, Prometheus /metrics and request IDs.

In-process on the API routes (quick), then on a real `rmbg serve` with a token, JSON logs and a
metrics port, and finally scraped by a real Prometheus server (Debian's `prometheus`), whose
PromQL count of the requests must equal the number sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from live import MODEL, REPO, SERVER_ARGS, TIMEOUT, Server, free_port, png_bytes, run_server, sample_image

from bgremover.web.request_ids import MAX_LENGTH, accepted

TOKEN = "metrics-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = png_bytes(sample_image(64, 48))


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format (0 if it is absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return 0.0


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"abc-123", True),
        (b"x" * MAX_LENGTH, True),
        (b"x" * (MAX_LENGTH + 1), False),
        (b"a b", False),
        (b"caf\xc3\xa9", False),
        (b"a\x01", False),
        (b"", False),
        (None, False),
    ],
)
def test_a_clients_request_id_is_kept_only_when_printable_and_short(sent, kept) -> None:
    chosen = accepted(sent)
    assert (chosen == (sent or b"").decode("latin-1")) is kept
    assert re.fullmatch(r"[\x21-\x7e]{1,128}", chosen)


@pytest.fixture
def api(offline_hub):
    """The API routes as both servers build them, on a real service, behind the outer layers."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from bgremover.service.config import ServiceConfig, build_service
    from bgremover.web.operations import add_service_routes, observed

    service = build_service(ServiceConfig(MODEL, "cpu", "fp32", size=256, workers=1, queue_limit=0), serving=True)
    app = FastAPI()
    metrics = add_service_routes(app, service, 1024 * 1024, None)
    app.get("/items/{item}")(lambda item: {"item": item})  # a route with a path parameter
    with TestClient(observed(app, metrics)) as client:
        yield client, service


def test_livez_always_and_readyz_only_while_loaded_and_not_draining(api) -> None:
    client, service = api
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").json() == {"status": "loading"} and client.get("/readyz").status_code == 503
    service.pool.get()
    assert client.get("/readyz").status_code == 200 and client.get("/livez").status_code == 200
    service.admission.draining = True
    assert client.get("/readyz").status_code == 503 and client.get("/livez").status_code == 200
    assert client.post("/readyz").status_code == 405


def test_requests_are_counted_by_route_template_never_by_raw_path(api) -> None:
    client, _ = api
    for item in ("a", "b", "c"):
        assert client.get(f"/items/{item}").status_code == 200
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert sample_value(text, "rmbg_http_request_duration_seconds_count", route="/items/{item}", status="200") == 3
    assert sample_value(text, "rmbg_http_request_duration_seconds_count", route="unmatched", status="404") == 1
    assert "/items/a" not in text and "/no/such/path" not in text


def test_gradios_routes_are_counted_by_their_templates_too(offline_hub) -> None:
    from fastapi.testclient import TestClient

    from bgremover.service.config import ServiceConfig, build_service
    from bgremover.web.app import create_app
    from bgremover.web.operations import observed

    app = create_app(build_service(ServiceConfig(MODEL, "cpu", "fp32", size=256)))
    with TestClient(observed(app, app.state.metrics)) as client:  # its start-up builds the page
        for path in ("/config", "/gradio_api/file=abc", "/gradio_api/file=def", "/assets/x.js"):
            assert "X-Request-Id" in client.get(path).headers
    text = app.state.metrics.exposition().decode()
    assert sample_value(text, "rmbg_http_request_duration_seconds_count", route="/config", status="200") == 1
    assert sample_value(text, "rmbg_http_request_duration_seconds_count", route="/gradio_api/file={path_or_url}") == 2
    assert sample_value(text, "rmbg_http_request_duration_seconds_count", route="/assets/{path}") == 1
    assert "file=abc" not in text


def test_removals_feed_the_queue_inference_and_batch_histograms(api) -> None:
    client, _ = api
    for _ in range(3):
        assert client.post("/api/remove", files={"file": ("a.png", IMAGE)}).status_code == 200
    text = client.get("/metrics").text
    for name in ("rmbg_queue_seconds_count", "rmbg_inference_seconds_count", "rmbg_batch_size_count"):
        assert sample_value(text, name, model=MODEL) == 3, name
    assert sample_value(text, "rmbg_batch_size_bucket", model=MODEL, le="1.0") == 3
    assert sample_value(text, "rmbg_model_load_seconds", model=MODEL) > 0
    assert sample_value(text, "rmbg_http_requests_in_flight") == 1  # this scrape itself
    assert sample_value(text, "rmbg_queue_depth") == 0 and sample_value(text, "rmbg_requests_running") == 0
    assert sample_value(text, "process_resident_memory_bytes") > 0


# --- A real server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home, metrics_port) -> Iterator[Server]:
    env = {"RMBG_API_TOKEN": TOKEN, "RMBG_LOG_FORMAT": "json", "RMBG_METRICS_PORT": str(metrics_port)}
    with run_server(tmp_path_factory.mktemp("observability"), hf_home, *SERVER_ARGS, **env) as up:
        yield up


@pytest.mark.slow  # a server in a subprocess
def test_every_answer_carries_a_request_id_that_the_logs_carry_too(server) -> None:
    chosen = "trace-0123456789"
    answers = [
        requests.post(server.url + "/api/remove", files={"file": ("a.png", IMAGE)}, headers=BEARER, timeout=TIMEOUT),
        requests.get(server.url + "/config", headers=BEARER, timeout=TIMEOUT),  # Gradio's own route
        requests.get(server.url + "/api/models", timeout=TIMEOUT),  # refused by the guard
        requests.get(server.url + "/nothing/here", headers=BEARER, timeout=TIMEOUT),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 401, 404]
    assert len({answer.headers["X-Request-Id"] for answer in answers}) == len(answers)
    sent = requests.get(server.url + "/livez", headers={"X-Request-Id": chosen}, timeout=TIMEOUT)
    assert sent.headers["X-Request-Id"] == chosen
    bad = requests.get(server.url + "/livez", headers={"X-Request-Id": "x" * 500}, timeout=TIMEOUT)
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-Id"])
    time.sleep(0.5)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line["request_id"] == chosen]
    assert ours and "GET /livez" in ours[0]["message"] and ours[0]["logger"] == "uvicorn.access"
    removal_id = answers[0].headers["X-Request-Id"]
    assert any(line["request_id"] == removal_id and "POST /api/remove" in line["message"] for line in lines)


@pytest.mark.slow  # a server in a subprocess
def test_metrics_need_the_token_except_on_the_metrics_port(server, metrics_port) -> None:
    assert requests.get(server.url + "/metrics", timeout=TIMEOUT).status_code == 401
    main = requests.get(server.url + "/metrics", headers=BEARER, timeout=TIMEOUT)
    assert main.status_code == 200 and main.headers["content-type"].startswith("text/plain; version=")
    side = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT)
    assert side.status_code == 200 and "rmbg_http_request_duration_seconds_bucket" in side.text
    for probe in ("/livez", "/readyz", "/health"):
        assert requests.get(server.url + probe, timeout=TIMEOUT).status_code == 200


PROMETHEUS = shutil.which("prometheus")
SENT = 7


@pytest.fixture
def prometheus(tmp_path, server) -> Iterator[str]:
    """Debian's Prometheus, scraping the server's /metrics with the token every second."""
    assert PROMETHEUS, "Debian's prometheus is not installed: apt-get install prometheus (.ci/run does)"
    host = server.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: rmbg\n"
        f"    authorization:\n      credentials: {TOKEN}\n"
        f"    static_configs:\n      - targets: ['{host}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    command = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}"]
    command += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _query(prometheus: str, promql: str) -> float | None:
    try:
        result = requests.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=10).json()
    except (requests.ConnectionError, ValueError):
        return None
    vector = result.get("data", {}).get("result", [])
    return float(vector[0]["value"][1]) if vector else None


@pytest.mark.slow  # a server and Prometheus in subprocesses
def test_prometheus_scrapes_the_server_and_counts_the_requests_sent(server, prometheus) -> None:
    promql = 'sum(rmbg_http_request_duration_seconds_count{route="/v1.0/removebg",method="POST",status="200"})'
    deadline = time.monotonic() + 60
    while _query(prometheus, 'up{job="rmbg"}') != 1.0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _query(prometheus, 'up{job="rmbg"}') == 1.0, "Prometheus never scraped the server"
    before = _query(prometheus, promql) or 0.0
    for _ in range(SENT):
        response = requests.post(
            server.url + "/v1.0/removebg",
            files={"image_file": ("a.png", IMAGE)},
            headers={"X-Api-Key": TOKEN},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
    while _query(prometheus, promql) != before + SENT and time.monotonic() < deadline + 30:
        time.sleep(0.5)
    assert _query(prometheus, promql) == before + SENT
    p95 = _query(prometheus, "histogram_quantile(0.95, sum by (le) (rate(rmbg_inference_seconds_bucket[1m])))")
    assert p95 is not None and p95 > 0


@pytest.mark.slow  # the CLI in a subprocess
def test_a_metrics_port_that_is_taken_stops_the_server_with_one_line(tmp_path, hf_home) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_METRICS_PORT": str(port)}
        command = [sys.executable, "rmbg.py", "serve", "--host", "127.0.0.1", "--port", str(free_port()), *SERVER_ARGS]
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: RMBG_METRICS_PORT={port}: cannot listen")
    assert "Traceback" not in result.stderr
