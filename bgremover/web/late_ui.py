"""The web page, built after the server already answers.

Gradio is 3.4 CPU-seconds to import on a 2-core machine, longer than a warm model takes to load,
so building the page before the port opens made `rmbg serve` wait for it: the API answered
only once the UI existed. `LateUI` is mounted at '/' before Gradio is imported; at start-up
it imports Gradio and builds the page in a thread while the API already serves. A request
for the page (any path the API's own routes do not match) waits until it is built, and only
then meets the auth guard and Gradio's own checks, so nothing of the UI is reachable early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

WAIT_SECONDS = 120.0  # for the page; on a loaded 2-core machine Gradio's import alone took 15 s
RETRY_SECONDS = 5


class LateUI:
    """Gradio's App once `build` has returned it (mounted at '/' of a FastAPI of its own), and
    the wait for it. `tokens` and `cookie_id` stand in for the App's login sessions (guard.py)."""

    def __init__(self, build: Callable[[], FastAPI], api_routes: list[BaseRoute]):
        self._build, self._api_routes = build, list(api_routes)
        self.app: ASGIApp | None = None  # Gradio's App, once built
        self.problem: str | None = None  # why it could not be built
        self._built: asyncio.Event | None = None
        self._early_tokens: dict[str, Any] = {}
        self._stack = AsyncExitStack()

    @property
    def state(self) -> str:
        """'building', 'ready' or 'failed': /health shows it."""
        return "failed" if self.problem else "ready" if self.app is not None else "building"

    @property
    def tokens(self) -> dict[str, Any]:
        return self.app.tokens if self.app is not None else self._early_tokens  # type: ignore[attr-defined]

    @property
    def cookie_id(self) -> str:
        return self.app.cookie_id if self.app is not None else ""  # type: ignore[attr-defined]

    @property
    def routes(self) -> list[BaseRoute]:
        """Gradio's routes once built, as Starlette's Mount lists a mounted app's."""
        return list(self.app.routes) if self.app is not None else []  # type: ignore[attr-defined]

    def blocks(self) -> Any:
        """The page's gr.Blocks (GradioShield reads it; only asked once the page is built)."""
        return self.app.get_blocks()  # type: ignore[union-attr]

    def lifespan(self, inner: Callable[[FastAPI], AbstractAsyncContextManager]) -> Callable:
        """The server's lifespan with the page's around it: its build starts when the server
        does, and Gradio's own start-up and shutdown (its queue, deleting its files) run inside."""

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            async with inner(app) as state:
                self._built = asyncio.Event()
                building = asyncio.create_task(self._start())
                try:
                    yield state
                finally:
                    building.cancel()
                    await self._stack.aclose()

        return lifespan

    async def _start(self) -> None:
        started = time.perf_counter()
        try:
            holder = await asyncio.to_thread(self._build)
            await self._stack.enter_async_context(holder.router.lifespan_context(holder))
            gradio = next(route.app for route in holder.routes if isinstance(route, Mount))
            gradio.tokens.update(self._early_tokens)  # an API token's session, if one came early
            self.app = gradio
            log.info("the web page is ready (built in %.1f s while the API answered)", time.perf_counter() - started)
        except Exception as error:  # the API keeps serving; the page says why it is missing
            log.exception("the web page could not be built")
            self.problem = f"the web page could not be built ({type(error).__name__}: {error}); the API still answers."
        finally:
            self._built.set()  # type: ignore[union-attr]

    def is_api(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is not Match.NONE for route in self._api_routes)

    async def wait(self) -> bool:
        """True once the page is built; False if it failed, or took over WAIT_SECONDS."""
        if self.app is None and self.problem is None and self._built is not None:
            try:
                await asyncio.wait_for(self._built.wait(), WAIT_SECONDS)
            except TimeoutError:
                return False
        return self.app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The mount at '/': Gradio's App, reached only through `gate`, so already built."""
        if self.app is None:
            await self._unavailable(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def gate(self, app: ASGIApp) -> ASGIApp:
        """Middleware, outside the auth guard: a request for the page waits until it is built."""

        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket") and not self.is_api(scope) and not await self.wait():
                await self._unavailable(scope, receive, send)
                return
            await app(scope, receive, send)

        return gated

    async def _unavailable(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        message = self.problem or "the web page is still starting: try again in a few seconds (the API answers)."
        headers = {"Retry-After": str(RETRY_SECONDS)}
        await JSONResponse({"error": message}, status_code=503, headers=headers)(scope, receive, send)
