"""How long work will take on this machine: seconds per image measured here, kept between runs.

On a CPU one image can take 10 s and a clip minutes, and a wait that shows only a timer or a
frame count looks like a hang. The best figure for the rest of a run is its own rate once one
image (or frame) is done; until then, this machine's past runs of the same model at the same
inference size on the same device. Those live in a small JSON file in the user's cache folder
(`settings.user_cache_dir()`), the median of the last few images per model, device and size.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
from pathlib import Path

from . import settings

KEPT = 5  # past figures kept per model, device and size: enough for a median that ignores one odd run
_GUARD = threading.Lock()


def timings_file() -> Path:
    return settings.user_cache_dir() / "timings.json"


def _key(model: str, device: object, size: int, unit: str) -> str:
    return f"{model} on {device} at {size}" + ("" if unit == "image" else f" per {unit}")


def _read() -> dict[str, list[float]]:
    try:
        stored = json.loads(timings_file().read_text())
    except (OSError, ValueError):  # none yet, or damaged: estimates start over
        return {}
    return stored if isinstance(stored, dict) else {}


def past_seconds(model: str, device: object, size: int, unit: str = "image") -> float | None:
    """Seconds per image (or per clip `frame`, which are pipelined and usually smaller) of `model`
    at inference `size` on `device` in this machine's past runs, or None."""
    figures = _read().get(_key(model, device, size, unit))
    if not isinstance(figures, list) or not figures:
        return None
    return statistics.median(float(figure) for figure in figures)


def past_run(remover, unit: str = "image") -> float | None:
    """`past_seconds` for a loaded `Remover` (its model, device and inference size)."""
    return past_seconds(remover.info.name, remover.device, remover.inference_size, unit)


def record(model: str, device: object, size: int, seconds: float, unit: str = "image") -> None:
    """Adds one image's (or frame's) seconds; a cache folder that cannot be written only costs the estimate."""
    with _GUARD:
        stored = _read()
        key = _key(model, device, size, unit)
        stored[key] = [*stored.get(key, []), round(seconds, 3)][-KEPT:]
        try:
            timings_file().parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=timings_file().parent, delete=False, suffix=".tmp") as file:
                json.dump(stored, file)
            os.replace(file.name, timings_file())
        except OSError:
            pass


def seconds_left(total: int, done: int, elapsed: float, past: float | None) -> float | None:
    """Seconds until `total` items are done: this run's own rate once one is, else the past
    runs' (less the time already spent on the first); None where there is neither."""
    if done > 0:
        return max(total - done, 0) * elapsed / done
    if past is None:
        return None
    return max(total * past - elapsed, 0.0)


def describe(seconds: float) -> str:
    """'8 s', '3 min 20 s', '1 h 05 min': as precise as a wait needs."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{max(seconds, 1)} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def expected(past: float | None, count: int = 1, what: str = "image") -> str:
    """The line a front end shows before work starts: 'about 9 s per image here (past runs)'."""
    if past is None:
        return f"no past runs of this model and size here yet: the first {what} gives the estimate"
    total = f", about {describe(past * count)} for {count}" if count > 1 else ""
    return f"about {describe(past)} per {what} on this machine{total} (past runs)"
