"""Time limits for slow or lying clients, so that no connection is held open for ever.

Three bounds, each ending in a closed connection:

- between requests, uvicorn's own keep-alive timeout (5 s of silence);
- the request head: RMBG_HEADER_TIMEOUT_SECONDS from the moment a connection opens, or its
  previous response ends, until its request line and headers are complete (408 if it sent part
  of them, a silent close if it sent nothing);
- the body: at most RMBG_BODY_TIMEOUT_SECONDS between two pieces of it, so that a
  Content-Length larger than what the client sends gets 408 instead of a wait without end.
"""

from __future__ import annotations

import asyncio
import json

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

_DISCONNECT: Message = {"type": "http.disconnect"}


def _head_timeout_reply(seconds: float) -> bytes:
    """A whole 408 response as bytes: the head never arrived, so there is no ASGI cycle to answer through."""
    message = (
        f"the request headers did not arrive within {seconds:g} s (RMBG_HEADER_TIMEOUT_SECONDS); "
        "send the whole request head at once."
    )
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class HeadDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, or h11 without it) with a deadline on every request head.

    uvicorn arms no timer on a fresh connection and cancels its keep-alive timer at the first byte,
    so a client that sends nothing, or half a request line, would keep its connection for ever.
    """

    head_timeout = 20.0  # replaced by `with_head_deadline`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._wait_for_head()  # not when a pipelined request has started already

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_started = False
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue, self.cycle)

    def _head_overdue(self, cycle_then: object) -> None:
        """A new request cycle means its head came in time; otherwise the connection goes."""
        self._head_timer = None
        upgraded = self.transport.get_protocol() is not self  # a WebSocket took the connection over
        if self.cycle is not cycle_then or upgraded or self.transport.is_closing():
            return
        if self._head_started:
            self.transport.write(_head_timeout_reply(self.head_timeout))
        self.transport.close()


def with_head_deadline(seconds: float) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn.Config(http=...), with `seconds` for each request head."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"head_timeout": seconds})


class BodyDeadline:
    """ASGI middleware: a request body with no new bytes for `seconds` is answered 408 (connection
    closed), and the application sees the client as gone, as after a real disconnect."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _WatchedBody(scope, receive, send, self.seconds)
        try:
            await self.app(scope, body.receive, body.send)
        except ClientDisconnect:
            if not body.timed_out:
                raise  # a timed-out body is no error of the server's: it has answered 408


class _WatchedBody:
    def __init__(self, scope: Scope, receive: Receive, send: Send, seconds: float):
        self.scope, self._receive, self._send, self.seconds = scope, receive, send, seconds
        self.received, self.complete, self.started, self.timed_out = 0, False, False, False

    async def receive(self) -> Message:
        if self.timed_out:
            return _DISCONNECT
        if self.complete:  # no deadline on waiting for a disconnect (streamed responses do)
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.seconds)
        except TimeoutError:
            await self._time_out()
            return _DISCONNECT
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return  # the client has had its 408
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _time_out(self) -> None:
        self.timed_out = True
        if self.started:
            return
        headers = dict(self.scope["headers"])
        declared = headers.get(b"content-length", b"?").decode("latin-1")
        message = (
            f"the request body stopped arriving: {self.received} of {declared} bytes came, then nothing for "
            f"{self.seconds:g} s (RMBG_BODY_TIMEOUT_SECONDS). Send the whole body, with a Content-Length that "
            "matches it."
        )
        response = JSONResponse({"error": message}, status_code=408, headers={"Connection": "close"})
        await response(self.scope, self._receive, self._send)
