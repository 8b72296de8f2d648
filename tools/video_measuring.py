"""Measurements behind docs/video.md, run by tools/video_bench.py: the encoders per quality preset
(speed, size, and PSNR of the colour and the alpha against the frames they were given), and the
flicker and edge lag of `--smooth` on a clip made from a real photo.

Flicker is the mean |alpha step| between consecutive frames where the picture is still (its blurred
grey changes by under 6 levels: camera noise only), so any change there is the mask's own.
Moving flicker is the same while the camera pans and zooms, each mask compared with the previous
one moved by the camera's true motion (the clip is made here, so the motion is known). Edge lag
is where the smoothed alpha lies between this frame's unsmoothed alpha (0) and the previous
frame's (1), averaged where the unsmoothed mask moved by over 32 levels (the moving edges): a
method that drags edges behind scores near 1, one that follows them near 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import tempfile
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageSequence
from skimage import data

from bgremover import bench
from bgremover.service.config import ServiceConfig, build_service
from bgremover.service.options import build_request
from bgremover.video.clip import remove_clip
from bgremover.video.quality import QUALITIES
from bgremover.video.reading import EXACT, ClipInfo
from bgremover.video.smoothing import MaskSmoother
from bgremover.video.writing import ClipWriter

RATE = 30
ENCODERS = (("webm", True), ("mov", True), ("mp4", False), ("webp", True), ("gif", True))  # (container, with alpha)


def model(name: str):
    """A local model folder as it is, else the zoo name's synthetic weights."""
    return contextlib.nullcontext(name) if Path(name).is_dir() else bench.synthetic_hub(name)


def machine() -> dict:
    """What every figure is printed beside: the CPU and its load."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "load": [round(v, 2) for v in os.getloadavg()]}


def _cpuinfo() -> list[str]:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text().splitlines()
    return []


def camera(width: int, frames: int) -> list[np.ndarray]:
    """Per frame, the 2x3 matrix from the photo to the frame: still for the first half, then a pan
    to the right and a zoom in."""
    still, matrices = frames // 2, []
    for index in range(frames):
        step = max(0, index - still)
        scale = (width / 400) * (1 + 0.01 * step)
        matrices.append(np.float32([[scale, 0, -56 * scale - 4 * step * scale], [0, scale, -40 * scale]]))
    return matrices


def camera_frames(width: int, height: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """A real photo (scikit-image's astronaut) filmed by `camera`, with fresh sensor noise (4 levels)
    on every frame; RGB arrays."""
    photo = np.asarray(data.astronaut(), np.float32)
    noise = np.random.default_rng(seed)
    result = []
    for matrix in camera(width, frames):
        frame = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame += noise.normal(0, 4, frame.shape)
        result.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return result


def write_source(path: Path, frames: list[np.ndarray]) -> None:
    """H.264 at CRF 16, tagged BT.709 limited range, as a camera would hand it over."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RATE, options={"crf": "16", "preset": "fast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        context = stream.codec_context
        context.time_base = Fraction(1, RATE)
        context.colorspace = context.color_range = context.color_primaries = context.color_trc = 1
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1, dst_color_range=1, interpolation=EXACT
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _psnr(expected: np.ndarray, got: np.ndarray) -> float:
    error = np.mean((expected.astype(np.float64) - got.astype(np.float64)) ** 2)
    return round(float(10 * np.log10(255**2 / max(error, 1e-10))), 2)


def _moving_alpha(width: int, height: int, index: int) -> np.ndarray:
    """A soft-edged ellipse that moves: a cut-out's alpha with an edge and a ramp."""
    alpha = np.zeros((height, width), np.uint8)
    centre = (int(width * (0.4 + 0.01 * index)), height // 2)
    cv2.ellipse(alpha, centre, (width // 5, height // 3), 0, 0, 360, 255, -1)
    return cv2.GaussianBlur(alpha, (0, 0), 3)


def encoders(width: int, height: int, frames: int) -> None:
    """Every container's encoder at every quality preset, through the app's own writer."""
    rgb = camera_frames(width, height, frames)
    rgba = [np.dstack([image, _moving_alpha(width, height, i)]) for i, image in enumerate(rgb)]
    info = ClipInfo("bench", width, height, frames / RATE, frames, Fraction(RATE), Fraction(1, RATE))
    with tempfile.TemporaryDirectory(prefix="rmbg-encoders-") as folder:
        for fmt, alpha in ENCODERS:
            for quality in QUALITIES:
                target = Path(folder) / f"{quality}.{fmt}"
                writer = ClipWriter(target, fmt, info, alpha, [], quality)
                images = [Image.fromarray(f if alpha else f[..., :3]) for f in rgba]
                started = time.perf_counter()
                for index, image in enumerate(images):
                    writer.write(image, index, 1)
                writer.close()
                seconds = time.perf_counter() - started
                decoded = _decoded(target, alpha)
                decoded3 = [d[..., :3] for d in decoded]
                row = {
                    "format": fmt,
                    "encoder": writer.codec.name,
                    "quality": quality,
                    "clip": f"{width}x{height}x{frames}",
                    "fps": round(frames / seconds, 2),
                    "megabits_per_second": round(target.stat().st_size * 8 / (frames / RATE) / 1e6, 2),
                    "psnr_colour": _psnr(np.stack(rgb), np.stack([d[..., :3] for d in decoded])),
                    # where alpha > 0: WebP and GIF drop the colour under alpha 0, which no one sees
                    "psnr_colour_visible": _psnr(*(np.stack(x)[np.stack(rgba)[..., 3] > 0] for x in (rgb, decoded3))),
                    "psnr_alpha": _psnr(np.stack(rgba)[..., 3], np.stack([d[..., 3] for d in decoded]))
                    if alpha
                    else None,
                    **machine(),
                }
                print(json.dumps(row), flush=True)


def _decoded(path: Path, alpha: bool) -> list[np.ndarray]:
    if path.suffix in (".webp", ".gif"):  # FFmpeg reads neither animation back here; Pillow does
        with Image.open(path) as animation:
            return [np.asarray(frame.convert("RGBA")) for frame in ImageSequence.Iterator(animation)]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        decoder = av.CodecContext.create("libvpx-vp9", "r") if context.name == "vp9" else context
        kind = "rgba" if alpha else "rgb24"
        return [
            frame.to_ndarray(
                format=kind, src_colorspace=context.colorspace, src_color_range=context.color_range, interpolation=EXACT
            )
            for packet in container.demux(stream)
            for frame in decoder.decode(packet)
        ]


def flicker(args) -> None:
    """The raw masks of a real clip from the model, then each smoothing over the same masks."""
    rgb = camera_frames(args.width, args.height, args.frames)
    with tempfile.TemporaryDirectory(prefix="rmbg-flicker-") as folder, model(args.model) as name:
        source, target = Path(folder) / "camera.mp4", Path(folder) / "masks.zip"
        write_source(source, rgb)
        service = build_service(ServiceConfig(name, args.device, args.precision, size=args.size))
        started = time.perf_counter()
        remove_clip(service, source, target, build_request(output="mask"), fmt="zip")
        seconds = time.perf_counter() - started
        with zipfile.ZipFile(target) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".png"))
            raw = [np.asarray(Image.open(io.BytesIO(archive.read(n))), np.float32) for n in names]
        frames = [Image.fromarray(f) for f in _decoded(source, False)]
    methods = {"none": raw}
    for label, with_frames in (("per_pixel", False), ("motion_compensated", True)):
        smoother = MaskSmoother(args.smooth)
        started_smoothing = time.perf_counter()
        methods[label] = [
            np.asarray(smoother(Image.fromarray(m.astype(np.uint8)), f if with_frames else None), np.float32)
            for m, f in zip(raw, frames, strict=True)
        ]
        methods[f"{label}_ms_per_frame"] = round(1000 * (time.perf_counter() - started_smoothing) / len(raw), 1)
    still, moving = _regions(frames, raw)
    steps = np.abs(np.diff(np.stack(raw), axis=0))
    row = {
        "model": name,
        "clip": f"astronaut {args.width}x{args.height}x{args.frames}, still then pan+zoom, noise 4",
        "smooth": args.smooth,
        "model_seconds_per_frame": round(seconds / len(raw), 3),
        "still_fraction": round(float(np.mean(still)), 3),
    }
    for label in ("none", "per_pixel", "motion_compensated"):
        masks = np.stack(methods[label])
        row[f"flicker_{label}"] = round(float(np.abs(np.diff(masks, axis=0))[still].mean()), 3)
        row[f"moving_flicker_{label}"] = _moving_flicker(masks, camera(args.width, args.frames))
        lag = np.abs(masks - np.stack(raw))[1:][moving] / steps[moving]
        row[f"edge_lag_{label}"] = round(float(lag.mean()), 3)
        if label != "none":
            row[f"ms_per_frame_{label}"] = methods[f"{label}_ms_per_frame"]
    print(json.dumps({**row, **machine()}), flush=True)


def _moving_flicker(masks: np.ndarray, matrices: list[np.ndarray]) -> float:
    """Mean |alpha step| while the camera moves, each mask against the previous one moved by the
    camera's motion, 16 pixels in from the borders (where the photo is reflected)."""
    height, width = masks.shape[1:]
    steps = []
    for index in range(1, len(masks)):
        if np.array_equal(matrices[index], matrices[index - 1]):
            continue
        previous, current = (np.vstack([m, [0, 0, 1]]) for m in (matrices[index - 1], matrices[index]))
        to_previous = (previous @ np.linalg.inv(current))[:2].astype(np.float32)  # this frame -> the previous
        moved = cv2.warpAffine(
            masks[index - 1], to_previous, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        steps.append(np.abs(masks[index] - moved)[16:-16, 16:-16].mean())
    return round(float(np.mean(steps)), 3) if steps else 0.0


def _regions(frames: list[Image.Image], raw: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per step between frames: where the picture is still, and where the unsmoothed mask moved."""
    grey = np.stack([cv2.GaussianBlur(np.asarray(f.convert("L"), np.float32), (5, 5), 0) for f in frames])
    still = np.abs(np.diff(grey, axis=0)) < 6
    moving = np.abs(np.diff(np.stack(raw), axis=0)) > 32
    return still, moving
