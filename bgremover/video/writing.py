"""Writing the finished frames: WebM VP9 with alpha, MOV ProRes 4444, MP4 H.264, or a ZIP of PNGs.

Every frame keeps the input's timestamp (pts copied in the input's time base, never re-timed), so
frame count, variable frame rates and duration match the input. Audio packets are copied where
the container takes their codec, and re-encoded where it does not (AAC into WebM becomes Opus).
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..imaging import encoding
from .reading import ClipInfo


@dataclass(frozen=True)
class Codec:
    """A container's video codec and pixel formats, and the audio codecs it takes as they are."""

    name: str
    transparent_format: str
    opaque_format: str
    options: dict[str, str] = field(default_factory=dict)
    audio: str = "aac"  # what other audio is re-encoded to
    audio_kept: frozenset[str] = frozenset()


# Speed settings chosen for CPUs: VP9's default ('good', cpu-used 1) encodes 1080p at about a frame a second.
CODECS = {
    "webm": Codec(
        "libvpx-vp9",
        "yuva420p",
        "yuv420p",
        {"deadline": "good", "cpu-used": "5", "row-mt": "1", "crf": "30", "b": "0"},
        audio="libopus",
        audio_kept=frozenset({"opus", "vorbis"}),
    ),
    "mov": Codec(
        "prores_ks",
        "yuva444p10le",
        "yuv444p10le",
        {"profile": "4"},
        audio_kept=frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"}),
    ),
    "mp4": Codec(
        "libx264",
        "yuv420p",
        "yuv420p",
        {"preset": "fast", "crf": "18"},
        audio_kept=frozenset({"aac", "mp3", "opus", "alac", "ac3"}),
    ),
}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class ClipWriter:
    """A video container being written at `path` (a temporary name: the caller renames it)."""

    def __init__(self, path: Path, fmt: str, info: ClipInfo, transparent: bool, audio: av.audio.AudioStream | None):
        self.codec = CODECS[fmt]
        self.container = av.open(str(path), "w", format=fmt)
        self.transparent = transparent
        self.time_base = info.time_base
        pixel_format = self.codec.transparent_format if transparent else self.codec.opaque_format
        if pixel_format == "yuv420p" and (info.width % 2 or info.height % 2):
            pixel_format = "yuv444p"  # 4:2:0 needs even sizes; H.264 High 4:4:4 takes any
        self.video = self.container.add_stream(self.codec.name, rate=info.rate, options=dict(self.codec.options))
        self.video.pix_fmt = pixel_format
        self.video.codec_context.time_base = info.time_base
        self.video.width, self.video.height = info.upright_size
        self.started = False
        self.durations: dict[int, int] = {}  # by pts, until the encoder hands the frame's packet out
        self.audio = _AudioOut(self.container, audio, self.codec) if audio is not None else None

    def write(self, image: Image.Image, pts: int, duration: int) -> None:
        self.started = True
        frame = _video_frame(image)
        frame.pts, frame.time_base = pts, self.time_base
        self.durations[pts] = duration
        self._mux(self.video.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        """Packets with their frame's own duration: encoders derive one from the average rate, which
        would change the last frame's length (and so the clip's) at a variable frame rate."""
        for packet in packets:
            duration = self.durations.pop(packet.pts, 0)
            if duration:
                packet.duration = duration
        self.container.mux(packets)

    def write_audio(self, packet: av.Packet) -> None:
        if self.audio is not None:
            self.audio.write(packet)

    def close(self) -> None:
        if self.started:
            self._mux(self.video.encode(None))
        if self.audio is not None:
            self.audio.flush()
        self.container.close()

    def abandon(self) -> None:
        """Closes after a failure; an error closing must not hide the failure itself."""
        with contextlib.suppress(av.FFmpegError, OSError):
            self.container.close()


def _video_frame(image: Image.Image) -> av.VideoFrame:
    if image.mode == "RGBA":
        return av.VideoFrame.from_ndarray(np.asarray(image), format="rgba")
    if image.mode == "L":
        return av.VideoFrame.from_ndarray(np.asarray(image), format="gray")
    return av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")


class _AudioOut:
    """The input's first audio track in the output: its packets copied, or decoded and re-encoded."""

    def __init__(self, container: av.container.OutputContainer, source: av.audio.AudioStream, codec: Codec):
        self.container = container
        self.copy = source.codec_context.name in codec.audio_kept
        if self.copy:
            self.stream = container.add_stream_from_template(source)
            return
        rate = source.sample_rate if codec.audio != "libopus" else _opus_rate(source.sample_rate)
        layout = "stereo" if source.channels > 1 else "mono"
        self.stream = container.add_stream(codec.audio, rate=rate, layout=layout)
        self.decoder = source.codec_context
        sample_format = self.stream.codec_context.codec.audio_formats[0].name
        self.resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)

    def write(self, packet: av.Packet) -> None:
        if self.copy:
            packet.stream = self.stream
            self.container.mux(packet)
            return
        for frame in self.decoder.decode(packet):
            self._encode(frame)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        for resampled in self.resampler.resample(frame):
            resampled.pts = None  # the encoder counts samples from the first one
            self.container.mux(self.stream.encode(resampled))

    def flush(self) -> None:
        if not self.copy:
            for frame in self.decoder.decode(None):
                self._encode(frame)
            self._encode(None)
            self.container.mux(self.stream.encode(None))


def _opus_rate(rate: int) -> int:
    return next((r for r in _OPUS_RATES if r <= rate), _OPUS_RATES[-1]) if rate < 48000 else 48000


class ZipWriter:
    """A ZIP of lossless PNG frames, `frame_000000.png` on, and `frames.csv` with each frame's time,
    so a variable frame rate survives too. No audio: the clip's own file still has it."""

    def __init__(self, path: Path, info: ClipInfo):
        self.archive = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED)  # PNG is compressed already
        self.time_base = info.time_base
        self.index = 0
        self.times = ["frame,file,seconds,duration_seconds"]

    def write(self, image: Image.Image, pts: int, duration: int) -> None:
        name = f"frame_{self.index:06d}.png"
        self.archive.writestr(name, encoding.encode(image, "png"))
        start, length = float(pts * self.time_base), float(duration * self.time_base)
        self.times.append(f"{self.index},{name},{start:.6f},{length:.6f}")
        self.index += 1

    def write_audio(self, packet: av.Packet) -> None:
        """ZIP holds frames only."""

    def close(self) -> None:
        self.archive.writestr("frames.csv", "\n".join(self.times) + "\n")
        self.archive.close()

    def abandon(self) -> None:
        self.archive.close()


def open_writer(path: Path, fmt: str, info: ClipInfo, transparent: bool, audio) -> ClipWriter | ZipWriter:
    if fmt == "zip":
        return ZipWriter(path, info)
    return ClipWriter(path, fmt, info, transparent, audio)
