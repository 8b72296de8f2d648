"""Opening a clip and reading it frame by frame: upright RGB frames with their own timestamps,
and the audio packets of every audio track between them, in the order the file holds them.

Frames are converted to RGB with the clip's own matrix and range (its `Colour`), which the
writer uses again the other way, so colours come out as they went in.

Only the containers in ALLOWED_DEMUXERS are opened, chosen by FFmpeg's probe of the content
(never the file's name), through the `file` protocol alone: playlists (HLS), lists of files
(concat), image sequences, raw streams and network protocols could make FFmpeg read other files
or URLs than the upload, so they are refused whatever the file is called.

Limits (duration, frames, frame size) are checked from the header before any frame is decoded,
and again for every decoded frame, since a header can lie: the decoder itself refuses a frame
past RMBG_MAX_VIDEO_PIXELS (its `max_pixels`), so a clip cannot grow its frames past the budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation
from PIL import Image

from .. import settings
from ..service.steps import rotated
from . import SpanError, VideoError, VideoLimitError

# FFmpeg demuxers a clip may be read with (docs/video.md, "What is read"): MP4/MOV/3GP, Matroska
# and WebM, AVI, MPEG program and transport streams, Ogg, and animated GIF (the Video tab takes
# .gif). Every other demuxer is refused: hls, dash and concat open the files or URLs they list,
# image2 opens numbered files beside the upload, the raw-stream and image demuxers take any
# bytes, and the rest are formats no camera or editor writes today, each one more parser exposed
# to uploads.
ALLOWED_DEMUXERS = ("mov", "matroska", "avi", "mpeg", "mpegts", "ogg", "gif")
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "protocol_whitelist": "file",  # also for anything a demuxer opens itself
    "enable_drefs": "0",  # MOV: never follow references to other files (FFmpeg's default, made sure)
}
_READABLE = "Use MP4, MOV, WebM, MKV, AVI, MPEG-PS/TS, Ogg or an animated GIF"


@dataclass
class Limits:
    """What a clip may be; the defaults come from RMBG_MAX_VIDEO_SECONDS, _FRAMES and _PIXELS."""

    seconds: float
    frames: int
    pixels: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.max_video_seconds(), settings.max_video_frames(), settings.max_video_pixels())


@dataclass
class Frame:
    """One decoded frame, upright, with its presentation time in the input stream's time base."""

    rgb: Image.Image
    pts: int
    duration: int
    deep: np.ndarray | None = None  # 16-bit RGB of a source with more than 8 bits, for a 10-bit output


# Transfer functions of HDR video (FFmpeg's AVColorTransferCharacteristic numbers).
HDR_TRANSFERS = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
UNSPECIFIED = 2  # FFmpeg's number for an unspecified matrix, primaries or transfer
# swscale's flags for YUV <-> RGB both ways: with fast rounding and chroma interpolation a round trip
# through 4:2:0 darkens by 1.1 levels on average; with these by under 0.01 (about 2x the time).
EXACT = (
    Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)
BT709, SMPTE170M, LIMITED = 1, 6, 1


@dataclass(frozen=True)
class Colour:
    """The source's colour tags, as FFmpeg numbers them (AVColorPrimaries, AVColorTransferCharacteristic,
    AVColorSpace, AVColorRange), and its bits per sample. Untagged clips get the matrix players
    assume (BT.709 from 720 lines up, BT.601 below) and limited range, and the output says so."""

    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = BT709
    range: int = LIMITED
    bits: int = 8

    @classmethod
    def of(cls, context: av.video.codeccontext.VideoCodecContext) -> Colour:
        matrix = context.colorspace
        if matrix in (0, UNSPECIFIED):  # 0 is RGB: only for planar-RGB codecs, converted like untagged
            matrix = BT709 if min(context.width, context.height) >= 720 else SMPTE170M
        bits = max((c.bits for c in context.format.components), default=8) if context.format else 8
        return cls(context.color_primaries, context.color_trc, matrix, context.color_range or LIMITED, bits)


@dataclass(frozen=True)
class Span:
    """The in and out points in seconds (the out point None: to the end); what they keep starts at 0.
    Audio is cut at whole packets, the first one that starts at the in point or after it, so its
    timestamps stay honest (at most one packet, about 20 ms, of silence at the start)."""

    start: float = 0.0
    end: float | None = None

    def moved(self, packet: av.Packet) -> av.Packet | None:
        """The audio packet within the span, timed from the in point; None outside it."""
        if packet.pts is None or not self.start and self.end is None:
            return packet
        seconds = float(packet.pts * packet.time_base)
        if seconds < self.start - 1e-6 or (self.end is not None and seconds >= self.end):
            return None
        offset = round(self.start / packet.time_base)
        packet.pts -= offset
        if packet.dts is not None:
            packet.dts -= offset
        return packet

    def shifted(self, frame: Frame, time_base: Fraction) -> Frame:
        frame.pts -= round(self.start / time_base)
        return frame

    def timecode(self, timecode: str | None, rate: Fraction) -> str | None:
        """The source's start timecode moved on to the in point; a drop-frame one (`;`) as it is."""
        parts = (timecode or "").split(":")
        if not self.start or len(parts) != 4 or not all(part.isdigit() for part in parts):
            return timecode
        fps = max(1, round(rate))
        hours, minutes, seconds, frames = map(int, parts)
        total = ((hours * 60 + minutes) * 60 + seconds) * fps + frames + round(self.start * rate)
        total %= 24 * 3600 * fps
        digits = len(parts[3])
        clock = f"{total // fps // 3600:02d}:{total // fps // 60 % 60:02d}:{total // fps % 60:02d}"
        return f"{clock}:{total % fps:0{digits}d}"


def check_span(start: float, end: float | None, seconds: float, name: str) -> Span:
    """The span within a clip of `seconds` (0: unknown), refused with the fix where it is empty."""
    if start < 0 or (end is not None and end <= start):
        raise SpanError(f"{name}: the in point ({start:g} s) must be 0 or more and before the out point ({end} s).")
    if seconds and start >= seconds:
        raise SpanError(f"{name}: the in point ({start:g} s) is past the clip's end ({seconds:.2f} s).")
    return Span(start, end)


@dataclass
class ClipInfo:
    name: str
    width: int
    height: int
    seconds: float
    frames: int  # from the header: an estimate for progress, 0 when unknown
    rate: Fraction
    time_base: Fraction
    rotation: int = 0  # quarter turns to the left
    indexed: bool = False  # `frames` is the count the file's index gives, not an estimate
    colour: Colour = field(default_factory=Colour)
    timecode: str | None = None  # the first frame's SMPTE timecode, where the clip has one

    @property
    def upright_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation % 2 else (self.width, self.height)


def probe(path: Path, name: str, limits: Limits) -> ClipInfo:
    """What the clip's header and first frame say (the upright size needs the frame's rotation),
    refused past the limits with the setting to raise; cheap enough to answer an upload at once."""
    container = _open(path, name)
    try:
        info = _info(container, name)
        check_limits(info, limits)
        _limit_decoder(container, limits)
        info.rotation = _first_rotation(container, info)
    finally:
        container.close()
    return info


def open_clip(path: Path, name: str, limits: Limits) -> tuple[av.container.InputContainer, ClipInfo]:
    """The probed clip, opened again at its start for reading."""
    info = probe(path, name, limits)
    container = _open(path, name)
    _limit_decoder(container, limits)
    return container, info


def _open(path: Path, name: str) -> av.container.InputContainer:
    """The clip opened with an allowed demuxer, through the file protocol only ("file:" also keeps
    a name such as `concat:a|b` or `http:x` a plain file name)."""
    try:
        container = av.open(f"file:{path.resolve()}", "r", options=dict(_OPEN_OPTIONS))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        _refuse_still_image(path, name)
        raise VideoError(
            f"{name}: not a video this app can read ({_reason(error)}); playlists, lists of files, image "
            f"sequences and streams are refused. {_READABLE}."
        ) from error
    if not set(container.format.name.split(",")) & set(ALLOWED_DEMUXERS):
        container.close()
        raise VideoError(f"{name}: {container.format.name} files are not read here. {_READABLE}.")
    return container


def _refuse_still_image(path: Path, name: str) -> None:
    """A clearer refusal where the upload is a picture: what to do with it instead."""
    try:
        with Image.open(path) as image:
            kind = image.format
    except (OSError, ValueError, Image.DecompressionBombError):
        return
    raise VideoError(
        f"{name}: a still image ({kind}), not a clip. Remove its background as an image: POST /api/remove, "
        "the Remove tab, or `rmbg remove` with an image output."
    )


def _limit_decoder(container: av.container.InputContainer, limits: Limits) -> None:
    """The decoder refuses frames past the pixel limit itself, before it allocates them."""
    container.streams.video[0].codec_context.options = {"max_pixels": str(limits.pixels)}


def _first_rotation(container: av.container.InputContainer, info: ClipInfo) -> int:
    """Quarter turns to the left that make the frames upright, read off the first frame."""
    try:
        for frame in container.decode(video=0):
            return round(frame.rotation / 90) % 4
    except av.FFmpegError as error:
        raise VideoError(
            f"{info.name}: the first frame cannot be decoded ({_reason(error)}). Re-export the clip."
        ) from error
    raise VideoError(f"{info.name}: the file holds no decodable frame; it is damaged or truncated.")


def _info(container: av.container.InputContainer, name: str) -> ClipInfo:
    if not container.streams.video:
        raise VideoError(f"{name}: the file has no video stream (audio only?). Give a video file.")
    stream = container.streams.video[0]
    context = stream.codec_context
    if context is None or not context.codec.is_decoder or context.width <= 0:
        codec = context.name if context is not None else "unknown"
        raise VideoError(f"{name}: the video codec {codec!r} cannot be decoded here. Convert it to H.264 or VP9 first.")
    colour = Colour.of(context)
    if colour.transfer in HDR_TRANSFERS:
        raise VideoError(
            f"{name}: the clip is HDR ({HDR_TRANSFERS[colour.transfer]}), which this app cannot keep. "
            "Tone-map it to SDR BT.709 first, for example with "
            "ffmpeg -i in.mov -vf zscale=t=linear:npl=100,tonemap=hable,zscale=t=bt709:m=bt709:p=bt709 out.mov"
        )
    seconds = _seconds(container, stream)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    frames = stream.frames or int(seconds * rate)
    info = ClipInfo(name, context.width, context.height, seconds, frames, Fraction(rate), stream.time_base)
    info.indexed = stream.frames > 0
    info.colour, info.timecode = colour, _timecode(container)
    return info


def _timecode(container: av.container.InputContainer) -> str | None:
    """The `timecode` tag MOV and MP4 keep on their timecode (data) track, MKV and WebM (as TIMECODE)
    on the video track, some files on the container."""
    for tags in (*(stream.metadata for stream in container.streams), container.metadata):
        found = [value for key, value in tags.items() if key.lower() == "timecode"]
        if found:
            return found[0]
    return None


def _seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def check_limits(info: ClipInfo, limits: Limits) -> None:
    _check_size(info.name, info.width, info.height, limits)
    if info.seconds > limits.seconds:
        raise VideoLimitError(
            f"{info.name}: the clip lasts {info.seconds:.1f} s, more than the limit of {limits.seconds:g} s. "
            "Cut it shorter, or raise RMBG_MAX_VIDEO_SECONDS."
        )
    if info.frames > limits.frames:
        raise VideoLimitError(_too_many_frames(info.name, limits.frames))


def _check_size(name: str, width: int, height: int, limits: Limits) -> None:
    if width * height > limits.pixels:
        raise VideoLimitError(
            f"{name}: frames of {width}x{height} are more than the limit of {limits.pixels} pixels. "
            "Scale the clip down first, or raise RMBG_MAX_VIDEO_PIXELS."
        )


def _too_many_frames(name: str, limit: int) -> str:
    return f"{name}: the clip has more than {limit} frames. Cut it shorter, or raise RMBG_MAX_VIDEO_FRAMES."


def units(
    container: av.container.InputContainer, info: ClipInfo, limits: Limits, span: Span | None = None
) -> Iterator[Frame | av.Packet]:
    """Video frames (decoded, upright) and audio packets (as they are), in file order, those of
    `span` only when given, then moved to start at 0.

    Rotation metadata is applied to the pixels, so the output needs none; timestamps are the
    input's own (less the in point), so a variable frame rate stays as it was.
    """
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    audio = container.streams.audio
    span = span or Span()
    if span.start:
        container.seek(int(span.start / video.time_base), stream=video, backward=True)
    count = 0
    try:
        for packet in container.demux(video, *audio):
            if packet.stream.type == "audio":
                if packet.size and (moved := span.moved(packet)) is not None:
                    yield moved
                continue
            for frame in packet.decode():
                if frame.time is not None and frame.time < span.start - 1e-6:
                    continue
                if span.end is not None and frame.time is not None and frame.time >= span.end - 1e-6:
                    return
                count += 1
                if count > limits.frames:
                    raise VideoLimitError(_too_many_frames(info.name, limits.frames))
                _check_size(info.name, frame.width, frame.height, limits)
                yield span.shifted(_frame(frame, info.colour), video.time_base)
    except av.FFmpegError as error:
        context = video.codec_context  # a frame the decoder refused for its size left that size here
        _check_size(info.name, context.width, context.height, limits)
        raise VideoError(
            f"{info.name}: the video data is damaged or truncated after {count} frame(s) ({_reason(error)}). "
            "Re-export or re-download it."
        ) from error
    if count == 0:
        raise VideoError(f"{info.name}: no frame could be decoded; the file is damaged or truncated.")
    if info.indexed and count < info.frames - max(2, info.frames // 100):
        raise VideoError(
            f"{info.name}: the file ends after {count} of the {info.frames} frames its index announces: it is "
            "truncated, and a shorter output would pass for the whole clip. Re-export or re-download it."
        )


def _frame(frame: av.VideoFrame, colour: Colour) -> Frame:
    pts = frame.pts if frame.pts is not None else 0
    turns = round(frame.rotation / 90)
    rgb = frame.reformat(
        format="rgb24", src_colorspace=colour.matrix, src_color_range=colour.range, interpolation=EXACT
    )
    image = rotated(rgb.to_image(), turns)
    deep = None
    if colour.bits > 8:
        wide = frame.reformat(
            format="rgb48le", src_colorspace=colour.matrix, src_color_range=colour.range, interpolation=EXACT
        )
        deep = np.ascontiguousarray(np.rot90(wide.to_ndarray(), turns % 4))
    return Frame(image, pts, frame.duration or 0, deep)


def frame_at(path: Path, name: str, seconds: float, limits: Limits) -> Image.Image:
    """The upright frame shown at `seconds`: the Video tab's preview of one frame before the whole
    clip is committed."""
    container, info = open_clip(path, name, limits)
    try:
        for unit in units(container, info, limits, check_span(seconds, None, info.seconds, name)):
            if isinstance(unit, Frame):
                return unit.rgb
    finally:
        container.close()
    raise VideoError(f"{name}: no frame at or after {seconds:g} s; choose an earlier time.")


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error)
