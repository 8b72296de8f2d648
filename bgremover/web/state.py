"""What the UI and the API share in one server process: loaded models, the device lock, scratch files.

Model weights are the expensive part (up to a gigabyte each), so each model is loaded
once and every user of the UI and the API gets the same `Remover`. A second lock makes
sure only one heavy inference runs on the device at a time: two at once would not be
faster on one GPU, only risk running out of its memory.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import hub, imaging, zoo
from ..hub import ModelLoadError
from ..pipeline import Remover, check_inference_size, pick_device, pick_dtype, precision_name

log = logging.getLogger(__name__)

# Inference sizes above this need tens of GB for activations; no model in the zoo is trained above 2048.
MAX_INFERENCE_SIZE = 2048
DEFAULT_MAX_UPLOAD_MB = 50.0
_MIB = 1024 * 1024


class UnknownModel(ValueError):
    """A model name the server does not offer (only the zoo and the server's own default model)."""


class ModelNotReady(ModelLoadError):
    """The model is being downloaded or loaded by another request right now."""


def max_upload_bytes() -> int:
    """The upload limit from RMBG_MAX_UPLOAD_MB (fractions allowed), read at start-up."""
    text = os.environ.get("RMBG_MAX_UPLOAD_MB", "").strip() or str(DEFAULT_MAX_UPLOAD_MB)
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if megabytes <= 0:
        raise ValueError(f"RMBG_MAX_UPLOAD_MB={text!r} must be a positive number of megabytes (e.g. 50).")
    return int(megabytes * _MIB)


def parse_size(value: object, default: int | None = None) -> int | None:
    """An inference size from a form or a dropdown; empty, 0 or 'default' mean the server's default."""
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "0", "default", "none", "model default"):
        return default
    try:
        size = int(float(text))
    except ValueError:
        raise ValueError(f"inference size {value!r} is not a number: use a multiple of 32 such as 1024.") from None
    if size > MAX_INFERENCE_SIZE:
        raise ValueError(f"inference size {size} is above the limit of {MAX_INFERENCE_SIZE}.")
    return check_inference_size(size)


class Registry:
    """The models of this server process, loaded on first use and kept for everyone."""

    def __init__(
        self,
        default_model: str,
        device: str = "auto",
        precision: str = "auto",
        size: int | None = None,
        max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    ):
        self.device = pick_device(device)
        self.precision = precision
        self.dtype = pick_dtype(precision, self.device)
        self.default_size = parse_size(size)
        self.max_pixels = max_pixels
        self.default_model = self._zoo_name(default_model) or default_model
        self.inference_lock = threading.Lock()
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
        """Every model a user may pick: the zoo, plus the server's default if it is a custom one."""
        names = list(zoo.ZOO)
        return names if self.default_model in names else [self.default_model, *names]

    def canonical(self, model: str | None) -> str:
        """The registry's name for `model`; only the zoo and the default, so no client can make the
        server download arbitrary repositories or read arbitrary files."""
        if not model or not str(model).strip():
            return self.default_model
        name = self._zoo_name(str(model).strip())
        if name:
            return name
        if model == self.default_model:
            return model
        raise UnknownModel(f"unknown model {model!r}: use one of {', '.join(self.names())}.")

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)}, {self.precision_name})"
        return f"{self.device} ({self.precision_name})"

    @property
    def precision_name(self) -> str:
        return precision_name(self.dtype)

    def state(self, name: str) -> str:
        """'loaded', 'downloading', 'loading', 'failed' or '' (not tried yet)."""
        with self._guard:
            return "loaded" if name in self._removers else self._states.get(name, "")

    def error(self, name: str) -> str | None:
        with self._guard:
            return None if name in self._removers else self._errors.get(name)

    def get(self, model: str | None = None, size: int | None = None, wait: bool = True) -> Remover:
        """The shared Remover for `model` at inference `size` (None: the server's default).

        Other sizes are shallow copies sharing the one loaded network, so a size is a
        per-call choice and costs no memory. With `wait=False`, a model that another
        request is loading right now raises ModelNotReady instead of blocking.
        """
        remover = self._load(self.canonical(model), wait)
        size = parse_size(size, self.default_size)
        if size is None or size == remover.inference_size:
            return remover
        view = copy.copy(remover)
        view.inference_size = size
        return view

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
        cached = self.is_cached(name)
        self._set_state(name, "loading" if cached else "downloading")
        started = time.perf_counter()
        try:
            remover = Remover(name, str(self.device), self.precision, self.default_size, self.max_pixels)
        except ModelLoadError as error:
            self._fail(name, str(error))
            raise
        except Exception as error:  # out of memory, a broken driver: still a message, not a dead server
            log.exception("loading %s failed", name)
            self._fail(name, f"{name}: loading failed unexpectedly ({type(error).__name__}: {error}).")
            raise ModelLoadError(self._errors[name]) from error
        log.info("%s loaded on %s in %.1f s", name, self.device, time.perf_counter() - started)
        with self._guard:
            self._removers[name] = remover
            self._errors.pop(name, None)
        return remover

    def _set_state(self, name: str, state: str) -> None:
        with self._guard:
            self._states[name] = state

    def _fail(self, name: str, message: str) -> None:
        log.warning("model %s not available: %s", name, message)
        with self._guard:
            self._states[name] = "failed"
            self._errors[name] = message

    def load_in_background(self, model: str | None = None) -> threading.Thread:
        """Starts loading (and if needed downloading) a model without holding up the server's start."""

        def load() -> None:
            with contextlib.suppress(ModelLoadError):  # recorded in the state: status panel and /health show it
                self._load(self.canonical(model), wait=True)

        thread = threading.Thread(target=load, name="rmbg-preload", daemon=True)
        thread.start()
        return thread

    def is_cached(self, name: str) -> bool:
        try:
            return hub.is_cached(hub.resolve(name))
        except (ModelLoadError, OSError, ValueError):
            return False

    def models(self) -> list[dict]:
        """One row per model for `/api/models` and the status panel."""
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

    def health(self) -> tuple[bool, dict]:
        """Ready once the default model is loaded; otherwise why not (still loading, or the error)."""
        name = self.default_model
        state = self.state(name)
        body = {"status": "ok", "device": str(self.device), "model": name}
        if state == "loaded":
            return True, body
        if state == "failed":
            return False, {**body, "status": "error", "reason": self.error(name)}
        return False, {**body, "status": "loading", "reason": f"{name} is {state or 'waiting to load'}."}


@dataclass
class Usage:
    """Time and memory of one measured run, as the Compare tab shows them."""

    seconds: float = 0.0
    peak_mib: float = 0.0
    delta_mib: float = 0.0
    what: str = ""

    def describe(self) -> str:
        memory = f"{self.what} {self.peak_mib:,.0f} MiB (+{self.delta_mib:,.0f} MiB during the run)"
        return f"{self.seconds:.2f} s · {memory}"


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB
    except OSError:
        return _peak_rss_mib()


def _peak_rss_mib() -> float:
    """The process's peak RSS: VmHWM where /proc has it (resettable), else getrusage's lifetime peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Writing 5 to clear_refs resets VmHWM (Linux), so the peak is this run's, not the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


@contextmanager
def measure(device: torch.device) -> Iterator[Usage]:
    """Wall time and peak memory of the block: CUDA max allocated on a GPU, process RSS on the CPU."""
    usage = Usage()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / _MIB
    else:
        _reset_peak_rss()
        before = _rss_mib()
    started = time.perf_counter()
    yield usage
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        usage.peak_mib, usage.what = torch.cuda.max_memory_allocated(device) / _MIB, "CUDA max allocated"
    else:
        usage.peak_mib, usage.what = _peak_rss_mib(), "peak RSS"
    usage.seconds = time.perf_counter() - started
    usage.delta_mib = max(usage.peak_mib - before, 0.0)


class Scratch:
    """Folders for result files the UI hands out; ones older than `max_age` seconds are deleted."""

    def __init__(self, max_age: float = 3600.0):
        self.root = Path(tempfile.mkdtemp(prefix="rmbg-web-"))
        self.max_age = max_age

    def new_dir(self) -> Path:
        self.prune()
        return Path(tempfile.mkdtemp(dir=self.root))

    def prune(self) -> None:
        cutoff = time.time() - self.max_age
        for folder in self.root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except FileNotFoundError:
                pass  # another request pruned it first
