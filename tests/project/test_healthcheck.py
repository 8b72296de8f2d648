"""`python -m bgremover.healthcheck`, the images' HEALTHCHECK, run as Docker runs it: a subprocess
whose exit status and output are the verdict, against a real `rmbg serve` on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from live import REPO, SERVER_ARGS, free_port, run_server


def healthcheck(url: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bgremover.healthcheck", "--url", url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


@contextmanager
def health_answers(*bodies: dict) -> Iterator[str]:
    """A loopback server whose /health gives `bodies` in turn (the last one from then on): the
    states a model download goes through, which a real server passes too quickly to catch."""
    answers = list(bodies)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(200 if body["status"] == "ok" else 503)
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


LOADING = {"status": "loading", "reason": "RMBG-2.0 is downloading."}
READY = {"status": "ok", "model": "RMBG-2.0", "device": "cpu", "engine": "torch"}


@pytest.mark.slow
def test_healthy_once_the_model_is_loaded(tmp_path, offline_hub):
    with run_server(tmp_path, offline_hub, *SERVER_ARGS) as server:
        done, _ = healthcheck(server.url + "/health")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: RMBG-1.4 is loaded on cpu (torch)"


@pytest.mark.slow
def test_a_model_that_cannot_load_fails_at_once_with_the_reason(tmp_path, offline_hub):
    """BiRefNet is not in the offline cache: the probe fails in seconds and says why, no traceback."""
    with run_server(tmp_path, offline_hub, "--model", "BiRefNet", ready="/") as server:
        done, seconds = healthcheck(server.url + "/health", "--wait", "60")
    assert done.returncode == 1
    assert seconds < 30
    assert done.stderr.startswith("error: ") and "BiRefNet" in done.stderr
    assert "Traceback" not in done.stderr


def test_waits_inside_the_probe_while_the_model_downloads():
    with health_answers(LOADING, LOADING, LOADING, READY) as url:
        done, _ = healthcheck(url, "--poll", "0.1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: RMBG-2.0 is loaded on cpu (torch)"


def test_gives_up_at_its_wait_and_says_what_it_waited_for():
    with health_answers(LOADING) as url:
        done, seconds = healthcheck(url, "--wait", "1", "--poll", "0.2")
    assert done.returncode == 1
    assert seconds < 10
    assert done.stderr.startswith("loading after 1 s: RMBG-2.0 is downloading.")


def test_a_server_that_never_listens_fails_after_the_start_wait():
    url = f"http://127.0.0.1:{free_port()}/health"
    done, seconds = healthcheck(url, "--start-wait", "1", "--poll", "0.2")
    assert done.returncode == 1
    assert seconds < 10
    assert done.stderr.startswith(f"unreachable after 1 s: nothing answers on {url}")


def test_draining_fails_at_once():
    with health_answers({"status": "draining", "reason": "the server is shutting down."}) as url:
        done, seconds = healthcheck(url, "--wait", "60")
    assert (done.returncode, done.stderr.strip()) == (1, "draining: the server is shutting down.")
    assert seconds < 10


def test_does_not_import_torch():
    """It runs every 15 s in the container: a torch import would cost seconds and memory each time."""
    code = "import sys, bgremover.healthcheck; sys.exit(sorted({'torch', 'gradio'} & set(sys.modules)) or None)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
