"""`image_url` fetching against a real HTTP server on loopback: every hop's address checked, the size
and time bounded. Quick: in-process, no model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bgremover.web import fetching
from bgremover.web.fetching import FetchError, FetchLimits, checked_address, fetch

BODY = b"\x89PNG pretend"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/endless":  # no Content-Length: only counting stops it
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 1024)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()


@pytest.fixture
def public_loopback(monkeypatch) -> None:
    """127.0.0.1 stands in for a public address (no test may reach the internet); the rest of
    loopback, 127.0.0.2 and ::1 included, stays private."""
    monkeypatch.setattr(fetching, "_address_allowed", lambda address: address == "127.0.0.1")


LIMITS = FetchLimits(max_bytes=10_000, seconds=3)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
    ],
)
def test_private_loopback_link_local_multicast_and_reserved_addresses_are_refused(address) -> None:
    with pytest.raises(FetchError, match="RMBG_REMOVEBG_ALLOW_PRIVATE_URLS"):
        checked_address(address, 80, allow_private=False)
    assert checked_address(address, 80, allow_private=True) == address


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address) -> None:
    assert checked_address(address, 80, allow_private=False) == address


def test_a_redirect_to_loopback_is_refused_at_its_hop(origin, public_loopback) -> None:
    assert fetch(origin + "/photo.png", LIMITS) == BODY  # the stand-in public address is fetched
    port = origin.rsplit(":", 1)[1]
    for private in (f"http://127.0.0.2:{port}/photo.png", f"http://[::1]:{port}/", "http://169.254.169.254/"):
        with pytest.raises(FetchError, match="private, loopback or link-local"):
            fetch(f"{origin}/to/{private}", LIMITS)


def test_bodies_over_the_limit_are_refused_declared_or_not(origin) -> None:
    allowed = FetchLimits(max_bytes=10, seconds=3, allow_private=True)
    with pytest.raises(FetchError, match="larger than the upload limit") as declared:
        fetch(origin + "/photo.png", allowed)
    assert declared.value.code == "file_too_large"
    with pytest.raises(FetchError, match="larger than the upload limit"):
        fetch(origin + "/endless", FetchLimits(max_bytes=10_000, seconds=3, allow_private=True))


def test_a_body_that_drips_is_cut_off_at_the_deadline(origin) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="RMBG_URL_TIMEOUT_SECONDS|timed out"):
        fetch(origin + "/drip", FetchLimits(max_bytes=10_000, seconds=1, allow_private=True))
    assert time.monotonic() - started < 5  # 10 s of dripping: the deadline ended it


@pytest.mark.parametrize("url", ["ftp://a/b", "file:///etc/passwd", "http://", "http://[::1", "http://a:99999/"])
def test_only_well_formed_http_urls_are_fetched(url) -> None:
    with pytest.raises(FetchError, match="image_url"):
        fetch(url, LIMITS)
