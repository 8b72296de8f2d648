"""Frames per second of one clip end to end (`remove_clip`: decode, infer, finish, encode), with
synthetic weights in a temporary Hugging Face cache, offline (or a local model folder as --model);
the encoders' speed, size and fidelity per quality preset; and the masks' flicker; for docs/video.md.

    python3 tools/video_bench.py --model RMBG-1.4 --width 1920 --height 1080 --frames 24
    python3 tools/video_bench.py --model RMBG-2.0 --device cuda --width 3840 --height 2160 --batch 8
    python3 tools/video_bench.py --encoders --width 1920 --height 1080 --frames 12
    python3 tools/video_bench.py --flicker --model isnet-general-use --frames 24

Prints JSON lines. End to end: frames/s, the wall time, and the seconds per frame of each stage
summed over its threads (decode, queue: the wait for the device, infer, finish, encode), so the
stage that bounds the pipeline shows; the clip is generated first (H.264, a disc moving over a
gradient). --encoders and --flicker: see `video_measuring.py` beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import video_measuring  # noqa: E402 - beside this file

from bgremover.service.config import ServiceConfig, build_service  # noqa: E402
from bgremover.service.options import build_request  # noqa: E402
from bgremover.video.clip import remove_clip  # noqa: E402


def generated_clip(path: Path, width: int, height: int, frames: int) -> None:
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60)], -1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for index in range(frames):
            image = background.copy()
            centre, radius = width * (0.3 + 0.4 * index / max(frames, 1)), height // 4
            image[(x - centre) ** 2 + (y - height / 2) ** 2 < radius**2] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RMBG-1.4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--size", type=int, default=None, help="inference size (default: the model's)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--format", default="webm", help="webm, mov, mp4 (with --output color) or zip")
    parser.add_argument("--output", default="cutout")
    parser.add_argument("--quality", default="standard", help="draft, standard, high or master")
    parser.add_argument("--encoders", action="store_true", help="each encoder and quality preset, no model")
    parser.add_argument("--flicker", action="store_true", help="flicker and edge lag of --smooth on a real photo")
    parser.add_argument("--smooth", type=float, default=0.5, help="the strength --flicker measures")
    args = parser.parse_args()
    if args.encoders:
        return video_measuring.encoders(args.width, args.height, args.frames)
    if args.flicker:
        return video_measuring.flicker(args)
    with tempfile.TemporaryDirectory(prefix="rmbg-video-bench-") as folder, video_measuring.model(args.model) as model:
        source, target = Path(folder) / "clip.mp4", Path(folder) / f"out.{args.format}"
        generated_clip(source, args.width, args.height, args.frames)
        service = build_service(ServiceConfig(model, args.device, args.precision, size=args.size))
        remover = service.pool.get()
        remover.predict([av.open(str(source)).decode(video=0).__next__().to_image()])  # warm-up
        request = build_request(output=args.output)
        report = remove_clip(
            service, source, target, request, fmt=args.format, batch_size=args.batch, quality=args.quality
        )
    per_frame = {stage: round(seconds / report.frames, 4) for stage, seconds in report.timings.as_dict().items()}
    print(
        json.dumps(
            {
                "model": model,
                "engine": remover.engine.describe(),
                "clip": f"{args.width}x{args.height}x{args.frames}",
                "format": args.format,
                "quality": args.quality,
                "batch": args.batch,
                "frames_per_second": round(report.frames / report.seconds, 3),
                "wall_seconds": round(report.seconds, 2),
                "seconds_per_frame_by_stage": per_frame,
            }
        )
    )


if __name__ == "__main__":
    main()
