"""Video: a clip's background removed frame by frame through the same service as images.

This package's modules import PyAV (the optional `video` extra) when they are imported; this
file does not, so the CLI can tell a clip from an image without loading FFmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..planning import FileRun, expand_inputs

# What `rmbg remove` treats as a clip (folders included), by suffix.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".3gp", ".ogv"}
# What a clip can become: transparent (webm, mov, zip of PNGs) or opaque (mp4).
VIDEO_FORMATS = ("webm", "mov", "mp4", "zip")
# Also animated WebP and GIF, but only when the input is a clip: `--format webp` alone means images.
CLIP_FORMATS = (*VIDEO_FORMATS, "webp", "gif")
TRANSPARENT_FORMATS = ("webm", "mov", "zip", "webp", "gif")


class VideoError(ValueError):
    """A clip that cannot be processed (or a limit it passes); the message names the problem and the fix."""


class VideoLimitError(VideoError):
    """A readable clip past a limit (RMBG_MAX_VIDEO_SECONDS, _FRAMES, _PIXELS); the API's 413."""


class SpanError(VideoError):
    """In and out points that keep nothing of a clip; the API's 400."""


class Cancelled(RuntimeError):
    """The clip was cancelled before it was finished; nothing is left at the output path."""


def default_format(output: str) -> str:
    """WebM keeps transparency and plays in browsers; everything opaque goes to the widest-played MP4."""
    return "webm" if output == "cutout" else "mp4"


def check_format(fmt: str, output: str) -> str:
    """The container for `output`, refused with the fix where it would lose the transparency."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in CLIP_FORMATS:
        raise VideoError(f"video format {fmt!r}: use {', '.join(CLIP_FORMATS)}.")
    if output == "cutout" and fmt not in TRANSPARENT_FORMATS:
        raise VideoError(
            f"{fmt.upper()} (H.264) has no transparency: write the cut-out as .webm, .mov or .zip, "
            "or choose --output color, image or mask."
        )
    return fmt


def check_options(fmt: str, output: str, crop: bool) -> str:
    """`check_format`, and no crop: every frame of a clip keeps one size."""
    if crop:
        raise VideoError("crop is not available for video: every frame of a clip must keep one size.")
    return check_format(fmt, output)


def wants_video(inputs: list[str], out: str | None, fmt: str) -> bool:
    """Whether `rmbg remove` was given clips: a video --format or -o suffix, a clip, or a folder
    that holds clips and no images. Looks at names only, so a run on images never loads FFmpeg."""
    from pathlib import Path

    video_target = out is not None and Path(out).suffix.lower().lstrip(".") in VIDEO_FORMATS
    if fmt in VIDEO_FORMATS or video_target:
        return True
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return True
        if path.is_dir() and not any(expand_inputs([item])):
            return any(expand_inputs([item], VIDEO_SUFFIXES))
    return False


@dataclass(frozen=True, kw_only=True)
class ClipRun(FileRun):
    """A clip run (`FileRun`: --format as given, an image format such as the default png meaning
    "not a container": -o's suffix or the output kind decides), with the output kind (it decides
    which containers fit), the smoothing, the encoder preset, and the in and out points."""

    output: str
    smoothing: float = 0.0
    quality: str = "standard"
    start: float = 0.0
    end: float | None = None

    def clip_options(self, fmt: str) -> dict:
        """`remove_clip`'s keyword arguments for every clip of the run."""
        return {
            "fmt": fmt,
            "batch_size": self.batch_size,
            "smoothing": self.smoothing,
            "quality": self.quality,
            "start": self.start,
            "end": self.end,
        }
