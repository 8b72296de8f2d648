"""Writing the finished frames: WebM VP9 with alpha, MOV ProRes 4444, MP4 H.264, animated WebP,
GIF, or a ZIP of PNGs.

Every frame keeps the input's timestamp (pts copied in the input's time base, never re-timed), so
frame count, variable frame rates and duration match the input. Frames go back to YUV with the
source's matrix and range, and the output carries the source's four colour tags. Every audio track
is copied where the container takes its codec, and re-encoded where it does not (AAC into WebM
becomes Opus), its encoder's priming samples moved before zero so that sound stays in sync. The
source's timecode is kept as the video track's `timecode` tag (a timecode track in MOV and MP4).
"""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..imaging import encoding
from .quality import encoder_options
from .reading import EXACT, LIMITED, ClipInfo


@dataclass(frozen=True)
class Codec:
    """A container's video codec and pixel formats, and the audio codecs it takes as they are."""

    name: str
    transparent_format: str
    opaque_format: str
    options: dict[str, str] = field(default_factory=dict)  # for every quality preset
    audio: str = "aac"  # what other audio is re-encoded to ("": the container takes none)
    audio_kept: frozenset[str] = frozenset()
    muxer: dict[str, str] = field(default_factory=dict)  # the container's options


# The speed and size of each quality preset were measured (quality.py, docs/video.md).
CODECS = {
    "webm": Codec(
        "libvpx-vp9",
        "yuva420p",
        "yuv420p",
        {"row-mt": "1", "b": "0"},
        audio="libopus",
        audio_kept=frozenset({"opus", "vorbis"}),
    ),
    "mov": Codec(
        "prores_ks",
        "yuva444p10le",
        "yuv444p10le",
        {"vendor": "apl0"},  # Apple's vendor tag: what editors expect of ProRes
        audio_kept=frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"}),
    ),
    "mp4": Codec(
        "libx264",
        "yuv420p",
        "yuv420p",
        audio_kept=frozenset({"aac", "mp3", "opus", "alac", "ac3"}),
    ),
    # Animated WebP: libwebp turns RGB into its own YUV (BT.601, as every WebP decoder expects); no sound.
    "webp": Codec("libwebp_anim", "bgra", "bgra", audio="", muxer={"loop": "0"}),  # loops for ever
    # GIF: 255 colours a frame (its own palette) and one transparent index; no sound.
    "gif": Codec("gif", "pal8", "pal8", audio="", muxer={"loop": "0"}),
}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


class ClipWriter:
    """A video container being written at `path` (a temporary name: the caller renames it)."""

    def __init__(self, path: Path, fmt: str, info: ClipInfo, transparent: bool, audio: list, quality: str = "standard"):
        self.codec = CODECS[fmt]
        self.container = av.open(str(path), "w", format=fmt, options=self.codec.muxer)
        self.transparent = transparent
        self.time_base = info.time_base
        pixel_format = self.codec.transparent_format if transparent else self.codec.opaque_format
        if pixel_format == "yuv420p" and (info.width % 2 or info.height % 2):
            pixel_format = "yuv444p"  # 4:2:0 needs even sizes; H.264 High 4:4:4 takes any
        options = {**self.codec.options, **encoder_options(self.codec.name, quality)}
        self.video = self.container.add_stream(self.codec.name, rate=info.rate, options=options)
        self.video.pix_fmt = pixel_format
        self.video.codec_context.time_base = info.time_base
        self.video.width, self.video.height = info.upright_size
        self.colour = _tag(self.video.codec_context, info, self.codec)
        if info.timecode:
            self.video.metadata["timecode"] = info.timecode
        self.started = False
        self.durations: dict[int, int] = {}  # by pts, until the encoder hands the frame's packet out
        tracks = audio if self.codec.audio else []
        self.audio = {stream.index: _AudioOut(self.container, stream, self.codec) for stream in tracks}

    def write(self, image: Image.Image, pts: int, duration: int, deep: np.ndarray | None = None) -> None:
        """One finished frame; `deep` (the source's 16-bit RGB) gives its colour to a 10-bit cut-out."""
        self.started = True
        matrix, colour_range = self.colour
        wide = deep is not None and self.video.pix_fmt.endswith("10le") and image.mode == "RGBA"
        if self.video.pix_fmt == "pal8":
            frame = _palette_frame(image)
        else:
            frame = (_deep_frame(image, deep) if wide else _video_frame(image)).reformat(
                format=self.video.pix_fmt, dst_colorspace=matrix, dst_color_range=colour_range, interpolation=EXACT
            )
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
        if packet.stream.index in self.audio:
            self.audio[packet.stream.index].write(packet)

    def close(self) -> None:
        if self.started:
            self._mux(self.video.encode(None))
        for track in self.audio.values():
            track.flush()
        self.container.close()
        if self.codec.name == "prores_ks":
            apple_vendor(Path(self.container.name))

    def abandon(self) -> None:
        """Closes after a failure; an error closing must not hide the failure itself."""
        with contextlib.suppress(av.FFmpegError, OSError):
            self.container.close()


def _tag(context: av.video.codeccontext.VideoCodecContext, info: ClipInfo, codec: Codec) -> tuple[int, int]:
    """Puts the source's colour tags on the output (ProRes is always limited range) and returns the
    matrix and range that frames are converted to YUV with."""
    colour = info.colour
    matrix, colour_range = colour.matrix, LIMITED if codec.name == "prores_ks" else colour.range
    context.color_primaries, context.color_trc = colour.primaries, colour.transfer
    context.colorspace, context.color_range = matrix, colour_range
    return matrix, colour_range


def apple_vendor(path: Path) -> None:
    """Writes Apple's vendor code `apl0` into the ProRes sample description, where FFmpeg's MOV muxer
    always writes `FFMP` (the encoder's `vendor` option only reaches the frames' headers): some
    editors and QuickTime check it. The sample description is in the `moov` box, found by walking
    the top-level boxes, so only that box is read, however large the file."""
    with open(path, "r+b") as file:
        offset, end = 0, path.stat().st_size
        while offset + 8 <= end:
            file.seek(offset)
            size, kind = int.from_bytes(file.read(4), "big"), file.read(4)
            header = 16 if size == 1 else 8
            size = int.from_bytes(file.read(8), "big") if size == 1 else size or end - offset
            if kind == b"moov":
                box = file.read(size - header)
                for entry in (b"ap4h", b"ap4x"):  # ProRes 4444, 4444 XQ: type, 6 reserved, index, version, revision
                    at = box.find(entry + bytes(6) + b"\x00\x01" + bytes(4) + b"FFMP")
                    if at >= 0:
                        file.seek(offset + header + at + 16)
                        file.write(b"apl0")
                return
            offset += max(size, 8)


def _deep_frame(image: Image.Image, deep: np.ndarray) -> av.VideoFrame:
    """A cut-out at 16 bits: the source's own colour and the mask's alpha. Where the 8-bit cut-out
    had its hidden colour cleared (alpha 0, colour 0: docs/output.md), so has this one, or the
    10-bit file would carry the removed background."""
    rgba = np.asarray(image)
    alpha = rgba[..., 3].astype(np.uint16) * 257
    cleared = (rgba[..., 3] == 0) & ~rgba[..., :3].any(axis=2)
    colour = np.where(cleared[..., None], np.uint16(0), deep)
    return av.VideoFrame.from_ndarray(np.dstack([colour, alpha]), format="rgba64le")


def _palette_frame(image: Image.Image) -> av.VideoFrame:
    """A GIF frame: the frame's own 255 colours (Pillow's octree, no dither: steadier from frame to
    frame), and index 255 transparent where alpha is under half."""
    rgba = image.convert("RGBA")
    quantized = rgba.convert("RGB").quantize(255, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    index = np.array(quantized, np.uint8)
    index[np.asarray(rgba.getchannel("A")) < 128] = 255
    colours = np.zeros((256, 3), np.uint8)
    used = np.asarray(quantized.getpalette()[: 255 * 3], np.uint8).reshape(-1, 3)
    colours[: len(used)] = used
    alpha = np.full((256, 1), 255, np.uint8)
    alpha[255] = 0 if image.mode == "RGBA" else 255
    return av.VideoFrame.from_ndarray((index, np.hstack([alpha, colours])), format="pal8")  # ARGB


def _video_frame(image: Image.Image) -> av.VideoFrame:
    if image.mode == "RGBA":
        return av.VideoFrame.from_ndarray(np.asarray(image), format="rgba")
    if image.mode == "L":
        return av.VideoFrame.from_ndarray(np.asarray(image), format="gray")
    return av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")


class _AudioOut:
    """One of the input's audio tracks in the output: its packets copied, or decoded and re-encoded."""

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
        self.time_base = Fraction(1, rate)
        self.next_pts: int | None = None  # in samples, from the first decoded sample's time

    def write(self, packet: av.Packet) -> None:
        if self.copy:
            packet.stream = self.stream
            self.container.mux(packet)
            return
        for frame in self.decoder.decode(packet):
            self._encode(frame)

    def _encode(self, frame: av.AudioFrame | None) -> None:
        """Frames timed in samples from the source's first one: given times, the encoder starts its
        packets before them by its priming (AAC 1024 samples, Opus 312), and the muxer writes that
        as an edit list (MOV, MP4) or codec delay (WebM), so the sound is not late by the priming."""
        if self.next_pts is None and frame is not None:
            self.next_pts = round(frame.time / self.time_base) if frame.pts is not None else 0
        for resampled in self.resampler.resample(frame):
            resampled.pts, resampled.time_base = self.next_pts or 0, self.time_base
            self.next_pts = resampled.pts + resampled.samples
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

    def write(self, image: Image.Image, pts: int, duration: int, deep: np.ndarray | None = None) -> None:
        """One frame as PNG (8 bits: `deep` is for 10-bit video)."""
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


def open_writer(
    path: Path, fmt: str, info: ClipInfo, transparent: bool, audio: list, quality: str = "standard"
) -> ClipWriter | ZipWriter:
    if fmt == "zip":
        return ZipWriter(path, info)
    return ClipWriter(path, fmt, info, transparent, audio, quality)
