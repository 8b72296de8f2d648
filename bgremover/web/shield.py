"""Malformed calls to Gradio's own routes get a 4xx with the fix, not Gradio's 500.

Gradio 6.31 answers "Internal Server Error" to an unknown `api_name` on run/call/api, an
unknown `?page=`, a `call/v2` body without the required arguments, a `data` list of the wrong
length, an unknown `fn_index` or `component_id` and a `proxy=` URL it cannot parse (a malformed
upload is refused in quota.py); `/run` also answers 500 to every error an event handler raises
and to its own validation of the caller's data.
It also answers 500 to a `/run` call with the values `/gradio_api/info` publishes where an
event has a gr.State input (info leaves it out, the event needs it), to a FileData naming a file
or URL that is not an upload, to a path segment too long for a file name, and to JSON nested
deeper than Python's parser goes.
This middleware checks those requests against the UI's events before Gradio sees them (filling
in the State inputs that info leaves out), and gives the handlers' errors their status: 400 for a
mistake the caller can fix, 503 for a busy server or a model that cannot load, 500 only for the
unexpected.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENDPOINT = re.compile(r"^/gradio_api/(run|api|call|call/v2)/([^/]+)/?$")
ID_ROUTES = ("/gradio_api/queue/join", "/gradio_api/component_server", "/gradio_api/component_server/")
MAX_CALL_BODY = 1024 * 1024  # a call's JSON names its files (uploaded first), it does not carry them
MAX_JSON_DEPTH = 64  # the UI's values nest a few levels; Python's parser gives up near 1000
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # a URL's scheme (data:, http:, file:, ...)
MAX_SEGMENT = 255  # the longest file name most file systems take; a longer one is no file here
# The titles of the UI's gr.Error (web/ui.py `friendly`) and the status each one means.
# Gradio's refusal of a FileData whose path (or URL, fetched to a path) no user uploaded.
_NOT_UPLOADED = "because it was not uploaded by a user"
STATUS_BY_TITLE = {"Busy": 503, "Model not available": 503, "Unexpected error": 500}


class Endpoint:
    """One named event of the UI: how many values its `data` takes and its parameter names."""

    def __init__(self, index: int, hidden: list[bool], handler: Callable):
        parameters = inspect.signature(handler).parameters.values()
        self.index, self.inputs, self.api_inputs = index, len(hidden), hidden.count(False)
        self.hidden = hidden  # per input: whether /gradio_api/info leaves it out (a gr.State)
        self.names = [p.name for p in parameters if p.name != "progress"]
        self.required = [p.name for p in parameters if p.default is inspect.Parameter.empty]

    def problem(self, kind: str, body: object) -> str | None:
        """Why Gradio could not take `body` (None if it can)."""
        if not isinstance(body, dict):
            return "the body must be a JSON object."
        if kind == "call/v2":
            unknown = sorted(set(body) - {*self.names, "oauth_token"})
            missing = [name for name in self.required if name not in body]
            if unknown or missing:
                return f"unknown {unknown} or missing {missing} arguments: it takes {', '.join(self.names)}."
            return None
        data, index = body.get("data"), body.get("fn_index")
        if not isinstance(data, list) or len(data) not in (self.inputs, self.api_inputs):
            return f"'data' must be a list of {self.api_inputs} values (GET /gradio_api/info lists them)."
        if index is not None and index != self.index:
            return f"fn_index {index!r} is not this endpoint's ({self.index}): leave it out."
        return None

    def completed(self, body: object) -> object:
        """The body with None for the inputs that info leaves out, where the caller sent info's
        values only: Gradio's /run needs every input, and the handlers take None as an empty State."""
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) == self.inputs:
            return body
        values = iter(data)
        return {**body, "data": [None if hidden else next(values) for hidden in self.hidden]}


class GradioShield:
    """Checks calls of the UI's named endpoints and its pages before Gradio does (see the module doc).

    `blocks` gives the UI's gr.Blocks; it is read at the first request, once Gradio has set it up.
    """

    def __init__(self, app: ASGIApp, blocks: Callable):
        self.app, self.blocks = app, blocks
        self._endpoints: dict[str, Endpoint] | None = None

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        if self._endpoints is None:
            fns = self.blocks().fns
            self._endpoints = {
                fn.api_name: Endpoint(index, [b.skip_api for b in fn.inputs], fn.fn)
                for index, fn in fns.items()
                if fn.api_name and fn.fn is not None
            }
        return self._endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        call = ENDPOINT.match(path) if method == "POST" else None
        if "/proxy=" in path:
            await _answer(scope, receive, send, 404, "this server proxies no URLs.")
        elif any(len(segment) > MAX_SEGMENT for segment in path.split("/")):
            await _answer(scope, receive, send, 404, f"no such file: a path segment is over {MAX_SEGMENT} characters.")
        elif path == "/" and not self._known_page(scope):
            await _answer(scope, receive, send, 404, "no such page: the UI is at / without a page parameter.")
        elif call:
            await self._call(scope, receive, send, call.group(1), call.group(2))
        elif method == "POST" and path in ID_ROUTES and _is_json(scope):
            await self._checked(scope, receive, send, self._unknown_ids)
        else:
            await self.app(scope, receive, send)

    def _known_page(self, scope: Scope) -> bool:
        pages = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("page", [""])
        return all(page in {name for name, *_ in self.blocks().pages} for page in pages)

    async def _call(self, scope: Scope, receive: Receive, send: Send, kind: str, name: str) -> None:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            names = ", ".join(sorted(self.endpoints))
            await _answer(scope, receive, send, 404, f"no API endpoint {name!r}: use one of {names}.")
            return
        run = kind in ("run", "api")
        complete = endpoint.completed if run else None
        await self._checked(scope, receive, send, lambda body: endpoint.problem(kind, body), run, complete)

    def _unknown_ids(self, body: object) -> str | None:
        """Why a queue/join or component_server body names no event or component (Gradio: KeyError, 500)."""
        if not isinstance(body, dict):
            return "the body must be a JSON object."
        index, component = body.get("fn_index"), body.get("component_id")
        fns, blocks = self._session_config(body.get("session_hash"))
        if index is not None and (not isinstance(index, int) or index not in fns):
            return f"fn_index {index!r} names no event of this UI."
        if component is not None and (not isinstance(component, int) or component not in blocks):
            return f"component_id {component!r} names no component of this UI."
        return None

    def _session_config(self, session: object) -> tuple[dict, dict]:
        """The events and components a session knows, as Gradio looks them up: a session's own
        (`gr.render` adds events per session, such as the Batch tab's rotate buttons), else the app's."""
        app = self.blocks()
        if isinstance(session, str) and session in app.state_holder:
            config = app.state_holder[session].blocks_config
            return config.fns, config.blocks
        return app.fns, app.blocks

    async def _checked(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        check: Callable[[object], str | None],
        run: bool = False,
        complete: Callable[[object], object] | None = None,
    ) -> None:
        """The JSON body read and checked (400 with `check`'s reason), then handed on as it came,
        or as `complete` fills it in."""
        body = await _read_body(receive)
        if body is None:
            await _answer(scope, receive, send, 413, f"a call's body is over {MAX_CALL_BODY // 1024} KB.")
            return
        try:
            value = json.loads(body or b"null")
            problem = "the JSON is nested too deep." if _too_deep(value) else _remote_file(value) or check(value)
        except ValueError:
            problem = "the body is not JSON."
        except RecursionError:
            problem = "the JSON is nested too deep."
        if problem:
            await _answer(scope, receive, send, 400, f"{scope['path']}: {problem}")
            return
        if complete is not None and (filled := complete(value)) is not value:
            body = json.dumps(filled).encode()
            scope = {**scope, "headers": _with_length(scope["headers"], len(body))}
        await self.app(scope, _replay(body), _status_by_error_title(send) if run else send)


def _too_deep(value: object) -> bool:
    """Whether `value` nests lists and objects more than MAX_JSON_DEPTH levels (Gradio's checks
    of the values recurse, and fail with a 500 where Python's stack ends)."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return True
        level = [
            child
            for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (list, dict))
        ]
    return False


def _remote_file(value: object) -> str | None:
    """Why a FileData names a URL as its path: Gradio would fetch it (a request from the server to
    any address the caller chooses) where only uploads may be named."""
    level = [value]
    while level:
        for item in level:
            path = item.get("path") if isinstance(item, dict) else None
            if isinstance(path, str) and _SCHEME.match(path):
                return f"{path[:80]!r} is a URL; name an uploaded file (POST /gradio_api/upload gives its path)."
        level = [c for i in level if isinstance(i, (list, dict)) for c in (i.values() if isinstance(i, dict) else i)]
    return None


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    return [*((k, v) for k, v in headers if k != b"content-length"), (b"content-length", str(length).encode())]


def _is_json(scope: Scope) -> bool:
    return dict(scope["headers"]).get(b"content-type", b"").startswith(b"application/json")


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None once it grows past MAX_CALL_BODY."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_CALL_BODY:
            return None
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """`receive` for the app: the body already read, then whatever the client does next."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _status_by_error_title(send: Send) -> Send:
    """Gradio's /run answers 500 to every error: give each its status (`_status_of_error`), holding
    back the start of a 500 until its body says which error it was."""
    held: Message | None = None

    async def rewrite(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] == 500:
            held = message
            return
        if held is not None and message["type"] == "http.response.body":
            status = _status_of_error(message.get("body", b""))
            await send({**held, "status": status})
            held = None
        await send(message)

    return rewrite


def _status_of_error(body: bytes) -> int:
    """A /run error's status: by the gr.Error's title, or 400 where Gradio's pydantic check of the
    caller's data failed (its message says "validation error for"); else 500, unexpected."""
    try:
        payload = json.loads(body)
        title, error = payload.get("title"), str(payload.get("error"))
    except (ValueError, AttributeError):
        return 500
    if title is None:
        return 400 if " validation error for " in error or _NOT_UPLOADED in error else 500
    return STATUS_BY_TITLE.get(title, 400)


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
