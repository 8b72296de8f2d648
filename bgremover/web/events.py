"""What every UI event shares, whichever tab it belongs to: where its upload lies, how its errors
reach the user (and the log), and how models are offered to pick from."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from ..hub import ModelLoadError
from ..service.admission import Busy
from ..service.pool import ModelPool

log = logging.getLogger("bgremover.web.ui")

# Light events (thumbnails, status, option toggles): no queue of their own, hidden from the API page.
LIGHT = {"concurrency_limit": None, "api_visibility": "private", "show_progress": "hidden"}


def upload_name(upload: object) -> str:
    if isinstance(upload, dict):
        return Path(str(upload.get("orig_name") or upload.get("path") or "image")).name
    return Path(upload).name if isinstance(upload, str) else "image"


def upload_path(upload: object, missing: str) -> Path:
    """The file of an upload as the heavy events receive it (unpreprocessed: a FileData dict, or a path).

    Those events skip Gradio's preprocessing, which would open the file with Pillow first and
    fail on a broken one with Pillow's words; the service decodes it and every bad file gets
    the app's message. Gradio checks that a FileData names one of its uploads, but a plain dict
    or string passes unchecked: so the file must lie in Gradio's upload folder, or any image the
    server can read would be one API call away.
    """
    if not upload:
        raise gr.Error(missing)
    named = upload.get("path") if isinstance(upload, dict) else upload
    path = Path(named).resolve() if isinstance(named, str) else None
    if path is None or not path.is_relative_to(Path(get_upload_folder()).resolve()):
        raise gr.Error(
            "not an uploaded file: upload the image first (the UI does; API clients POST /gradio_api/upload)."
        )
    return path


def friendly(handler: Callable) -> Callable:
    """Every error as a readable gr.Error, logged by `as_gradio_error`; Gradio's own traceback is off."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as error:
            message = as_gradio_error(handler.__name__, error)
            message.print_exception = False
            if message is error:
                raise
            raise message from error

    return wrapper


def as_gradio_error(name: str, error: Exception) -> gr.Error:
    """What the user sees of `error`. A fixable one (not an image, a gated model, a bad option) is
    logged in one line, as the API's access log does; model errors stay open, they hold the fix.
    Only a bug gets its traceback logged. Call it while handling `error`."""
    if isinstance(error, gr.Error):
        message = error
    elif isinstance(error, ModelLoadError):
        message = gr.Error(str(error), duration=None, title="Model not available")
    elif isinstance(error, Busy):
        message = gr.Error(str(error), title="Busy")
    elif isinstance(error, ValueError):  # ImageError and bad options
        message = gr.Error(str(error))
    else:
        log.exception("%s failed", name)
        message = f"Unexpected error ({type(error).__name__}); the server log has the details."
        return gr.Error(message, title="Unexpected error")  # the title keeps its 500 on /run (shield.py)
    log.info("UI %s refused: %s", name, str(message.message).split("\n")[0])
    return message


AVAILABILITY_MARKS = {
    "ready": "ready",
    "download": "downloads on first use",
    "token": "gated: needs HF_TOKEN",
    "offline": "not on this machine",
    "failed": "failed to load",
}


def model_choices(pool: ModelPool) -> list[tuple[str, str]]:
    """Dropdown entries: name, license (non-commercial where it is), where the weights come from,
    and whether the model can run here now, so a user sees before picking what will work."""
    choices = []
    for row in pool.models():
        license_name = "non-commercial" if "non-commercial" in row["license"] else row["license"].split(" (")[0]
        source = "local checkpoint" if row["source"] == "local" else license_name
        choices.append((f"{row['name']} · {source} · {AVAILABILITY_MARKS[row['availability']]}", row["name"]))
    return choices


def model_hint(pool: ModelPool, model: str) -> str | None:
    """The licence hint under a model picker, where the chosen model is a gated one (RMBG); None
    (no hint) for an open one, whose licence its entry already names."""
    rows = {row["name"]: row for row in pool.models()}
    row = rows.get(model)
    if row is None or not row["gated"]:
        return None
    return (
        "RMBG weights are for non-commercial use; this gated model needs HF_TOKEN and its license accepted on the Hub."
    )
