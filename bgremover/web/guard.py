"""Who may use the server: one ASGI middleware in front of every route, Gradio's included.

Gradio checks its login on most of its routes but not all (`/gradio_api/cancel`, `/reset`, the
streams), and it knows nothing of `RMBG_API_TOKEN`: with only a token set, its own endpoints
(`/gradio_api/run/remove`, `/call/remove`, ...) would run models for anyone. So the decision
is made here, once, for every path: open paths (the health check, the login page and the
files it needs) pass; anything else needs the API token as `Authorization: Bearer` or a
session from the login page. Failed logins, and wrong API tokens, are throttled per client address.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What the login page needs before anyone has logged in: the page, its scripts, styles and icons.
OPEN_PATHS = frozenset(
    {
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
)
OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
LOGIN_PATHS = ("/login", "/login/")
FREE_FAILURES = 5  # failed logins per address before each further attempt waits
MAX_LOCK_SECONDS = 300
_TRACKED_ADDRESSES = 10_000  # past this many, addresses whose lock has expired are forgotten


def token_login(token: str) -> Callable[[str, str], bool]:
    """Gradio's login check when only RMBG_API_TOKEN is set: any user name, the token as password,
    so a browser (which cannot send a Bearer header) reaches the UI with the same secret."""

    def check(username: str, password: str) -> bool:  # noqa: ARG001 - Gradio passes both
        return secrets.compare_digest(password.encode(), token.encode())

    return check


class Sessions(Protocol):
    """Gradio's login sessions, as its App keeps them: session token -> user, in a cookie named by its id."""

    cookie_id: str
    tokens: dict[str, str]


@dataclass
class _Attempts:
    count: int = 0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Failed logins per client address: the first FREE_FAILURES are free, then each attempt waits
    for a lock that doubles with every further failure (1 s, 2 s, 4 s ... up to 5 minutes).

    An attempt counts as soon as it starts, so 200 concurrent guesses get no more evaluations
    than 200 sequential ones; a successful login clears the address's count.
    """

    attempts: dict[str, _Attempts] = field(default_factory=dict)

    def wait(self, address: str, now: float) -> float:
        """Seconds the address must still wait (0: it may try now, and this try is counted)."""
        remaining = self.locked(address, now)
        if remaining == 0.0:
            self.failed(address, now)  # counted as it starts; a success clears it
        return remaining

    def locked(self, address: str, now: float) -> float:
        """Seconds the address must still wait before it may try again (0: it may)."""
        entry = self.attempts.get(address)
        return max(0.0, entry.locked_until - now) if entry is not None else 0.0

    def failed(self, address: str, now: float) -> None:
        """Counts a failure, locking the address past FREE_FAILURES. Tokens count only their
        failures (checking one costs nothing, so a client sending many requests at once with the
        right token is never locked out); logins count each attempt as it starts (`wait`)."""
        entry = self.attempts.setdefault(address, _Attempts())
        entry.count += 1
        if entry.count >= FREE_FAILURES:
            entry.locked_until = now + min(2.0 ** (entry.count - FREE_FAILURES), MAX_LOCK_SECONDS)
        self._forget_old(now)

    def succeeded(self, address: str) -> None:
        self.attempts.pop(address, None)

    def _forget_old(self, now: float) -> None:
        if len(self.attempts) > _TRACKED_ADDRESSES:
            self.attempts = {a: e for a, e in self.attempts.items() if e.locked_until > now}


class Guard:
    """Refuses (401) every request without credentials where RMBG_API_TOKEN or RMBG_AUTH is set,
    except the open paths; throttles POST /login, and wrong `Authorization` headers per address
    (429 with Retry-After, the right token included, while an address is locked). Without either
    setting it only passes requests on.

    `sessions` is Gradio's App where a login is configured (its login page then guards the UI): a
    request with the API token gets a session there too, since Gradio's own routes check their
    login themselves and know nothing of the token.
    """

    def __init__(self, app: ASGIApp, token: str | None, sessions: Sessions | None):
        self.app, self.token, self.sessions = app, token, sessions
        self.throttle = LoginThrottle()
        self.token_throttle = LoginThrottle()
        self._token_session = secrets.token_urlsafe(16)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protected = self.token is not None or self.sessions is not None
        if scope["type"] not in ("http", "websocket") or not protected:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in LOGIN_PATHS and scope.get("method") == "POST":
            await self._login(scope, receive, send)
        elif path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
        elif wait := self._token_locked(scope):
            address = _address(scope)
            message = f"too many wrong API tokens from {address}: wait {math.ceil(wait)} s before trying again."
            await _refuse(scope, receive, send, 429, message, {"Retry-After": str(math.ceil(wait))})
        elif self._allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":  # Gradio 6 has none; one a later version adds is closed too
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _refuse(scope, receive, send, 401, self._how_to_authenticate(), {"WWW-Authenticate": "Bearer"})

    def _token_locked(self, scope: Scope) -> float:
        """Seconds an address that sent too many wrong tokens must wait; 0 without a token header."""
        if self.token is None or "authorization" not in Headers(scope=scope):
            return 0.0
        return self.token_throttle.locked(_address(scope), time.monotonic())

    def _allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        if self.token is not None and "authorization" in headers:
            sent = headers["authorization"].encode()
            if secrets.compare_digest(sent, f"Bearer {self.token}".encode()):
                self.token_throttle.succeeded(_address(scope))
                self._enter_token_session(scope)
                return True
            self.token_throttle.failed(_address(scope), time.monotonic())
        if self.sessions is None:
            return False
        cookies = cookie_parser(headers.get("cookie", ""))
        return any(cookies.get(name) in self.sessions.tokens for name in self._cookie_names())

    def _cookie_names(self) -> tuple[str, str]:
        cookie_id = self.sessions.cookie_id  # type: ignore[union-attr] - only called with sessions
        return f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"  # Gradio sets both

    def _enter_token_session(self, scope: Scope) -> None:
        """Lets a token holder past Gradio's own login check: one session for the token, its cookie
        added to the request (re-registered each time, as a logout may have removed it)."""
        if self.sessions is None:
            return
        self.sessions.tokens[self._token_session] = "api-token"
        cookie = f"{self._cookie_names()[0]}={self._token_session}".encode()
        others = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
        scope["headers"] = [*others, (b"cookie", cookie)]

    def _how_to_authenticate(self) -> str:
        ways = ["log in on the start page"] if self.sessions is not None else []
        if self.token is not None:
            ways.append("send the header 'Authorization: Bearer <RMBG_API_TOKEN>'")
        return f"this server needs credentials: {' or '.join(ways)}."

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = _address(scope)
        wait = self.throttle.wait(address, time.monotonic())
        if wait > 0:
            message = f"too many failed logins from {address}: wait {math.ceil(wait)} s before trying again."
            await _refuse(scope, receive, send, 429, message, {"Retry-After": str(math.ceil(wait))})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.throttle.succeeded(address)
            await send(message)

        await self.app(scope, receive, watch)


def _address(scope: Scope) -> str:
    return (scope.get("client") or ("unknown",))[0]


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict) -> None:
    await JSONResponse({"error": message}, status_code=status, headers=headers)(scope, receive, send)
