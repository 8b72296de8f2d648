"""Mistakes a client or a user makes against a live server: the answer says what is wrong, and the
server log gets one line for it, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from live import MODEL, SERVER_ARGS, TIMEOUT, Server, run_server

pytestmark = pytest.mark.slow  # a server in a subprocess

ROUTES = {"/api/remove": "POST", "/api/models": "GET", "/health": "GET"}
WRONG = [
    (path, method)
    for path, allowed in ROUTES.items()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    if method != allowed
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("web_errors"), hf_home, *SERVER_ARGS) as up:
        yield up


@pytest.mark.parametrize(("path", "method"), WRONG)
def test_a_wrong_method_on_an_api_route_is_405_with_allow(server, path: str, method: str) -> None:
    response = requests.request(method, server.url + path, timeout=TIMEOUT)
    assert response.status_code == 405
    assert response.headers["Allow"] == ROUTES[path]
    assert response.json() == {"error": f"{method} {path} is not supported: use {ROUTES[path]} (docs/web.md)."}


def test_the_right_methods_still_work(server) -> None:
    assert server.get("/health").status_code == 200
    assert server.get("/api/models").json()["default_model"] == MODEL
    assert server.remove(b"not an image", "notes.png").status_code == 415


def test_a_broken_upload_in_the_ui_is_one_log_line(server, tmp_path) -> None:
    """The API logs one access line for a file that is not an image; the UI did log a 60-line traceback."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    before = server.log.read_text()
    with pytest.raises(AppError, match="broken.png: not an image this app can read"):
        Client(server.url + "/", verbose=False).predict(handle_file(str(broken)), MODEL, api_name="/remove")
    logged = server.log.read_text()[len(before) :]
    assert "Traceback" not in logged, logged
    refusals = [line for line in logged.splitlines() if "refused" in line]
    assert len(refusals) == 1 and "UI remove refused: broken.png: not an image this app can read" in refusals[0]
    assert server.get("/health").status_code == 200  # and it goes on serving
