"""Auth on every route: with RMBG_API_TOKEN or RMBG_AUTH set, nothing but the login page answers without credentials.

The routes are not listed here: they are walked from the app itself (the API's routes and the
mounted Gradio app's, with every named endpoint of the UI filled into `{api_name}`), so a
route a Gradio upgrade adds is checked too. Each one is then called on a real server, once
without credentials (401 unless it is part of the login page) and, for the model-running
endpoints, once with them.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from fastapi.testclient import TestClient
from helpers import cpu_service
from live import MODEL, SERVER_ARGS, Server, png_bytes, run_server, sample_image
from starlette.routing import Mount

from bgremover.web.guard import FREE_FAILURES, MAX_LOCK_SECONDS, LoginThrottle

TOKEN, USER, PASSWORD = "t0ken-for-tests", "ann", "pw-for-tests"
# The login page and what it loads before anyone has logged in; nothing here can run a model.
LOGIN_PAGE = {
    "/",
    "/health",
    "/livez",
    "/readyz",
    "/login",
    "/login/",
    "/logout",
    "/favicon.ico",
    "/manifest.json",
    "/robots.txt",
    "/theme.css",
    "/gradio_api/theme.css",
    "/gradio_api/login_check",
    "/gradio_api/login_check/",
}
LOGIN_PAGE_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
INFERENCE_ROUTE = re.compile(r"^/gradio_api/(run|api|call|call/v2)/\{api_name\}/?$")
REMOVEBG = "/v1.0/removebg"  # remove.bg's API: its refusal is remove.bg's 403 in its envelope, not 401


def test_the_login_lock_doubles_per_failure_and_a_success_clears_it() -> None:
    throttle, now = LoginThrottle(), 1000.0
    assert [throttle.wait("a", now) for _ in range(FREE_FAILURES)] == [0.0] * FREE_FAILURES
    assert throttle.wait("a", now) == 1.0 and throttle.wait("b", now) == 0.0  # per address
    assert throttle.wait("a", now + 1) == 0.0 and throttle.wait("a", now + 1) == 2.0
    assert throttle.wait("a", now + 3) == 0.0 and throttle.wait("a", now + 3) == 4.0
    throttle.attempts["a"].count = 100
    assert throttle.wait("a", now + 10) == 0.0 and throttle.wait("a", now + 10) == MAX_LOCK_SECONDS
    throttle.succeeded("a")
    assert throttle.wait("a", now + 10) == 0.0


def _walk(routes: list, prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        if hasattr(route, "original_router"):  # FastAPI's include_router: the routes under its prefix
            yield from _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount) and getattr(route.app, "routes", None):
            yield from _walk(route.app.routes, prefix + route.path)
        elif isinstance(route, Mount):
            yield prefix + route.path + "/x", "GET"  # static files
        else:
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                yield prefix + route.path, method


@pytest.fixture(scope="module")
def routes(hf_home) -> list[tuple[str, str, bool]]:
    """(concrete path, method, runs a model) for every route of the app as `rmbg serve` builds it."""
    from bgremover.web.app import create_app

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("RMBG_API_TOKEN", TOKEN)
        app = create_app(cpu_service(MODEL, size=256))
        with TestClient(app) as client:  # its start-up builds the page (late_ui.py)
            assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
            templates = sorted(set(_walk(app.routes)))
    names = [fn.api_name for fn in app.state.ui.blocks().fns.values() if fn.api_name]
    assert {"remove", "batch", "compare"} <= set(names)
    found = []
    for template, method in templates:
        if method == "HEAD":
            continue  # the same handler as GET
        fills = names + ["no_such_endpoint"] if "{api_name}" in template else ["x"]
        for name in fills:
            path = re.sub(r"\{api_name\}", name, template)
            path = re.sub(r"\{[^}]+\}", "x", path).replace("//", "/")
            found.append((path, method, bool(INFERENCE_ROUTE.match(template)) or template == REMOVEBG))
    assert len(found) > 60 and any(runs for *_, runs in found)
    return found


def _open(path: str) -> bool:
    return path in LOGIN_PAGE or path.startswith(LOGIN_PAGE_PREFIXES)


def _call(server: Server, path: str, method: str, **headers: str) -> requests.Response:
    body = {"data": [], "session_hash": "s", "fn_index": 0, "event_id": "e"}
    return requests.request(method, server.url + path, json=body, headers=headers, timeout=30, stream=True)


def _assert_closed_without_credentials(server: Server, routes: list[tuple[str, str, bool]]) -> None:
    answered = {}
    for path, method, _ in routes:
        with _call(server, path, method) as response:
            answered[(method, path)] = response.status_code
    opened = {key: status for key, status in answered.items() if status != (403 if key[1] == REMOVEBG else 401)}
    assert all(_open(path) for _, path in opened), f"answered without credentials: {opened}"
    assert all(status < 500 for status in opened.values()), opened
    assert answered[("POST", "/gradio_api/cancel")] == 401
    assert answered[("POST", "/api/remove")] == 401
    assert answered[("GET", "/gradio_api/app_id")] == 401
    assert answered[("GET", "/metrics")] == 401
    assert {answered[("GET", probe)] for probe in ("/livez", "/health")} == {200}


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("auth_token"), hf_home, *SERVER_ARGS, RMBG_API_TOKEN=TOKEN) as up:
        yield up


@pytest.fixture(scope="module")
def login_server(tmp_path_factory, hf_home) -> Iterator[Server]:
    login = f"{USER}:{PASSWORD}"
    with run_server(tmp_path_factory.mktemp("auth_login"), hf_home, *SERVER_ARGS, RMBG_AUTH=login) as up:
        yield up


@pytest.mark.slow  # a server in a subprocess
def test_with_only_a_token_no_route_runs_a_model_without_it(token_server, routes, tmp_path) -> None:
    _assert_closed_without_credentials(token_server, routes)
    wait = 0
    for path, method, runs_a_model in routes:
        if runs_a_model:
            with _call(token_server, path, method, Authorization="Bearer wrong", **{"X-Api-Key": "wrong"}) as response:
                refused = 403 if path == REMOVEBG else 401
                assert response.status_code in (refused, 429), path  # 429 once the wrong tokens are throttled
                wait = int(response.headers.get("Retry-After", 0)) if response.status_code == 429 else 0
                assert response.status_code != 403 or response.json()["errors"][0]["code"] == "auth_failed"
    time.sleep(wait + 0.5)  # this address's lock, before the right token is sent from it
    from gradio_client import Client, handle_file

    image = tmp_path / "a.png"
    image.write_bytes(png_bytes(sample_image(48, 32)))
    client = Client(token_server.url + "/", headers={"Authorization": f"Bearer {TOKEN}"}, verbose=False)
    *_, info = client.predict(handle_file(str(image)), MODEL, api_name="/remove")
    assert f"**{MODEL}**" in info


@pytest.mark.slow  # a server in a subprocess
def test_with_only_a_token_the_ui_login_takes_the_token_as_password(token_server) -> None:
    session = requests.Session()
    assert session.get(token_server.url + "/config", timeout=30).status_code == 401
    wrong = session.post(token_server.url + "/login", data={"username": "me", "password": "guess"}, timeout=30)
    assert wrong.status_code == 400
    right = session.post(token_server.url + "/login", data={"username": "me", "password": TOKEN}, timeout=30)
    assert right.status_code == 200
    assert session.get(token_server.url + "/config", timeout=30).status_code == 200
    assert session.get(token_server.url + "/gradio_api/info", timeout=30).status_code == 200


@pytest.mark.slow  # a server in a subprocess
def test_with_a_login_every_gradio_route_but_the_login_page_needs_it(login_server, routes) -> None:
    _assert_closed_without_credentials(login_server, routes)
    session = requests.Session()
    assert session.post(login_server.url + "/login", data={"username": USER, "password": PASSWORD}).status_code == 200
    cancel = session.post(login_server.url + "/gradio_api/cancel", json={"session_hash": "s", "fn_index": 0})
    assert cancel.status_code != 401
    response = session.post(login_server.url + "/api/remove", files={"file": ("a.png", png_bytes(sample_image()))})
    assert response.status_code == 200 and response.headers["X-Model"] == MODEL


@pytest.mark.slow  # a server in a subprocess
def test_failed_logins_are_throttled_per_address(login_server) -> None:
    def guess(number: int) -> requests.Response:
        data = {"username": USER, "password": f"guess-{number}"}
        return requests.post(login_server.url + "/login", data=data, timeout=30)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(200)))
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(400) <= 5 and statuses.count(429) >= 195, statuses
    throttled = next(answer for answer in answers if answer.status_code == 429)
    wait = int(throttled.headers["Retry-After"])
    assert 1 <= wait <= 300 and "too many failed logins" in throttled.json()["error"]
    assert time.monotonic() - started < 60  # refusing is cheap: the server is not slowed down
    right = {"username": USER, "password": PASSWORD}
    assert requests.post(login_server.url + "/login", data=right, timeout=30).status_code == 429  # still locked
    time.sleep(wait + 0.5)
    assert requests.post(login_server.url + "/login", data=right, timeout=30).status_code == 200
    assert guess(0).status_code == 400  # a successful login starts the count afresh


def _from(server: Server, address: str, token: str) -> tuple[int, dict]:
    """GET /api/models from another loopback address (127.0.0.0/8 is all this machine's)."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30, source_address=(address, 0))
    try:
        connection.request("GET", "/api/models", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, {
            **{k.lower(): v for k, v in response.getheaders()},
            "body": json.loads(response.read() or b"{}"),
        }
    finally:
        connection.close()


@pytest.mark.slow  # a server in a subprocess
def test_wrong_tokens_are_throttled_per_address_and_the_right_one_works_elsewhere(token_server) -> None:
    answers = [_from(token_server, "127.0.0.3", f"guess-{number}") for number in range(300)]
    statuses = [status for status, _ in answers]
    assert statuses.count(401) <= 7 and statuses.count(429) >= 293, statuses  # ~5 checked, then locked
    status, headers = next(answer for answer in answers if answer[0] == 429)
    assert 1 <= int(headers["retry-after"]) <= MAX_LOCK_SECONDS
    assert "too many wrong API tokens" in headers["body"]["error"]
    assert _from(token_server, "127.0.0.3", TOKEN)[0] == 429  # still locked, the right token too
    assert _from(token_server, "127.0.0.4", TOKEN)[0] == 200  # another address is not
