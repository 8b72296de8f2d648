"""Bad and unusual files against a real server's /api/remove and the real CLI: each one gets the
documented 415 with a message that names the problem, or a correct image; never a 500, and the
server keeps answering /health after each. The corpus is generated here (Pillow, numpy, bytes)."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live import MODEL, REPO, SERVER_ARGS, Server, opened, run_server
from PIL import Image

pytestmark = pytest.mark.slow  # a server and CLI runs in subprocesses

EMPTY = "the file is empty"
NOT_AN_IMAGE = "not an image this app can read"
DAMAGED = "truncated or damaged"
TOO_LARGE = "megapixels, more than the limit of 100"


def _saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gradient(width: int = 96, height: int = 64) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    """`chunk` inserted before the image data, where ancillary chunks go."""
    at = png.index(b"IDAT") - 4
    return png[:at] + chunk + png[at:]


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming width x height, and almost no data."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", zlib.compress(bytes(1000))) + _chunk(b"IEND", b"")


def _jpeg_header_bomb(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(_saved(_gradient(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bad_crc(png: bytes) -> bytes:
    data = bytearray(png)
    data[29] ^= 0xFF  # the last byte of the header chunk's CRC
    return bytes(data)


def _frames(fmt: str, **options) -> bytes:
    first, second = _gradient(), _gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _saved(first, fmt, save_all=True, append_images=[second], **options)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return _saved(_gradient(96, 64), "JPEG", exif=exif)


# 200 MB of zeros compressed to 200 KB: a metadata chunk that would inflate on reading.
_ZLIB_BOMB = zlib.compress(bytes(200_000_000), 9)
_PNG = _saved(_gradient(400, 300), "PNG")
_JPEG = _saved(_gradient(400, 300), "JPEG")

# name -> (file, expected: an error phrase for 415, or the (width, height) of a 200's image)
CORPUS: dict[str, tuple[bytes, str | tuple[int, int]]] = {
    "zero-byte.png": (b"", EMPTY),
    "text-as.png": (b"hello, I am not an image\n" * 10, NOT_AN_IMAGE),
    "truncated.png": (_PNG[: len(_PNG) // 2], DAMAGED),
    "truncated.jpg": (_JPEG[:2000], DAMAGED),
    "bad-crc.png": (_bad_crc(_PNG), "has a damaged header"),
    "header-bomb.png": (_png_header_bomb(100_000, 100_000), TOO_LARGE),
    "header-bomb.jpg": (_jpeg_header_bomb(65_000, 65_000), TOO_LARGE),
    "ztxt-bomb.png": (_with_chunk(_saved(_gradient(), "PNG"), _chunk(b"zTXt", b"Comment\0\0" + _ZLIB_BOMB)), DAMAGED),
    "iccp-bomb.png": (_with_chunk(_saved(_gradient(), "PNG"), _chunk(b"iCCP", b"icc\0\0" + _ZLIB_BOMB)), DAMAGED),
    "drawing.svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>',
        NOT_AN_IMAGE,
    ),
    # PostScript: reading it would mean running Ghostscript on an upload.
    "drawing.eps": (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\nnewpath 0 0 moveto 9 9 lineto stroke\n",
        NOT_AN_IMAGE,
    ),
    "grey-16-bit.png": (
        _saved(Image.fromarray((np.arange(96 * 64).reshape(64, 96) * 10).astype(np.uint16)), "PNG"),
        (96, 64),
    ),
    "cmyk.jpg": (_saved(_gradient().convert("CMYK"), "JPEG"), (96, 64)),
    "palette-trns.png": (_saved(_gradient().convert("P"), "PNG", transparency=0), (96, 64)),
    "animated.gif": (_frames("GIF", duration=100), (96, 64)),
    "animated.png": (_frames("PNG", duration=100), (96, 64)),
    "exif-rotated.jpg": (_exif_rotated(), (64, 96)),
    "multipage.tif": (_frames("TIFF"), (96, 64)),
    "jpeg-named.png": (_saved(_gradient(), "JPEG"), (96, 64)),
    "one-pixel.png": (_saved(_gradient(1, 1), "PNG"), (1, 1)),
    "a-line.png": (_saved(_gradient(6000, 1), "PNG"), (6000, 1)),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("hostile"), hf_home, *SERVER_ARGS) as server:
        yield server


@pytest.mark.parametrize("name", CORPUS)
def test_the_api_answers_every_file_with_415_and_its_reason_or_a_correct_image(server, name) -> None:
    data, expected = CORPUS[name]
    response = server.remove(data, name=name)
    if isinstance(expected, str):
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert error.startswith(f"{name}: ") and expected in error
    else:
        image = opened(response)
        assert image.mode == "RGBA" and image.size == expected
    assert server.get("/health").status_code == 200


def test_the_server_log_has_no_traceback_after_the_corpus(server) -> None:
    for name, (data, _) in CORPUS.items():
        assert server.remove(data, name=name).status_code in (200, 415)
    assert "Traceback" not in server.log.read_text()


def _rmbg(hf_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "RMBG_DEVICE": "cpu"}
    command = [sys.executable, "rmbg.py", "remove", *args, "--model", MODEL, *SERVER_ARGS[2:]]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300)


def test_the_cli_names_each_bad_file_in_one_line_exits_1_and_writes_only_good_outputs(tmp_path, hf_home) -> None:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    names = ["zero-byte.png", "truncated.jpg", "header-bomb.png", "iccp-bomb.png", "cmyk.jpg", "exif-rotated.jpg"]
    for name in names:
        (inputs / name).write_bytes(CORPUS[name][0])
    done = _rmbg(hf_home, str(inputs), "-o", str(outputs))
    assert done.returncode == 1  # docs/cli.md: 1 when any image failed
    lines = done.stderr.decode().splitlines()
    for name in names[:4]:
        failed = [line for line in lines if line.startswith(f"failed: in/{name}: ")]
        assert failed and CORPUS[name][1] in failed[-1], done.stderr.decode()
    assert sorted(path.name for path in outputs.iterdir()) == ["cmyk.png", "exif-rotated.png"]
    assert Image.open(outputs / "exif-rotated.png").size == (64, 96)
    assert b"Traceback" not in done.stderr


def test_the_cli_refuses_an_eps_file_without_an_output(tmp_path, hf_home) -> None:
    source, target = tmp_path / "drawing.eps", tmp_path / "drawing.png"
    source.write_bytes(CORPUS["drawing.eps"][0])
    done = _rmbg(hf_home, str(source), "-o", str(target))
    assert done.returncode == 1 and not target.exists()
    assert f"failed: {source}: {NOT_AN_IMAGE}" in done.stderr.decode()
