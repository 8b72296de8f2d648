"""A real `python rmbg.py` server on a free loopback port, for the black-box tests.

Every test file that needs a live server starts it through `run_server`; conftest's
`server_logs_on_failure` prints the logs of the servers a failed test used.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import requests
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
MODEL = "RMBG-1.4"
# fp32 everywhere: `auto` may pick bf16 on some CPUs, and the in-process reference must match the server.
SERVER_ARGS = ("--model", MODEL, "--size", "256", "--precision", "fp32")
TIMEOUT = 120
UPLOAD_LIMIT_MB = 1  # the API servers' RMBG_MAX_UPLOAD_MB: small, so the 413 tests send little


@dataclass
class Server:
    url: str
    log: Path
    running: bool = True
    process: subprocess.Popen | None = None

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=TIMEOUT)

    def remove(self, image: bytes, name: str = "photo.png", **fields) -> requests.Response:
        data = {key: str(value) for key, value in fields.items()}
        return requests.post(self.url + "/api/remove", files={"file": (name, image)}, data=data, timeout=TIMEOUT)


STARTED: list[Server] = []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(process: subprocess.Popen, server: Server, path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}:\n{server.log.read_text()}")
        try:
            if server.get(path).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.url}{path} did not answer 200 in time:\n{server.log.read_text()}")


@contextmanager
def run_server(folder: Path, hf_home: Path, *args: str, ready: str = "/health", **env: str) -> Iterator[Server]:
    """`python rmbg.py` on a free port, offline on the synthetic cache, its output in folder/server.log."""
    environment = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_DEVICE": "cpu", **env}
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "RMBG_MODEL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        environment.pop(name, None)
    port = free_port()
    server = Server(f"http://127.0.0.1:{port}", folder / "server.log")
    # A command (`demo`) comes first; the test's own options after the free port, so that theirs wins
    # (a taken --port, say).
    named = 1 if args and not args[0].startswith("-") else 0
    command = [sys.executable, "rmbg.py", *args[:named], "--host", "127.0.0.1", "--port", str(port), *args[named:]]
    with open(server.log, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server.process = process
    STARTED.append(server)
    try:
        _wait_until_up(process, server, ready, time.monotonic() + 180)
        yield server
    finally:
        server.running = False
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sample_image(width: int = 200, height: int = 150, seed: int = 0) -> Image.Image:
    """A gradient with a disc on it, different for every seed."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 40 + seed * 20)], -1)
    image = Image.fromarray(base.astype(np.uint8))
    ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(230, 40, seed))
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def opened(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def is_cutout_of(cutout: Image.Image, image: Image.Image) -> bool:
    """Whether an RGBA cut-out has `image`'s colours where it is visible and 0 where alpha is 0
    (the removed background is not kept: docs/output.md, "Hidden colour")."""
    pixels = np.asarray(cutout)
    visible = pixels[..., 3:] > 0
    return np.array_equal(pixels[..., :3], np.where(visible, np.asarray(image.convert("RGB")), 0))


def channel(image: Image.Image, band: str) -> np.ndarray:
    return np.asarray(image.getchannel(band), dtype=np.int16)


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """An RGB image whose every pixel differs, so orientation and channel mix-ups show."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) % 256], axis=-1)
    return Image.fromarray(array.astype(np.uint8))


def photo(width: int = 300, height: int = 200) -> Image.Image:
    """A bright disc on a dark textured background."""
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2
    rng = np.random.default_rng(0)
    array = np.where(disc[..., None], [240, 200, 40], rng.integers(0, 90, (height, width, 3)))
    return Image.fromarray(array.astype(np.uint8))


def make_clip(
    path: Path,
    frames: int = 6,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    times_ms: list[int] | None = None,
    audio: str | None = None,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    noise: int = 0,
) -> list[float]:
    """A small generated clip (a disc moving over a gradient) and its frame times in seconds; `times_ms`
    makes a variable frame rate, `audio` adds a tone in that codec, `rotation` sets display rotation,
    `noise` makes it one still picture with fresh noise of that many levels in every frame."""
    import av  # the `video` extra

    times = times_ms or [i * 100 for i in range(frames)]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=10)
        video.width, video.height, video.pix_fmt = size[0], size[1], pix_fmt
        video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        sound = container.add_stream(audio, rate=48000, layout="mono") if audio else None
        noisy = np.random.default_rng(0)
        for index, milliseconds in enumerate(times):
            image = sample_image(*size, seed=0 if noise else index)
            if noise:
                pixels = np.asarray(image, np.int16) + noisy.integers(-noise, noise + 1, (size[1], size[0], 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            frame = av.VideoFrame.from_image(image)
            frame.pts, frame.time_base = milliseconds, Fraction(1, 1000)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            _tone(container, sound, seconds=(times[-1] + 100) / 1000)
    return [t / 1000 for t in times]


def _tone(container, stream, seconds: float) -> None:
    import av

    samples = np.sin(np.arange(int(48000 * seconds)) * 2 * np.pi * 440 / 48000).astype(np.float32)[None]
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = 48000
    resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="mono", rate=48000)
    for chunk in resampler.resample(frame) + resampler.resample(None):
        chunk.pts = None
        container.mux(stream.encode(chunk))
    container.mux(stream.encode(None))


def decoded_frames(path: Path, decoder: str | None = None) -> list:
    """Every frame of `path` (PyAV frames); `decoder` names one (libvpx-vp9 is the one that reads VP9's alpha)."""
    import av  # the `video` extra

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if decoder is None:
            return list(container.decode(stream))
        context = av.CodecContext.create(decoder, "r")
        frames = [f for packet in container.demux(stream) for f in context.decode(packet)]
        for frame in frames:
            frame.time_base = stream.time_base
        return frames


def submit(server: Server, clip: Path, **fields) -> requests.Response:
    data = {key: str(value) for key, value in fields.items()}
    with open(clip, "rb") as file:
        return requests.post(f"{server.url}/api/video", files={"file": (clip.name, file)}, data=data, timeout=TIMEOUT)


def wait_until_finished(server: Server, job_id: str, seconds: float = 300) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = server.get(f"/api/video/{job_id}").json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {status} after {seconds} s")
