"""The API answers before the web page exists (web/late_ui.py), and the page's paths stay closed
until it does: a request for them waits, then meets the auth guard and Gradio like any other.

Each test runs the app `rmbg serve` builds, with its page built by the real Gradio; only its
start is held back (an event) so that requests land inside the window a fresh server has.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from fastapi.testclient import TestClient
from helpers import cpu_service
from live import MODEL

from bgremover.web.app import Page, create_app

TOKEN = "t0ken-for-late-ui"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def held_page(monkeypatch, offline_hub) -> threading.Event:
    """Page.build waits for the returned event before it builds the real page."""
    release, build = threading.Event(), Page.build

    def held(page: Page):
        assert release.wait(60), "the test never released the page"
        return build(page)

    monkeypatch.setattr(Page, "build", held)
    monkeypatch.setenv("RMBG_API_TOKEN", TOKEN)
    return release


def test_the_api_answers_while_the_page_is_built_and_the_page_waits_then_is_guarded(held_page) -> None:
    app = create_app(cpu_service(MODEL, size=256))
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        health = client.get("/health")
        assert health.json()["ui"] == "building"
        assert client.get("/api/models", headers=BEARER).status_code == 200
        assert client.get("/api/models").status_code == 401
        anonymous = pool.submit(client.get, "/gradio_api/info")
        holder = pool.submit(client.get, "/gradio_api/info", headers=BEARER)
        done, _ = wait([anonymous, holder], timeout=1)
        assert not done  # waiting for the page, not answered early
        held_page.set()
        assert anonymous.result(60).status_code == 401
        info = holder.result(60)
        assert info.status_code == 200 and "remove" in str(info.json())
        assert client.get("/health").json()["ui"] == "ready"
        assert client.get("/", headers=BEARER).status_code == 200


def test_a_page_that_cannot_be_built_is_a_503_with_the_reason_and_the_api_keeps_serving(
    monkeypatch, offline_hub
) -> None:
    def broken(page: Page):
        raise RuntimeError("no theme files")

    monkeypatch.setattr(Page, "build", broken)
    app = create_app(cpu_service(MODEL, size=256))
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 503
        assert "could not be built (RuntimeError: no theme files)" in page.json()["error"]
        assert page.headers["Retry-After"] == "5"
        assert client.get("/api/models").status_code == 200
        assert client.get("/health").json()["ui"] == "failed"
