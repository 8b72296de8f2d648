"""The models of one process, each loaded once and shared by every request.

Model weights are the expensive part (up to a gigabyte each), so every user of the UI,
the API or a CLI run gets the same engine. Only zoo names and the process's own default
model can be asked for, so no client can make a server download arbitrary repositories
or read arbitrary files.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

import torch

from .. import hub, settings, zoo
from ..engines import choose_engine, load_engine, pick_device, precision_for
from ..hub import ModelLoadError
from ..pipeline import Remover
from .options import parse_size

log = logging.getLogger(__name__)


def _public_name(spec: str) -> str:
    """How a custom model is named to clients: a Hub repo id as it is, a local checkpoint by its name."""
    try:
        return hub.resolve(spec).name
    except ModelLoadError:
        return Path(spec).name or spec


class UnknownModel(ValueError):
    """A model name this process does not offer (only the zoo and its own default model)."""


class ModelNotReady(ModelLoadError):
    """The model is being downloaded or loaded by another request right now."""


class ModelPool:
    """Loads models on first use (or in the background) and keeps them for everyone."""

    def __init__(
        self,
        default_model: str,
        device: str | torch.device = "auto",
        precision: str = "auto",
        size: int | None = None,
        runtime: str | None = None,
    ):
        """`runtime` (auto, torch, openvino: what --engine names) None follows RMBG_ENGINE; a bad
        runtime or precision fails here, before any load."""
        self.device = pick_device(device)
        self.precision = precision
        self.runtime = settings.engine() if runtime is None else runtime  # auto picks per model when it loads
        self.precision_name = precision_for(choose_engine(self.runtime, self.device), precision, self.device)
        self.default_size = parse_size(size)
        self._custom_spec = None if self._zoo_name(default_model) else default_model
        # A custom checkpoint is shown by its name (folder or file stem), never by its path on the server.
        self.default_model = self._zoo_name(default_model) or _public_name(default_model)
        self._guard = threading.Lock()
        self._removers: dict[str, Remover] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._states: dict[str, str] = {}
        self._errors: dict[str, str] = {}

    @staticmethod
    def _zoo_name(spec: str) -> str | None:
        info = zoo.lookup(spec)
        return info.name if info else None

    def names(self) -> list[str]:
        """Every model a user may pick: the zoo, plus the default if it is a custom one."""
        names = list(zoo.ZOO)
        return names if self.default_model in names else [self.default_model, *names]

    def canonical(self, model: str | None) -> str:
        """The pool's name for `model`: a zoo name, or the default model; anything else is refused."""
        if not model or not str(model).strip():
            return self.default_model
        name = self._zoo_name(str(model).strip())
        if name:
            return name
        if model in (self.default_model, self._custom_spec):
            return self.default_model
        raise UnknownModel(f"unknown model {model!r}: use one of {', '.join(self.names())}.")

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)}, {self.precision_name})"
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
            spec = self._custom_spec if name == self.default_model and self._custom_spec else name
            engine = load_engine(spec, self.device, self.precision, engine=self.runtime)
            remover = Remover(engine, self.default_size)
        except ModelLoadError as error:
            self._fail(name, self._without_paths(str(error)))
            raise ModelLoadError(self._errors[name]) from error
        except Exception as error:  # out of memory, a broken driver: still a message, not a dead server
            log.exception("loading %s failed", name)
            self._fail(name, f"{name}: loading failed unexpectedly ({type(error).__name__}: {error}).")
            raise ModelLoadError(self._errors[name]) from error
        log.info("%s loaded (%s) in %.1f s", name, remover.engine.describe(), time.perf_counter() - started)
        with self._guard:
            self._removers[name] = remover
            self._errors.pop(name, None)
        return remover

    def _without_paths(self, message: str) -> str:
        """The message with the custom checkpoint's server path replaced by its name."""
        if not self._custom_spec:
            return message
        for path in (str(Path(self._custom_spec).expanduser().resolve()), self._custom_spec):
            message = message.replace(path, self.default_model)
        return message

    def _set_state(self, name: str, state: str) -> None:
        with self._guard:
            self._states[name] = state

    def _fail(self, name: str, message: str) -> None:
        log.warning("model %s not available: %s", name, message)
        with self._guard:
            self._states[name] = "failed"
            self._errors[name] = message

    def load_in_background(self, model: str | None = None) -> threading.Thread:
        """Starts loading (and if needed downloading) a model without holding up the caller."""

        def load() -> None:
            with contextlib.suppress(ModelLoadError):  # recorded in the state: status line and /health show it
                self._load(self.canonical(model), wait=True)

        thread = threading.Thread(target=load, name="rmbg-preload", daemon=True)
        thread.start()
        return thread

    def is_cached(self, name: str) -> bool:
        spec = self._custom_spec if name == self.default_model and self._custom_spec else name
        try:
            return hub.is_cached(hub.resolve(spec))
        except (ModelLoadError, OSError, ValueError):
            return False

    def models(self) -> list[dict]:
        """One row per model for `/api/models` and the status line."""
        rows = []
        for name in self.names():
            info = zoo.ZOO.get(name)
            rows.append(
                {
                    "name": name,
                    "repo_id": info.repo_id if info else None,
                    "license": info.license if info else "see the model's own card",
                    "gated": bool(info and info.gated),
                    "description": info.description if info else "custom model",
                    "input_size": info.input_size if info else None,
                    "default": name == self.default_model,
                    "cached": self.is_cached(name),
                    "loaded": self.state(name) == "loaded",
                    "state": self.state(name) or "not loaded",
                    "error": self.error(name),
                }
            )
        return rows

    def engine_name(self, name: str) -> str:
        """The runtime `name` runs on once loaded (`auto` settles per model), else the one asked for."""
        with self._guard:
            remover = self._removers.get(name)
        return remover.engine.name if remover else self.runtime

    def health(self) -> tuple[bool, dict]:
        """Ready once the default model is loaded; otherwise why not (still loading, or the error)."""
        name = self.default_model
        state = self.state(name)
        body = {"status": "ok", "device": str(self.device), "engine": self.engine_name(name)}
        body |= {"precision": self.precision_name, "model": name}
        if state == "loaded":
            return True, body
        if state == "failed":
            return False, {**body, "status": "error", "reason": self.error(name)}
        return False, {**body, "status": "loading", "reason": f"{name} is {state or 'waiting to load'}."}
