"""Clients that hold a connection without finishing their request: a lying Content-Length, half a
request head, or nothing at all. Each is answered or closed within its bound, and the server
keeps serving everyone else meanwhile."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from live import SERVER_ARGS, Server, png_bytes, run_server, sample_image

pytestmark = pytest.mark.slow  # a server in a subprocess

BOUND = 2  # seconds, for both RMBG_HEADER_TIMEOUT_SECONDS and RMBG_BODY_TIMEOUT_SECONDS
SLACK = 3  # what a shared CI machine may add


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("slow_clients")
    env = {"RMBG_HEADER_TIMEOUT_SECONDS": str(BOUND), "RMBG_BODY_TIMEOUT_SECONDS": str(BOUND)}
    with run_server(folder, hf_home, *SERVER_ARGS, **env) as server:
        yield server


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=BOUND + SLACK + 5)
    return connection


def _read_until_closed(connection: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, received = time.monotonic(), b""
    while chunk := connection.recv(65536):
        received += chunk
    return received, time.monotonic() - started


def _read_response(connection: socket.socket) -> bytes:
    """One whole response with a Content-Length, from a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head


def _lying_upload(path: str, field: str) -> bytes:
    """A multipart request head that declares 100 000 bytes, and the first 1 000 of them."""
    boundary = "lies"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.png"\r\n\r\n'
    body = part.encode() + b"\x89PNG" + bytes(1000 - len(part) - 4)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    return head.encode() + body


@pytest.mark.parametrize(("path", "field"), [("/api/remove", "file"), ("/gradio_api/upload", "files")])
def test_a_body_shorter_than_its_content_length_gets_408_within_the_bound(server, path, field) -> None:
    with _connect(server) as connection:
        connection.sendall(_lying_upload(path, field))
        others = server.remove(png_bytes(sample_image()))  # the server serves others meanwhile
        assert others.status_code == 200 and server.get("/health").status_code == 200
        reply, seconds = _read_until_closed(connection)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), reply[:300]
    assert seconds <= BOUND + SLACK
    error = json.loads(body)["error"]
    assert "1000 of 100000 bytes" in error and "RMBG_BODY_TIMEOUT_SECONDS" in error
    assert "Traceback" not in server.log.read_text()  # a client's fault, not the server's


def test_half_a_request_head_gets_408_and_a_silent_client_is_disconnected(server) -> None:
    with _connect(server) as half, _connect(server) as silent:
        half.sendall(b"POST /api/remove HTTP/1.1\r\nHost: test\r\nContent-Ty")
        reply, seconds = _read_until_closed(half)
        assert reply.startswith(b"HTTP/1.1 408 ") and b"RMBG_HEADER_TIMEOUT_SECONDS" in reply
        assert seconds <= BOUND + SLACK
        nothing, _ = _read_until_closed(silent)  # opened at the same time: closed by now too
        assert nothing == b""
    assert server.get("/health").status_code == 200


def test_a_keep_alive_connection_serves_several_requests_before_going_idle(server) -> None:
    """The head deadline restarts after each response: a client that keeps asking is not cut off."""
    with _connect(server) as connection:
        for _ in range(3):
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            head = _read_response(connection)
            assert head.startswith(b"HTTP/1.1 200 "), head
            time.sleep(BOUND * 0.6)  # more than the bound in all, less between two requests
        assert _read_until_closed(connection)[0] == b""  # idle afterwards: closed
