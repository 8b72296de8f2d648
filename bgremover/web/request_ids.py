"""Request IDs: every HTTP answer carries `X-Request-Id`, and every log line written while the request
is handled carries the same ID, so one slow or failed request can be found in the logs.

The ID is the client's own `X-Request-Id` where it is printable ASCII of at most 128 characters
(a proxy's ID then follows the request through), else a fresh random one. It lives in a context
variable, which worker threads started through Starlette inherit; a logging filter writes it
into every record. RMBG_LOG_FORMAT=json makes each line a JSON object.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-Id"
MAX_LENGTH = 128
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
current: ContextVar[str] = ContextVar("request_id", default="-")


def accepted(sent: bytes | None) -> str:
    """The client's ID if it is printable ASCII (no spaces or controls) of at most MAX_LENGTH, else a new one."""
    if sent and len(sent) <= MAX_LENGTH and all(0x21 <= byte <= 0x7E for byte in sent):
        return sent.decode("ascii")
    return secrets.token_hex(16)


class RequestIds:
    """ASGI middleware, the outermost: picks the request's ID, sets it for the logs, adds it to the answer."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted(dict(scope["headers"]).get(HEADER.lower().encode()))
        token = current.set(request_id)

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            current.reset(token)


class RequestIdFilter(logging.Filter):
    """Puts the current request's ID (or '-') on every record as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str) -> None:
    """The root logger's and uvicorn's handlers, all with the request ID, as text or JSON lines.
    Call after uvicorn.Config, which installs uvicorn's own handlers."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(RequestIdFilter())
            handler.setFormatter(formatter)
