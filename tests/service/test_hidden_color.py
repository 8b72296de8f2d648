"""A cut-out gives nothing of the removed background away: every output read back (API PNG and
WebP, the CLI, the video job's ZIP, ProRes 4444 and WebM with alpha) has colour 0 where alpha is
0, unless `keep_hidden_color` asks to keep it. The UI's downloads are checked in test_web_ui.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from live import (
    REPO,
    SERVER_ARGS,
    Server,
    decoded_frames,
    make_clip,
    opened,
    photo,
    png_bytes,
    run_server,
    submit,
    wait_until_finished,
)
from PIL import Image

pytestmark = pytest.mark.slow  # a server and the CLI in subprocesses
HARD = {"threshold": "0.5"}  # a binary mask: most of the background has alpha 0


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home):
    with run_server(tmp_path_factory.mktemp("hidden_color"), hf_home, *SERVER_ARGS) as up:
        yield up


def hidden_colour(rgba: np.ndarray) -> tuple[int, float]:
    """How many pixels have alpha 0, and the mean of their colour values."""
    hidden = rgba[..., 3] == 0
    return int(hidden.sum()), float(rgba[hidden][:, :3].mean()) if hidden.any() else 0.0


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_the_api_zeroes_hidden_colour_unless_asked_to_keep_it(server: Server, fmt: str) -> None:
    image = png_bytes(photo())
    zeroed = np.asarray(opened(server.remove(image, format=fmt, **HARD)).convert("RGBA"))
    count, mean = hidden_colour(zeroed)
    assert count > 1000 and mean == 0.0
    kept = np.asarray(opened(server.remove(image, format=fmt, keep_hidden_color="true", **HARD)).convert("RGBA"))
    kept_count, kept_mean = hidden_colour(kept)
    assert kept_count == count and kept_mean > 10  # the photo's background, as asked
    assert np.array_equal(zeroed[..., 3], kept[..., 3])


def test_the_api_refuses_a_keep_hidden_color_that_is_not_a_flag(server: Server) -> None:
    answer = server.remove(png_bytes(photo()), keep_hidden_color="maybe")
    assert answer.status_code == 400 and "keep_hidden_color" in answer.json()["error"]


def _clip_result(server: Server, clip: Path, fmt: str, **fields) -> bytes:
    answer = submit(server, clip, output="cutout", format=fmt, **HARD, **fields)
    assert answer.status_code == 202, answer.text
    status = wait_until_finished(server, answer.json()["id"])
    assert status["status"] == "done", status
    return server.get(f"/api/video/{status['id']}/result").content


def _frames_rgba(data: bytes, fmt: str, folder: Path) -> list[np.ndarray]:
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [name for name in archive.namelist() if name.endswith(".png")]
            return [np.asarray(Image.open(io.BytesIO(archive.read(name)))) for name in names]
    path = folder / f"result.{fmt}"
    path.write_bytes(data)
    decoder = "libvpx-vp9" if fmt == "webm" else None  # the decoder that reads VP9's alpha
    return [frame.to_ndarray(format="rgba") for frame in decoded_frames(path, decoder)]


@pytest.mark.parametrize("fmt", ["zip", "mov", "webm"])
def test_every_transparent_clip_format_zeroes_hidden_colour(server: Server, tmp_path: Path, fmt: str) -> None:
    clip = tmp_path / "walk.mp4"
    make_clip(clip, frames=3, size=(96, 64))
    zeroed = _frames_rgba(_clip_result(server, clip, fmt), fmt, tmp_path)
    kept = _frames_rgba(_clip_result(server, clip, fmt, keep_hidden_color="true"), fmt, tmp_path)
    assert len(zeroed) == len(kept) == 3
    for plain, keeping in zip(zeroed, kept, strict=True):
        count, mean = hidden_colour(plain)
        kept_mean = hidden_colour(keeping)[1]
        # Lossy codecs keep it near 0 (VP9 smears a little colour in from the edge); kept, it is the gradient.
        assert count > 100 and mean <= {"zip": 0, "mov": 1, "webm": 12}[fmt] and kept_mean > 30, (
            count,
            mean,
            kept_mean,
        )


def test_the_cli_zeroes_hidden_colour_unless_asked_to_keep_it(tmp_path: Path, hf_home: Path) -> None:
    source = tmp_path / "photo.png"
    photo().save(source)
    environment = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_DEVICE": "cpu"}
    results = []
    for name, extra in (("zeroed.png", []), ("kept.png", ["--keep-hidden-color"])):
        command = [sys.executable, "rmbg.py", "remove", str(source), "-o", str(tmp_path / name), "-q"]
        command += [*SERVER_ARGS, "--threshold", "0.5", *extra]
        done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results.append(np.asarray(Image.open(tmp_path / name)))
    count, mean = hidden_colour(results[0])
    assert count > 1000 and mean == 0.0
    assert hidden_colour(results[1])[1] > 10
