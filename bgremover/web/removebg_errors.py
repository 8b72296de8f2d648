"""remove.bg's error envelope, `{"errors": [{"title", "code", "detail"}]}`, for every answer on /v1.0/:
the route's own failures (`RemoveBgError`), and those of whatever answers before or around it
(`RemoveBgEnvelope`: the auth guard, an unexpected error), so a remove.bg client always gets its format."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)


class RemoveBgError(Exception):
    """A failure in remove.bg's envelope: `status`, a `title`, a machine `code` and the `detail` with the fix."""

    def __init__(self, status: int, title: str, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.title, self.code, self.detail, self.headers = status, title, code, detail, headers

    def response(self) -> JSONResponse:
        body = {"errors": [{"title": self.title, "code": self.code, "detail": self.detail}]}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(detail: str, code: str = "invalid_parameters") -> RemoveBgError:
    return RemoveBgError(400, "Invalid parameters", code, detail)


def auth_failed(detail: str) -> RemoveBgError:
    return RemoveBgError(403, "Authentication failed", "auth_failed", detail)


_STATUSES = {401: 403, 413: 400}  # Guard's 401 is remove.bg's 403; an oversized body is its 400


class RemoveBgEnvelope:
    """ASGI middleware for /v1.0/: `X-Api-Key` is handed to the token check as a Bearer token, and an
    answer from outside the route (the auth guard, a body limit, an unexpected error) is put in
    remove.bg's envelope: 401 becomes 403, 413 becomes 400, and no 5xx but 503."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1.0/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if b"x-api-key" in headers and b"authorization" not in headers:
            scope["headers"] = [*scope["headers"], (b"authorization", b"Bearer " + headers[b"x-api-key"])]
        rewrite = _EnvelopeRewrite(send)
        try:
            await self.app(scope, receive, rewrite.send)
        except Exception:
            log.exception("%s failed", scope["path"])
            if not rewrite.started:
                detail = "the server could not process the request; its log has the details."
                await RemoveBgError(503, "Service unavailable", "server_error", detail).response()(scope, receive, send)


class _EnvelopeRewrite:
    def __init__(self, send):
        self._send, self.started, self._held = send, False, None

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            if message["status"] >= 400:
                self._held, self._body = message, b""
                return
        if self._held is not None and message["type"] == "http.response.body":
            self._body += message.get("body", b"")
            if message.get("more_body", False):
                return
            await self._send_envelope()
            return
        await self._send(message)

    async def _send_envelope(self) -> None:
        held, body = self._held, self._body
        self._held = None
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and "errors" in payload:  # the route's own
            await self._send(held)
            await self._send({"type": "http.response.body", "body": body})
            return
        status = _STATUSES.get(held["status"], held["status"])
        status = 503 if status >= 500 else status
        detail = payload.get("error") if isinstance(payload, dict) else body.decode("utf-8", "replace")[:500]
        if held["status"] == 401:  # the guard's words name its own header; a remove.bg client sends its key
            detail = "wrong or missing API key: send the header 'X-Api-Key: <RMBG_API_TOKEN>'."
        title = {403: "Authentication failed", 429: "Rate limit exceeded"}.get(status, "Request refused")
        code = {403: "auth_failed", 429: "rate_limit_exceeded"}.get(status, f"http_{status}")
        envelope = json.dumps({"errors": [{"title": title, "code": code, "detail": str(detail)}]}).encode()
        kept = [(k, v) for k, v in held.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
        headers = [*kept, (b"content-type", b"application/json"), (b"content-length", str(len(envelope)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": envelope})
