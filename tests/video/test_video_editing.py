"""What an editor checks before dropping a clip on a timeline, read back from the outputs with PyAV:
colour tags and the pixels under them, every audio track and its timing, the timecode, the ProRes
vendor, the quality presets. RMBG-1.4 on synthetic weights at inference size 64."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import loaded_small_service
from scipy import ndimage

from bgremover.service.options import build_request
from bgremover.service.removal import RemovalService
from bgremover.video import VideoError
from bgremover.video.clip import remove_clip
from bgremover.video.reading import EXACT

BT709, SMPTE170M, BT2020, PQ = 1, 6, 9, 16
LIMITED, FULL = 1, 2
CLICKS_MS = (100, 150)  # where each audio track of a generated clip has its click
RATE = 48000


@pytest.fixture(scope="module")
def service(hf_home) -> RemovalService:
    return loaded_small_service(hf_home)


def picture(width: int, height: int) -> np.ndarray:
    """Smooth colours over the whole gamut's middle: a lossy encoder keeps them within a level or
    two, while the wrong matrix moves them by several."""
    y, x = np.mgrid[0:height, 0:width]
    red, green = 30 + 200 * x / width, 30 + 200 * y / height
    blue = 128 + 90 * np.sin(x / width * 3.1) * np.cos(y / height * 3.1)
    return np.stack([red, green, blue], -1).astype(np.uint8)


def make_clip(
    path: Path,
    size: tuple[int, int] = (320, 240),
    *,
    matrix: int = BT709,
    colour_range: int = LIMITED,
    transfer: int = BT709,
    codec: str = "libx264",
    audio: tuple[str, ...] = (),
    timecode: str | None = None,
    tagged: bool = True,
) -> np.ndarray:
    """A 4-frame clip at 25 fps tagged with the given colour (or untagged), with one audio track per
    `audio` codec (a click at CLICKS_MS[i]) and a timecode; returns its picture as RGB."""
    width, height = size
    image = picture(width, height)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 25)
        if tagged:
            context = video.codec_context
            context.colorspace, context.color_range = matrix, colour_range
            context.color_trc, context.color_primaries = transfer, BT709 if matrix != BT2020 else BT2020
        if timecode:
            video.metadata["timecode"] = timecode
        tracks = [container.add_stream(name, rate=RATE, layout="mono") for name in audio]
        _encode_still(container, video, image, 4, matrix, colour_range)
        for track, click in zip(tracks, CLICKS_MS, strict=False):
            _click_track(container, track, click)
    return image


def _click_track(container, track, click_ms: int) -> None:
    """Half a second of silence with one click, timed in samples so the encoder's priming is cut."""
    samples = np.zeros((1, RATE // 2), np.float32)
    samples[0, RATE * click_ms // 1000] = 0.9
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = RATE
    context = track.codec_context
    resampler = av.AudioResampler(context.codec.audio_formats[0].name, "mono", RATE, frame_size=context.frame_size)
    start = 0
    for chunk in resampler.resample(frame) + resampler.resample(None):
        chunk.pts, chunk.time_base, start = start, Fraction(1, RATE), start + chunk.samples
        container.mux(track.encode(chunk))
    container.mux(track.encode(None))


def decoded_rgba(path: Path) -> tuple[list[np.ndarray], dict]:
    """The frames as RGBA under the file's own colour tags, and those tags."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        tags = {
            "primaries": context.color_primaries,
            "transfer": context.color_trc,
            "matrix": context.colorspace,
            "range": context.color_range,
        }
        # FFmpeg's own VP9 decoder drops the alpha layer; libvpx reads it
        decoder = av.CodecContext.create("libvpx-vp9", "r") if context.name == "vp9" else context
        frames = [f for packet in container.demux(stream) for f in decoder.decode(packet)]
        rgba = [
            f.to_ndarray(
                format="rgba", src_colorspace=tags["matrix"], src_color_range=tags["range"], interpolation=EXACT
            )
            for f in frames
        ]
    return rgba, tags


def clicks_ms(path: Path) -> list[float]:
    """When each audio track's click is heard, in milliseconds from the clip's start."""
    with av.open(str(path)) as container:
        count = len(container.streams.audio)
    times = []
    for index in range(count):
        with av.open(str(path)) as container:
            frames = list(container.decode(container.streams.audio[index]))
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
        first = float(frames[0].time or 0.0)
        times.append(1000 * (first + int(np.argmax(np.abs(samples))) / frames[0].sample_rate))
    return times


@pytest.mark.parametrize("fmt", ["webm", "mov", "mp4"])
@pytest.mark.parametrize(
    ("matrix", "colour_range"), [(BT709, LIMITED), (SMPTE170M, FULL)], ids=["bt709-limited", "bt601-full"]
)
def test_colour_tags_are_copied_and_the_pixels_under_them_match(service, tmp_path, fmt, matrix, colour_range) -> None:
    source, target = tmp_path / "source.mp4", tmp_path / f"out.{fmt}"
    make_clip(source, matrix=matrix, colour_range=colour_range)
    # A cut-out with a hard mask, or (MP4, opaque) the whole frame as subject: threshold 0 keeps all.
    cutout, whole = build_request(output="cutout", threshold=0.5), build_request(output="color", threshold=0)
    request = whole if fmt == "mp4" else cutout
    remove_clip(service, source, target, request, fmt=fmt, quality="master")
    (expected, *_), tags = decoded_rgba(source)
    (written, *_), written_tags = decoded_rgba(target)
    prores_range = LIMITED if fmt == "mov" else colour_range  # ProRes is limited range by definition
    assert written_tags == {**tags, "range": prores_range}
    opaque = ndimage.binary_erosion(written[..., 3] == 255, iterations=6)  # away from the mask's edges
    assert opaque.mean() > 0.2
    error = np.abs(written[..., :3].astype(np.int16) - expected[..., :3])[opaque]
    assert error.mean() <= 1.0 and error.max() <= 4, (error.mean(), error.max())


def test_an_untagged_hd_clip_is_read_as_bt709_and_says_so(service, tmp_path) -> None:
    source, target = tmp_path / "untagged.mp4", tmp_path / "out.mov"
    make_clip(source, (1280, 720), matrix=BT709, tagged=False)
    remove_clip(service, source, target, build_request(threshold=0), fmt="mov")
    (expected, *_), _ = decoded_rgba(source)
    with av.open(str(source)) as container:
        assert container.streams.video[0].codec_context.colorspace == 2  # unspecified
    (written, *_), tags = decoded_rgba(target)
    assert tags["matrix"] == BT709
    with av.open(str(source)) as container:  # the source under BT.709, as HD players show it
        frame = next(container.decode(video=0))
        expected = frame.to_ndarray(format="rgb24", src_colorspace=BT709, src_color_range=LIMITED, interpolation=EXACT)
    assert np.abs(written[..., :3].astype(np.int16) - expected).mean() <= 1.0


def test_hdr_is_refused_with_the_way_to_make_it_sdr(service, tmp_path) -> None:
    source = tmp_path / "hdr.mp4"
    make_clip(source, matrix=BT2020, transfer=PQ)
    with pytest.raises(VideoError, match=r"HDR \(PQ.*Tone-map it to SDR"):
        remove_clip(service, source, tmp_path / "out.webm", build_request(), fmt="webm")
    assert not (tmp_path / "out.webm").exists()


@pytest.mark.parametrize(
    ("source_name", "audio", "fmt", "written_audio"),
    [
        ("two_aac.mp4", ("aac", "aac"), "webm", "opus"),  # re-encoded: Opus primes 312 samples
        ("two_aac.mp4", ("aac", "aac"), "mov", "aac"),  # copied
        ("two_opus.webm", ("libopus", "libopus"), "mp4", "opus"),  # MP4 takes Opus as it is
        ("two_opus.webm", ("libopus", "libopus"), "mov", "aac"),  # re-encoded: AAC primes 1024 samples
    ],
)
def test_every_audio_track_arrives_in_time_and_the_timecode_is_kept(
    service, tmp_path, source_name, audio, fmt, written_audio
) -> None:
    source, target = tmp_path / source_name, tmp_path / f"out.{fmt}"
    codec = "libvpx-vp9" if source_name.endswith("webm") else "libx264"
    make_clip(source, codec=codec, audio=audio, timecode="01:02:03:04")
    remove_clip(service, source, target, build_request(output="color" if fmt == "mp4" else "cutout"), fmt=fmt)
    with av.open(str(target)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == [written_audio] * 2
        timecodes = [s.metadata.get("timecode") or s.metadata.get("TIMECODE") for s in container.streams]
        if fmt != "webm":  # MOV and MP4: a timecode track
            assert [s.metadata.get("timecode") for s in container.streams.data] == ["01:02:03:04"]
    assert "01:02:03:04" in timecodes
    heard, expected = clicks_ms(target), clicks_ms(source)
    assert expected == pytest.approx(CLICKS_MS, abs=1.0)  # the source itself is on time
    assert heard == pytest.approx(expected, abs=1.0)


def test_prores_carries_apples_vendor_code(service, tmp_path) -> None:
    source, target = tmp_path / "source.mp4", tmp_path / "out.mov"
    make_clip(source)
    remove_clip(service, source, target, build_request(), fmt="mov")
    with av.open(str(target)) as container:
        assert container.streams.video[0].metadata["vendor_id"] == "apl0"
        assert container.streams.video[0].codec_context.profile == "4444"


def test_quality_presets_trade_size_for_fidelity(service, tmp_path) -> None:
    source = tmp_path / "source.mp4"
    expected = make_clip(source, (320, 240))
    noisy = np.random.default_rng(0).integers(-20, 21, expected.shape)  # detail that costs bits
    with av.open(str(source), "w") as container:
        video = container.add_stream("libx264", rate=10, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv444p"
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(np.clip(expected + noisy, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    (reference, *_), _ = decoded_rgba(source)
    sizes, errors = {}, {}
    for quality in ("draft", "master"):
        target = tmp_path / f"{quality}.webm"
        remove_clip(service, source, target, build_request(threshold=0), fmt="webm", quality=quality)
        sizes[quality] = target.stat().st_size
        (written, *_), _ = decoded_rgba(target)
        errors[quality] = np.abs(written.astype(np.int16) - reference)[..., :3].mean()
    assert sizes["draft"] < sizes["master"] and errors["master"] < errors["draft"], (sizes, errors)
    with pytest.raises(ValueError, match="quality 'best': use one of draft, standard, high, master"):
        remove_clip(service, source, tmp_path / "x.webm", build_request(), fmt="webm", quality="best")
    assert not (tmp_path / "x.webm").exists()


@pytest.mark.parametrize("fmt", ["mov", "webm"])  # audio copied (AAC into MOV) and re-encoded (Opus)
def test_in_and_out_points_keep_that_part_from_zero_with_its_sound_in_sync(service, tmp_path, fmt) -> None:
    source, target = tmp_path / "source.mp4", tmp_path / f"part.{fmt}"
    make_clip(source, audio=("aac",))
    remove_clip(service, source, target, build_request(), fmt=fmt, start=0.04, end=0.12)
    with av.open(str(target)) as container:
        assert [round(f.time, 3) for f in container.decode(video=0)] == [0.0, 0.04]
    assert clicks_ms(target) == pytest.approx([CLICKS_MS[0] - 40], abs=1.0)
    with pytest.raises(VideoError, match=r"the in point \(9 s\) is past the clip's end \(0.16 s\)"):
        remove_clip(service, source, tmp_path / "none.webm", build_request(), fmt="webm", start=9)
    with pytest.raises(VideoError, match=r"the in point \(0.1 s\) must be 0 or more and before the out point"):
        remove_clip(service, source, tmp_path / "none.webm", build_request(), fmt="webm", start=0.1, end=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part." + fmt, "source.mp4"]


def test_one_frame_at_a_time_is_the_frame_the_clip_shows_then(tmp_path) -> None:
    from bgremover.video.reading import Limits, frame_at

    source = tmp_path / "source.mp4"
    expected = make_clip(source)
    image = np.asarray(frame_at(source, "source.mp4", 0.05, Limits(60, 100, 10**7)))
    assert image.shape == expected.shape and np.abs(image.astype(np.int16) - expected).mean() < 1.5
    with pytest.raises(VideoError, match="past the clip's end"):
        frame_at(source, "source.mp4", 3.0, Limits(60, 100, 10**7))


def _encode_still(container, video, rgb: np.ndarray, count: int, matrix: int, colour_range: int) -> None:
    """`count` frames of one picture (8-bit RGB, or 16-bit for deep formats) in the stream's pixel
    format, converted with `matrix` and `colour_range` exactly, then the encoder flushed."""
    source = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
    for index in range(count):
        frame = av.VideoFrame.from_ndarray(rgb, format=source).reformat(
            format=video.pix_fmt, dst_colorspace=matrix, dst_color_range=colour_range, interpolation=EXACT
        )
        frame.pts = index
        container.mux(video.encode(frame))
    container.mux(video.encode(None))


def test_a_10_bit_source_gives_a_10_bit_cutout_in_prores(service, tmp_path) -> None:
    """Not 8-bit steps in a 10-bit file: the source's own 10-bit colour arrives where alpha is 255."""
    source, target = tmp_path / "ten.mov", tmp_path / "out.mov"
    y, x = np.mgrid[0:240, 0:320]
    ramp = np.stack([x * 40 + 8000, y * 40 + 12000, np.full_like(x, 30000)], -1).astype(np.uint16)  # fine steps
    with av.open(str(source), "w") as container:
        video = container.add_stream("prores_ks", rate=25, options={"profile": "3"})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv422p10le"
        video.codec_context.colorspace, video.codec_context.color_range = BT709, LIMITED
        _encode_still(container, video, ramp, 2, BT709, LIMITED)

    def wide(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(
                format="rgba64le", src_colorspace=BT709, src_color_range=LIMITED, interpolation=EXACT
            ).astype(np.int32)

    remove_clip(service, source, target, build_request(threshold=0.5), fmt="mov")
    expected, written = wide(source), wide(target)
    opaque = ndimage.binary_erosion(written[..., 3] >= 65472, iterations=4)  # 1023 of 1023
    assert opaque.mean() > 0.2
    error = np.abs(written[..., :3] - expected[..., :3])[opaque] / 64  # in 10-bit levels
    # 8-bit steps would be off by a mean of about 1 level (of 1023), and up to 2
    assert error.mean() < 0.5 and error.max() <= 3, (error.mean(), error.max())
    # The removed background stays removed at 10 bits too: colour 0 under alpha 0 (docs/output.md).
    hidden = ndimage.binary_erosion(written[..., 3] == 0, iterations=4)
    assert hidden.mean() > 0.01 and written[..., :3][hidden].max() < 4 * 64, written[..., :3][hidden].max()


@pytest.mark.slow
def test_the_cli_takes_quality_and_in_and_out_points(offline_hub, tmp_path) -> None:
    import subprocess
    import sys

    from live import REPO

    source, target = tmp_path / "source.mp4", tmp_path / "part.mov"
    make_clip(source, audio=("aac", "aac"), timecode="10:00:59:24")
    fast = ["--model", "RMBG-1.4", "--size", "64", "--device", "cpu", "--precision", "fp32"]
    command = [sys.executable, "rmbg.py", "remove", str(source), "-o", str(target), *fast]
    done = subprocess.run(
        [*command, "--quality", "draft", "--start", "0.04", "--end", "0.12"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with av.open(str(target)) as container:
        assert [round(f.time, 3) for f in container.decode(video=0)] == [0.0, 0.04]
        assert len(container.streams.audio) == 2
        assert [s.metadata.get("timecode") for s in container.streams.data] == ["10:01:00:00"]  # + 1 frame
    for flags, message in (
        (["--start", "0.2", "--end", "0.1"], "must be 0 or more and before the out point"),
        (["--quality", "best"], "invalid choice: 'best'"),
    ):
        refused = subprocess.run([*command, *flags], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr


def test_an_animated_webp_keeps_frames_times_alpha_and_colour(service, tmp_path) -> None:
    from PIL import Image

    source, target = tmp_path / "source.mp4", tmp_path / "out.webp"
    make_clip(source, audio=("aac",))
    remove_clip(service, source, target, build_request(threshold=0.5), fmt="webp", quality="master")
    (expected, *_), _ = decoded_rgba(source)
    with Image.open(target) as animation:
        assert animation.n_frames == 4 and animation.info.get("loop") == 0
        written = np.asarray(animation.convert("RGBA"), np.int16)
    # Each ANMF chunk: tag, size, x, y, width-1, height-1 (3 bytes each), then the duration in ms.
    data = target.read_bytes()
    durations = [int.from_bytes(data[at + 20 : at + 23], "little") for at in _finds(data, b"ANMF")]
    assert durations == [40, 40, 40, 40]
    opaque = ndimage.binary_erosion(written[..., 3] == 255, iterations=6)
    assert opaque.mean() > 0.2 and (written[..., 3] == 0).mean() > 0.05  # a real cut-out
    error = np.abs(written[..., :3] - expected[..., :3])[opaque]
    assert error.mean() <= 1.0 and error.max() <= 4, (error.mean(), error.max())


def _finds(data: bytes, tag: bytes) -> list[int]:
    at, found = data.find(tag), []
    while at >= 0:
        found.append(at)
        at = data.find(tag, at + 1)
    return found


def test_a_gif_keeps_frames_times_and_a_transparent_background(service, tmp_path) -> None:
    from PIL import Image

    source, target = tmp_path / "source.mp4", tmp_path / "out.gif"
    make_clip(source, audio=("aac",))
    remove_clip(service, source, target, build_request(threshold=0.5), fmt="gif")
    (expected, *_), _ = decoded_rgba(source)
    with Image.open(target) as animation:
        assert animation.n_frames == 4 and animation.info.get("loop") == 0
        durations = []
        for index in range(4):
            animation.seek(index)
            durations.append(animation.info["duration"])
        animation.seek(0)
        written = np.asarray(animation.convert("RGBA"), np.int16)
    assert durations == [40, 40, 40, 40]
    opaque = ndimage.binary_erosion(written[..., 3] == 255, iterations=6)
    assert opaque.mean() > 0.2 and (written[..., 3] == 0).mean() > 0.05  # a real cut-out
    error = np.abs(written[..., :3] - expected[..., :3])[opaque]
    assert error.mean() <= 4.0, error.mean()  # 255 colours a frame: close, not exact
