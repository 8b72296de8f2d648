"""Malformed calls to Gradio's own routes: a 4xx that says what is wrong, never a 500.

Each call that Gradio 6.31 answered with 500 is replayed against a real server, then a
bounded, schema-based fuzz walks every operation of Gradio's `/openapi.json` with junk path
and query values and bodies of the wrong shape.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from live import MODEL, SERVER_ARGS, Server, run_server

pytestmark = pytest.mark.slow  # a server in a subprocess

NONE_11 = [None] * 11
REMOVE_ARGS = [None, MODEL, "cutout", "#ffffff", None, 0, False, 0, False, 0, "fast"]
# (method, path, json body or form, expected status, words of the message); each was a 500.
GRADIO_500S = [
    ("POST", "/gradio_api/run/nope", {"data": []}, 404, "no API endpoint 'nope'"),
    ("POST", "/gradio_api/call/nope", {"data": []}, 404, "no API endpoint 'nope'"),
    ("POST", "/gradio_api/api/nope", {"data": []}, 404, "use one of"),
    ("GET", "/?page=A", None, 404, "no such page"),
    ("POST", "/gradio_api/call/v2/remove", {}, 400, "missing ['image', 'model']"),
    ("POST", "/gradio_api/run/remove", {"data": []}, 400, "'data' must be a list of 11 values"),
    ("POST", "/gradio_api/run/remove", {"data": NONE_11, "fn_index": 99}, 400, "fn_index 99"),
    ("POST", "/gradio_api/run/remove", {"data": NONE_11}, 400, "Upload, paste or drop an image first"),
    ("POST", "/gradio_api/run/thumbnails", {"data": [5]}, 400, "validation error for ListFiles"),
    ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": 999, "session_hash": "s"}, 400, "fn_index 999"),
    (
        "POST",
        "/gradio_api/component_server",
        {"data": 1, "component_id": 9999, "session_hash": "s", "fn_name": "x"},
        400,
        "component_id 9999",
    ),
    ("POST", "/gradio_api/upload", {"files": "not a file part"}, 400, "malformed upload"),
    ("GET", "/gradio_api/proxy=http://[::1", None, 404, "proxies no URLs"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("hostile_gradio"), hf_home, *SERVER_ARGS) as up:
        yield up


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), GRADIO_500S)
def test_gradios_500s_are_answered_with_the_fix(server, method, path, body, status, words) -> None:
    if path.endswith("/upload"):
        # A text field named `files` (multipart because of the file beside it), where Gradio wants file parts.
        response = requests.post(server.url + path, data=body, files={"other": ("a.txt", b"x")}, timeout=60)
    else:
        response = requests.request(method, server.url + path, json=body, timeout=60)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_a_plain_dict_cannot_name_a_file_on_the_server(server) -> None:
    """Gradio checks FileData inputs; a dict without its `meta` reached the handler unchecked."""
    image = next(Path(requests.__file__).parents[1].glob("gradio/media_assets/images/*.png"))
    data = [{"path": str(image)}, *REMOVE_ARGS[1:]]
    response = requests.post(server.url + "/gradio_api/run/remove", json={"data": data}, timeout=60)
    assert response.status_code == 400 and "not an uploaded file" in response.json()["error"]


# --- A schema-based fuzz of Gradio's routes --------------------------------------------------------

JUNK = ["x", "0", "-1", "nope", "9" * 40, "%00", "..%2F..%2Fetc", "remove", "%7B%7D"]
BODIES = [{}, [], "x", None, {"data": "x"}, {"data": [1, {"path": 2}]}, {"session_hash": 5, "fn_index": "a"}]
MAX_CASES = 200


def _cases(schema: dict, rng: random.Random) -> Iterator[tuple[str, str, dict]]:
    for template, operations in sorted(schema["paths"].items()):
        for method, operation in sorted(operations.items()):
            params = operation.get("parameters", [])
            for _ in range(2):
                path = re.sub(r"\{[^}]+\}", lambda _: rng.choice(JUNK), template)
                query = {p["name"]: rng.choice(JUNK) for p in params if p.get("in") == "query"}
                body = operation.get("requestBody", {}).get("content", {})
                call = {"params": query}
                if "application/json" in body:
                    call["json"] = rng.choice(BODIES)
                elif body:
                    call["data"] = {"files": rng.choice(JUNK)}
                yield method.upper(), path, call


def test_a_schema_based_fuzz_of_gradios_routes_gets_no_500(server) -> None:
    schema = requests.get(server.url + "/openapi.json", timeout=60).json()
    cases = list(_cases(schema, random.Random(24)))[:MAX_CASES]
    assert len(cases) > 100
    failures = []
    for method, path, call in cases:
        with requests.request(method, server.url + path, timeout=60, stream=True, **call) as response:
            if response.status_code >= 500:
                failures.append((method, path, call, response.status_code, response.raw.read(300)))
    assert not failures, failures
    assert server.get("/health").status_code == 200
