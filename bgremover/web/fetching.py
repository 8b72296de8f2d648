"""Fetching a client's `image_url` without letting the client reach the server's own network.

A URL is only a name: what matters is the address the server connects to. So the host is
resolved here, every address it resolves to is checked (no private, loopback, link-local,
multicast or otherwise non-global address unless RMBG_REMOVEBG_ALLOW_PRIVATE_URLS=1), and the
connection goes to the checked address itself, so a second DNS answer cannot swap it
(DNS rebinding). HTTPS still verifies the certificate against the host name. Redirects are
followed by hand, at most MAX_REDIRECTS, each new URL checked the same way; the body is cut
off past the upload limit, and the whole fetch has one deadline.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024


class FetchError(ValueError):
    """Why a URL could not be fetched, in words for the client; `code` is the remove.bg error code."""

    def __init__(self, message: str, code: str = "invalid_image_url"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    seconds: float
    allow_private: bool = False


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def checked_address(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to must be public (unless
    `allow_private`), so a name with one public and one internal address is refused too."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise FetchError(f"image_url: the host {host!r} could not be resolved.") from error
    addresses = [info[4][0] for info in infos]
    if not allow_private and not all(_address_allowed(address) for address in addresses):
        raise FetchError(
            f"image_url: {host!r} is a private, loopback or link-local address, which this server does not fetch "
            "from (the operator can allow it with RMBG_REMOVEBG_ALLOW_PRIVATE_URLS=1)."
        )
    return addresses[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, its certificate verified against the URL's host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


def fetch(url: str, limits: FetchLimits) -> bytes:
    """The body at `url` after at most MAX_REDIRECTS redirects; raises FetchError with the reason."""
    deadline = time.monotonic() + limits.seconds
    for _ in range(MAX_REDIRECTS + 1):
        try:
            status, location, body = _get(url, limits, deadline)
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out, bad TLS
            raise FetchError(f"image_url: fetching {url!r} failed ({type(error).__name__}: {error}).") from error
        if status in _REDIRECTS and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise FetchError(f"image_url: {url!r} answered HTTP {status}, not an image.")
        return body
    raise FetchError(f"image_url: more than {MAX_REDIRECTS} redirects.")


def _split(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unclosed [IPv6 address
        raise FetchError(f"image_url: {url[:200]!r} is not a URL ({error}).") from error
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"image_url: {url[:200]!r} is not an http(s) URL.")
    if not parts.hostname:
        raise FetchError(f"image_url: {url[:200]!r} names no host.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise FetchError(f"image_url: {url[:200]!r} has a bad port.") from error
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


def _get(url: str, limits: FetchLimits, deadline: float) -> tuple[int, str | None, bytes]:
    scheme, host, port, target = _split(url)
    address = checked_address(host, port, limits.allow_private)
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"image_url: the fetch took longer than {limits.seconds:g} s (RMBG_URL_TIMEOUT_SECONDS).")
    kind = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
    connection = kind(host, port, address, left)
    try:
        connection.request("GET", target, headers={"User-Agent": "rmbg", "Accept": "image/*"})
        response = connection.getresponse()
        if response.status in _REDIRECTS:
            return response.status, response.getheader("location"), b""
        return response.status, None, _read_limited(connection, response, limits, deadline)
    finally:
        connection.close()


def _read_limited(
    connection: http.client.HTTPConnection, response: http.client.HTTPResponse, limits: FetchLimits, deadline: float
) -> bytes:
    """The body, refused past `max_bytes` (declared or counted) or past the deadline, however slowly it drips."""
    too_large = FetchError(
        f"image_url: the image is larger than the upload limit of {limits.max_bytes / 1024 / 1024:g} MB "
        "(RMBG_MAX_UPLOAD_MB).",
        "file_too_large",
    )
    declared = response.getheader("content-length") or ""
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"image_url: the fetch took longer than {limits.seconds:g} s (RMBG_URL_TIMEOUT_SECONDS).")
        if connection.sock is not None:
            connection.sock.settimeout(left)
        chunk = response.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large
        chunks.append(chunk)
