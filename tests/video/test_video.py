"""Video clips through the service: containers in and out, timestamps, alpha, audio, the image
pipeline's masks, limits and bad files, cancel, bounded memory, the CLI. Clips are generated here
with PyAV: a few 64x48 frames, RMBG-1.4 on synthetic weights at inference size 64."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import loaded_small_service
from live import REPO, decoded_frames, make_clip
from PIL import Image

from bgremover.service.options import build_request
from bgremover.service.removal import RemovalService
from bgremover.service.steps import rotated
from bgremover.video import Cancelled, VideoError
from bgremover.video.clip import remove_clip
from bgremover.video.reading import EXACT, Limits
from bgremover.video.smoothing import MaskSmoother

VFR_MS = [0, 40, 80, 200, 240, 400]  # uneven gaps: a variable frame rate that must survive
FAST = ["--model", "RMBG-1.4", "--size", "64", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def service(hf_home) -> RemovalService:
    return loaded_small_service(hf_home)


@pytest.fixture(scope="module")
def rotated_vfr_clip(tmp_path_factory) -> Path:
    """H.264 in MP4, shown turned 90 degrees, variable frame rate, AAC audio."""
    path = tmp_path_factory.mktemp("clips") / "turned.mp4"
    make_clip(path, times_ms=VFR_MS, audio="aac", rotation=90)
    return path


def video_end(path: Path) -> float:
    """Seconds at which the last frame stops showing: the clip's duration as a player sees it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ends = [p.pts + p.duration for p in container.demux(stream) if p.pts is not None]
        return float(max(ends) * stream.time_base)


def audio_codec(path: Path) -> str | None:
    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.name if container.streams.audio else None


@pytest.mark.parametrize(("fmt", "decoder", "audio"), [("webm", "libvpx-vp9", "opus"), ("mov", None, "aac")])
def test_a_cutout_keeps_every_frame_time_and_the_audio_with_an_alpha_plane(
    service, rotated_vfr_clip, tmp_path, fmt, decoder, audio
) -> None:
    target = tmp_path / f"out.{fmt}"
    report = remove_clip(service, rotated_vfr_clip, target, build_request(), fmt=fmt, batch_size=3)
    frames = decoded_frames(target, decoder)
    assert report.frames == len(frames) == len(VFR_MS)
    assert [round(f.time * 1000) for f in frames] == VFR_MS  # not re-timed to a constant rate
    assert video_end(target) == pytest.approx(video_end(rotated_vfr_clip), abs=0.001)
    assert {(f.width, f.height) for f in frames} == {(48, 64)}  # the rotation is in the pixels now
    assert all(f.format.name.startswith("yuva") for f in frames)
    alpha = np.stack([f.to_ndarray(format="rgba")[..., 3] for f in frames])
    assert alpha.min() < 64 and alpha.max() > 192  # a real mask, not an opaque plane
    assert audio_codec(target) == audio  # AAC is copied into MOV, re-encoded as Opus for WebM
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary file left


def test_zip_masks_are_the_image_pipelines_masks_of_the_same_frames(service, rotated_vfr_clip, tmp_path) -> None:
    target = tmp_path / "masks.zip"
    remove_clip(service, rotated_vfr_clip, target, build_request(output="mask"), fmt="zip")
    with zipfile.ZipFile(target) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        masks = [np.asarray(Image.open(io.BytesIO(archive.read(n)))) for n in names]
        times = archive.read("frames.csv").decode().splitlines()[1:]
    assert [round(float(row.split(",")[2]) * 1000) for row in times] == VFR_MS
    for frame, mask in zip(decoded_frames(rotated_vfr_clip), masks, strict=True):
        upright = rotated(frame.reformat(format="rgb24", interpolation=EXACT).to_image(), frame.rotation // 90)
        image = service.remove(upright, build_request(output="mask")).result.image
        assert np.array_equal(np.asarray(image), mask)


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [
        ("vp9.webm", "libvpx-vp9", "yuv420p"),
        ("hevc_10_bit.mp4", "libx265", "yuv420p10le"),
        ("editor.mov", "prores_ks", "yuv422p10le"),
    ],
)
def test_other_containers_and_10_bit_sources_become_an_mp4_over_a_colour(
    service, tmp_path, name, codec, pix_fmt
) -> None:
    source = tmp_path / name
    make_clip(source, frames=4, codec=codec, pix_fmt=pix_fmt)
    target = tmp_path / "green.mp4"
    remove_clip(service, source, target, build_request(output="color", bg_color="#00ff00"), fmt="mp4", batch_size=4)
    frames = decoded_frames(target)
    assert [round(f.time * 1000) for f in frames] == [0, 100, 200, 300]
    assert frames[0].to_ndarray(format="rgb24").shape == (48, 64, 3)


def test_bad_clips_get_a_message_naming_the_problem_and_leave_nothing(service, rotated_vfr_clip, tmp_path) -> None:
    garbage, truncated, sound = tmp_path / "garbage.mp4", tmp_path / "cut.mp4", tmp_path / "sound.m4a"
    garbage.write_bytes(os.urandom(4000))
    truncated.write_bytes(rotated_vfr_clip.read_bytes()[:1500])
    with av.open(str(sound), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=48000, layout="mono")
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        silence.sample_rate = 48000
        container.mux(stream.encode(silence) + stream.encode(None))
    cases = {
        garbage: "not a video this app can read",
        truncated: "not a video this app can read",
        sound: "no video stream",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message):
            remove_clip(service, path, tmp_path / "out" / "x.webm", build_request(), fmt="webm")
    limits = {"RMBG_MAX_VIDEO_FRAMES": Limits(600, 3, 10**8), "RMBG_MAX_VIDEO_PIXELS": Limits(600, 100, 1000)}
    for variable, limit in limits.items():
        with pytest.raises(VideoError, match=variable):
            remove_clip(
                service, rotated_vfr_clip, tmp_path / "out" / "x.webm", build_request(), fmt="webm", limits=limit
            )
    with pytest.raises(VideoError, match="no transparency"):
        remove_clip(service, rotated_vfr_clip, tmp_path / "out" / "x.mp4", build_request(), fmt="mp4")
    assert not any((tmp_path / "out").glob("*"))


def test_a_cancelled_clip_leaves_no_file(service, rotated_vfr_clip, tmp_path) -> None:
    cancel = threading.Event()

    def cancel_after_two(done: int, expected: int) -> None:
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        remove_clip(
            service,
            rotated_vfr_clip,
            tmp_path / "x.webm",
            build_request(),
            fmt="webm",
            progress=cancel_after_two,
            cancel=cancel,
        )
    assert list(tmp_path.iterdir()) == []


PEAK_MEMORY = """
import resource, sys
from pathlib import Path
from bgremover.service.options import build_request
from bgremover.service.config import ServiceConfig, build_service
from bgremover.video.clip import remove_clip
service = build_service(ServiceConfig("RMBG-1.4", "cpu", "fp32", size=32, io_threads=2))
remove_clip(service, Path(sys.argv[1]), Path(sys.argv[2]), build_request(output="color"), fmt="mp4", batch_size=8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_clips_length(offline_hub, tmp_path) -> None:
    """Frames of 640x360 take 0.7 MB as RGB and as much again as RGB + mask: 96 more frames held at
    once would add over 130 MB. The pipeline holds a few batches, so 48 and 144 frames peak alike
    (both past what the H.264 encoder's lookahead keeps, which is bounded too)."""
    peaks = []
    for frames in (48, 144):
        source = tmp_path / f"{frames}.mp4"
        make_clip(source, frames=frames, size=(640, 360))
        done = subprocess.run(
            [sys.executable, "-c", PEAK_MEMORY, str(source), str(tmp_path / f"{frames}_out.mp4")],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        peaks.append(int(done.stdout.split()[-1]) / 1024)  # MiB
    assert peaks[1] - peaks[0] < 40, peaks


@pytest.mark.slow
def test_the_cli_writes_a_folder_of_clips_and_reports_a_bad_one(offline_hub, rotated_vfr_clip, tmp_path) -> None:
    folder = tmp_path / "clips"
    (folder / "day").mkdir(parents=True)
    (folder / "day" / "turned.mp4").write_bytes(rotated_vfr_clip.read_bytes())
    (folder / "broken.mov").write_bytes(b"not a movie")
    command = [sys.executable, "rmbg.py", "remove", str(folder), "-o", str(tmp_path / "out"), "--output", "mask", *FAST]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 1
    assert "broken.mov: not a video this app can read" in done.stderr
    assert "1 clip(s) done" in done.stderr
    frames = decoded_frames(tmp_path / "out" / "day" / "turned.mp4")  # masks default to MP4
    assert len(frames) == len(VFR_MS)
    refused = subprocess.run(
        [sys.executable, "rmbg.py", "remove", str(rotated_vfr_clip), "-o", str(tmp_path / "x.mp4"), *FAST],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert refused.returncode == 2 and "has no transparency" in refused.stderr


@pytest.mark.slow
def test_ray_runs_a_folder_of_clips_one_clip_per_actor(offline_hub, rotated_vfr_clip, tmp_path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "one.mp4").write_bytes(rotated_vfr_clip.read_bytes())
    make_clip(folder / "two.webm", frames=3, codec="libvpx-vp9")
    (folder / "bad.mkv").write_bytes(b"no video here")
    out = tmp_path / "out"
    command = [sys.executable, "rmbg.py", "remove", str(folder), "-o", str(out), "--format", "zip", "--ray"]
    done = subprocess.run(
        [*command, "--ray-actors", "1", "-q", *FAST, "--engine", "openvino"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr  # the bad clip fails, the others are done
    assert "2 clip(s) done, 0 skipped" in done.stderr and "bad.mkv: not a video" in done.stderr
    rows = [json.loads(line) for line in (out / "rmbg-manifest.jsonl").read_text().splitlines()]
    assert sorted(row["status"] for row in rows) == ["failed", "ok", "ok"]
    # The actors built their service from the driver's config: the engine and precision of the flags.
    assert all(row["engine"].startswith("openvino") and " fp32 " in row["engine"] for row in rows), rows
    with zipfile.ZipFile(out / "one.zip") as one, zipfile.ZipFile(out / "two.zip") as two:
        assert len(one.namelist()) == len(VFR_MS) + 1 and len(two.namelist()) == 3 + 1  # frames + frames.csv


def test_smoothing_calms_still_pixels_and_leaves_moving_edges_where_they_are() -> None:
    rng = np.random.default_rng(0)
    smoother = MaskSmoother(0.5)
    inputs, outputs = [], []
    for step in range(8):
        alpha = np.full((32, 64), 128.0) + rng.normal(0, 6, (32, 64))  # a soft region that flickers
        alpha[:, 32 + step * 4 :] = 255  # an edge moving right by 4 pixels a frame
        inputs.append(np.clip(alpha, 0, 255).astype(np.uint8))
        outputs.append(np.asarray(smoother(Image.fromarray(inputs[-1])), np.float32))
        assert (outputs[-1][:, 32 + step * 4 :] == 255).all()  # the edge is where this frame has it
        assert (outputs[-1][:, 32 + step * 4 - 1] < 200).all()  # and nothing trails behind it
    raw = np.abs(np.diff(np.stack(inputs).astype(np.float32)[:, :, :28], axis=0)).mean()
    still = np.abs(np.diff(np.stack(outputs)[:, :, :28], axis=0)).mean()
    assert still < 0.7 * raw


def test_smoothing_measured_on_a_clip(service, tmp_path) -> None:
    """The flicker figure of docs/video.md: mean |alpha step| between frames of a still, noisy clip."""
    source = tmp_path / "still.mp4"
    make_clip(source, frames=8, noise=12)
    figures = {}
    for smoothing in (0.0, 0.5):
        target = tmp_path / f"masks_{smoothing}.zip"
        remove_clip(service, source, target, build_request(output="mask"), fmt="zip", smoothing=smoothing)
        with zipfile.ZipFile(target) as archive:
            masks = [
                np.asarray(Image.open(io.BytesIO(archive.read(n))), np.float32) for n in sorted(archive.namelist())[:-1]
            ]
        figures[smoothing] = float(np.abs(np.diff(np.stack(masks), axis=0)).mean())
    print(f"flicker (mean |delta alpha| per frame, of 255): {figures}")
    assert figures[0.5] < 0.8 * figures[0.0]
