"""How `rmbg serve` stops: a drain on the first SIGTERM or Ctrl-C, at once on the second, and the
users' files deleted on both paths.

- First signal: new work gets 503 and /health says 'draining', while requests already running
  or waiting finish, for up to RMBG_DRAIN_SECONDS. Requests still unanswered at that deadline get
  a JSON 503 with Retry-After, and the server stops at once. Exit status 0: the stop that was
  asked for happened.
- Second signal: unanswered requests get the same 503 at once, responses being sent are cut
  off (their Content-Length then tells the client the body is incomplete, never a short 200),
  and the process exits without waiting for inference still running. Exit status 128 + the
  signal's number (143 for SIGTERM, 130 for Ctrl-C), so a supervisor can tell the stop was forced.

uvicorn's own signal handling re-raises the signal after its shutdown, which kills the process
before any clean-up (atexit, finalizers) runs; `DrainingServer` handles the signals itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import uvicorn
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..service.admission import Admission
from .scratch import Scratch

if TYPE_CHECKING:  # PyAV: only where it is installed
    from ..video.jobs import VideoJobs

log = logging.getLogger(__name__)

STOPPING = "the server is shutting down; send the request again in a moment."
# Gradio's lifespan shutdown deletes the uploads and cached results it made; on a forced stop it
# gets this long before the process exits regardless.
_FORCED_CLEAN_UP_SECONDS = 2.0


def delete_users_files(scratch: Scratch, uploads: Path, video_jobs: VideoJobs | None = None) -> None:
    """The UI's result files, the video jobs' uploads and results, and the folders Gradio leaves
    behind: its shutdown deletes the uploads and cached results, not the (content-hash named)
    folders that held them. Only empty ones go."""
    scratch.close()
    if video_jobs is not None:
        video_jobs.close()
    for folder in uploads.iterdir() if uploads.is_dir() else ():
        with suppress(OSError):
            folder.rmdir()
    with suppress(OSError):
        uploads.rmdir()


class Unanswered:
    """ASGI middleware that knows which HTTP requests have no response yet, so that a stopping
    server can answer them with a JSON 503 itself (uvicorn would send a plain-text 500 when it
    cancels them)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._replies: set[_Reply] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reply = _Reply(scope, send)
        self._replies.add(reply)
        try:
            await self.app(scope, receive, reply.send)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs as it stops: a 503 instead of its plain-text 500 and
            # a traceback; a stream already under way is closed by uvicorn.
            await reply.refuse()
        finally:
            self._replies.discard(reply)

    async def refuse_all(self) -> int:
        """Answers 503 to every request without a response yet; how many there were."""
        waiting = [reply for reply in self._replies if not reply.started]
        for reply in waiting:
            await reply.refuse()
        return len(waiting)


class _Reply:
    def __init__(self, scope: Scope, send: Send):
        self.scope, self._send = scope, send
        self.started = self.refused = False

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the application finished after the client had its 503
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def refuse(self) -> None:
        if self.started:
            return
        self.started = self.refused = True
        headers = {"Retry-After": "5", "Connection": "close"}
        await JSONResponse({"error": STOPPING}, status_code=503, headers=headers)(self.scope, _nothing, self._send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class DrainingServer(uvicorn.Server):
    """uvicorn with the stop described in this module's docstring; `clean_up` deletes what the
    server wrote for its users and runs on every way out."""

    def __init__(
        self,
        config: uvicorn.Config,
        admission: Admission,
        drain_seconds: float,
        unanswered: Unanswered,
        clean_up: Callable[[], None],
    ):
        super().__init__(config)
        self.admission, self.drain_seconds = admission, drain_seconds
        self.unanswered, self.clean_up = unanswered, clean_up
        self.exit_status = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.admission.draining:
            self._stop_now(sig)
            return
        self.admission.draining = True
        log.info("stopping: finishing the requests in progress (up to %.0f s) before shutting down", self.drain_seconds)
        threading.Thread(target=self._drain_then_exit, name="rmbg-drain", daemon=True).start()

    def _drain_then_exit(self) -> None:
        if not self.admission.idle(self.drain_seconds):
            refused = self._refuse_unanswered().result()
            log.warning(
                "requests still running after %.0f s (RMBG_DRAIN_SECONDS): %d unanswered got 503; stopping",
                self.drain_seconds,
                refused,
            )
            self.force_exit = True  # the time is up: no more grace for open streams either
        self.should_exit = True

    def _stop_now(self, sig: int) -> None:
        log.warning("second signal: stopping now; unanswered requests get 503, responses being sent are cut off")
        self.exit_status = 128 + sig
        self.force_exit = self.should_exit = True
        self._refuse_unanswered()

    def _refuse_unanswered(self) -> concurrent.futures.Future[int]:
        """`Unanswered.refuse_all` on the server's loop, from a signal handler or another thread."""
        if self._loop is None:  # stopped before the loop ran: nothing can be waiting
            done: concurrent.futures.Future[int] = concurrent.futures.Future()
            done.set_result(0)
            return done
        return asyncio.run_coroutine_threadsafe(self.unanswered.refuse_all(), self._loop)

    def run(self, sockets: list | None = None) -> NoReturn:  # type: ignore[override]
        """Serves until stopped, then ends the process (see `exit`)."""
        try:
            super().run(sockets)
        except SystemExit as stop:  # uvicorn's way out when it cannot listen (a port in use)
            self.exit(stop.code if isinstance(stop.code, int) else 1)
        self.exit(self.exit_status)

    async def shutdown(self, sockets: list | None = None) -> None:
        """uvicorn's shutdown; where it was forced, the application's shutdown that uvicorn then
        skips; and where inference still runs, the exit without waiting for it."""
        await super().shutdown(sockets)
        if self.force_exit:
            try:
                async with asyncio.timeout(_FORCED_CLEAN_UP_SECONDS):
                    await self.lifespan.shutdown()
            except TimeoutError:
                log.warning("the application's shutdown took over %.0f s; exiting anyway", _FORCED_CLEAN_UP_SECONDS)
        if self.force_exit or self.server_state.tasks:
            self.exit(self.exit_status)

    def exit(self, status: int) -> NoReturn:
        """The clean-up, then the end of the process without waiting for threads still at work
        (inference, a model loading): their results have no one to go to, and a thread inside
        torch while the interpreter finalizes can abort the process instead of ending it."""
        self.clean_up()
        log.info("stopped (exit status %d)", status)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
