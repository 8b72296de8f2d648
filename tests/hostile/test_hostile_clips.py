"""Hostile clips against a real `rmbg serve` (and the CLI): playlists and other containers that
open more than the upload, frames that grow past the limit, truncated clips, still images posted
as clips, and the video jobs' files after expiry and after a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from live import REPO, TIMEOUT, make_clip, run_server, sample_image, submit, wait_until_finished

pytestmark = pytest.mark.slow  # servers and the CLI in subprocesses
ARGS = ("--model", "RMBG-1.4", "--size", "64", "--precision", "fp32")
PIXEL_LIMIT = 100_000  # 64x48 frames pass; the grown ones (2000x2000) do not
# The demuxers docs/video.md allows ("What is read"): MP4/MOV, Matroska/WebM, AVI, MPEG-PS/TS, Ogg, GIF.
ALLOWED_DEMUXERS = {"mov", "matroska", "avi", "mpeg", "mpegts", "ogg", "gif"}
REFUSED = "playlists, lists of files, image sequences and streams are refused"


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home):
    folder = tmp_path_factory.mktemp("hostile_clips")
    with run_server(folder, hf_home, *ARGS, RMBG_MAX_VIDEO_PIXELS=str(PIXEL_LIMIT), RMBG_VIDEO_QUEUE="8") as up:
        yield up


def _playlist(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An HLS playlist whose one entry is a real clip on the server's disk (and that clip)."""
    secret = tmp_path / "secret.mp4"
    make_clip(secret, frames=3)
    playlist = tmp_path / name
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\nfile:{secret}\n#EXT-X-ENDLIST\n")
    return playlist, secret


@pytest.mark.parametrize("name", ["list.m3u8", "holiday.mp4", "clip.ts"])
def test_a_playlist_of_a_server_file_is_refused_by_the_api_whatever_its_name(server, tmp_path, name) -> None:
    playlist, _ = _playlist(tmp_path, name)
    answer = submit(server, playlist, output="mask", format="mp4")
    assert answer.status_code == 415, answer.text
    assert REFUSED in answer.json()["error"]


def test_a_playlist_is_refused_by_the_video_tab(server, tmp_path) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    playlist, _ = _playlist(tmp_path, "list.m3u8")
    client = Client(server.url + "/", verbose=False)
    with pytest.raises(AppError, match=REFUSED):
        client.predict(handle_file(str(playlist)), "RMBG-1.4", "mask", "#ffffff", "mp4", api_name="/video")


def test_the_cli_refuses_a_playlist_named_as_a_clip(tmp_path, hf_home) -> None:
    playlist, _ = _playlist(tmp_path, "holiday.mp4")
    environment = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_DEVICE": "cpu"}
    out = tmp_path / "out.mp4"
    command = [sys.executable, "rmbg.py", "remove", str(playlist), "-o", str(out), "--output", "mask", *ARGS]
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and REFUSED in done.stderr, done.stderr
    assert not out.exists()


def _writable_samples(folder: Path) -> dict[str, Path]:
    """A two-frame file from every FFmpeg muxer PyAV can write one with, by the demuxer FFmpeg
    then picks for it (unrestricted), for the demuxers that are not allowed."""
    samples: dict[str, Path] = {}
    for name in sorted(av.formats_available):
        try:
            if not av.format.ContainerFormat(name, "w").is_output:
                continue
        except ValueError:
            continue
        path = folder / f"sample-{name}"
        try:
            _write_two_frames(path, name)
            with av.open(str(path)) as opened:
                demuxer = opened.format.name
        except (av.FFmpegError, ValueError, OSError, KeyError, TypeError):
            continue
        if not set(demuxer.split(",")) & set(ALLOWED_DEMUXERS):
            samples.setdefault(demuxer, path)
    return samples


def _write_two_frames(path: Path, fmt: str) -> None:
    with av.open(str(path), "w", format=fmt) as container:
        codec = container.default_video_codec
        if codec in (None, "none"):
            raise ValueError("no video")
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = stream.codec_context.codec.video_formats[0].name
        for index in range(2):
            frame = av.VideoFrame.from_image(sample_image(64, 48, seed=index)).reformat(format=stream.pix_fmt)
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_every_demuxer_that_is_not_allowed_gets_415(server, tmp_path) -> None:
    """Those PyAV can write a file for (20 with FFmpeg 8.1), and lists of files made by hand."""
    samples = _writable_samples(tmp_path)
    secret = tmp_path / "secret.mp4"
    make_clip(secret, frames=2)
    samples["concat"] = tmp_path / "list.mp4"
    samples["concat"].write_text(f"ffconcat version 1.0\nfile {secret}\n")
    samples["ffmetadata"] = tmp_path / "meta.mkv"
    samples["ffmetadata"].write_text(";FFMETADATA1\ntitle=x\n")
    assert len(samples) >= 10 and {"h264", "image2", "nut"} & set(samples), sorted(samples)
    answered = {demuxer: submit(server, path, output="mask", format="mp4") for demuxer, path in samples.items()}
    for answer in answered.values():  # any accepted by mistake leaves the queue to the next tests
        if answer.status_code == 202:
            requests.delete(f"{server.url}/api/video/{answer.json()['id']}", timeout=TIMEOUT)
    wrong = {
        demuxer: (answer.status_code, answer.text[:200])
        for demuxer, answer in answered.items()
        if answer.status_code != 415
    }
    assert not wrong, wrong
    assert server.get("/health").status_code == 200


def _growing_clip(path: Path, big: int) -> None:
    """MPEG-TS: five 64x48 frames, then two of big x big (two streams concatenated: a new SPS)."""
    parts = []
    for index, (size, frames) in enumerate((((64, 48), 5), ((big, big), 2))):
        part = path.with_name(f"part{index}.ts")
        with av.open(str(part), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for number in range(frames):
                pixels = np.full((size[1], size[0], 3), 40 * number, np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = 5 * index + number, Fraction(1, 10)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        parts.append(part.read_bytes())
    path.write_bytes(b"".join(parts))


def _peak_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_frames_that_grow_past_the_limit_fail_the_job_naming_it_and_memory_stays_bounded(server, tmp_path) -> None:
    clip = tmp_path / "grow.ts"
    _growing_clip(clip, 3000)  # 9 MP: hundreds of MB decoded and finished, were it let through
    pid = server.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak resident size starts again from now
    before = _peak_kb(pid)
    answer = submit(server, clip, output="mask", format="mp4")
    assert answer.status_code == 202, answer.text  # the header says 64x48
    status = wait_until_finished(server, answer.json()["id"])
    assert status["status"] == "failed" and "RMBG_MAX_VIDEO_PIXELS" in status["error"], status
    assert "3000x3000" in status["error"]
    assert _peak_kb(pid) - before < 60_000, (before, _peak_kb(pid))  # one 3000x3000 RGB frame alone is 27 MB


def test_a_truncated_clip_fails_with_the_frames_it_has_of_those_announced(server, tmp_path) -> None:
    whole, cut = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:  # the index first
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        noise = np.random.default_rng(0)
        for index in range(120):
            frame = av.VideoFrame.from_ndarray(noise.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 55 // 100])
    answer = submit(server, cut, output="mask", format="mp4")
    assert answer.status_code == 202, answer.text
    status = wait_until_finished(server, answer.json()["id"])
    assert status["status"] == "failed", status
    assert "truncated" in status["error"] and "of the 120 frames its index announces" in status["error"], status
    assert server.get(f"/api/video/{status['id']}/result").status_code == 409


def test_a_still_image_posted_as_a_clip_is_415_pointing_at_the_image_api(server, tmp_path) -> None:
    for name, fmt in (("photo.png", "PNG"), ("photo.mp4", "PNG"), ("photo.jpg", "JPEG")):
        path = tmp_path / name
        sample_image().save(path, fmt)
        answer = submit(server, path, output="mask", format="mp4")
        assert answer.status_code == 415, answer.text
        assert "a still image" in answer.json()["error"] and "/api/remove" in answer.json()["error"]


# --- The jobs' files: expiry on a timer, and removal on a clean stop ------------------------------


def _video_folders(temp: Path) -> list[Path]:
    return sorted(temp.glob("rmbg-video-*"))


def _private_temp(tmp_path: Path) -> dict[str, str]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    return {"TMPDIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio")}


def test_results_expire_on_time_without_any_request(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    clip = tmp_path / "short.mp4"
    make_clip(clip, frames=2)
    with run_server(tmp_path, hf_home, *ARGS, RMBG_VIDEO_RESULT_MINUTES="0.05", **env) as server:  # 3 s
        job = submit(server, clip, output="mask", format="mp4").json()
        status = wait_until_finished(server, job["id"])
        assert status["status"] == "done", status
        (folder,) = _video_folders(Path(env["TMPDIR"]))
        assert (folder / job["id"] / "short_nobg.mp4").is_file()
        time.sleep(3 + 1.5)  # the keep time, and the sweeper's interval (a tenth of it) with room
        assert not (folder / job["id"]).exists() and list(folder.iterdir()) == []


def test_a_clean_sigterm_removes_finished_results_and_the_running_jobs_upload(tmp_path, hf_home) -> None:
    env = _private_temp(tmp_path)
    short, long = tmp_path / "short.mp4", tmp_path / "long.mp4"
    make_clip(short, frames=2)
    make_clip(long, frames=40)
    slow = ("--model", "RMBG-1.4", "--size", "1024", "--precision", "fp32")  # seconds a frame: still running
    with run_server(tmp_path, hf_home, *slow, RMBG_DRAIN_SECONDS="5", **env) as server:
        finished = submit(server, short, output="mask", format="mp4").json()
        assert wait_until_finished(server, finished["id"])["status"] == "done"
        running = submit(server, long, output="mask", format="mp4").json()
        deadline = time.monotonic() + 120
        while server.get(f"/api/video/{running['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        (folder,) = _video_folders(Path(env["TMPDIR"]))
        assert any(path.name.startswith("upload-") for path in folder.iterdir())
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert _video_folders(Path(env["TMPDIR"])) == []
