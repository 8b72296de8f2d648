"""PNG files written by the app itself: the filter in numpy, the compression by a fast deflate library.

Pillow's PNG encoder (zlib, a filter chosen per row) is the slowest step after the
network for a full-resolution cut-out. Photos change little from one row to the next,
so the Up filter alone (each row minus the row above) leaves small numbers that deflate
packs about as well as Pillow's per-row choice, and numpy computes it in one pass.
ISA-L (`isal`) deflates them fastest, in parts on all cores at once (one pool of threads for the
process, so that images encoded side by side share the cores instead of each taking all of them);
libdeflate (`deflate`) at a high level gives the smallest files; the standard library's zlib
stands in for either one where it is missing.
Only 8-bit L, RGB and RGBA are written here: `can_write` says when Pillow must do it.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
from PIL import Image

from .. import settings

try:  # optional at run time: the fallbacks below give the same pixels, only slower or larger
    from isal import isal_zlib
except ImportError:  # pragma: no cover - depends on the installation
    isal_zlib = None
try:
    import deflate
except ImportError:  # pragma: no cover - depends on the installation
    deflate = None

COLOR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG filter type: difference to the pixel above
_ZLIB_HEADER = b"\x78\x01"  # deflate with a 32 KiB window, "fastest" flag, header checksum valid
_MIN_PART_BYTES = 1 << 22  # below a few MB per part, starting threads costs more than it saves
_IDAT_BYTES = 1 << 24  # the format allows 2**31 - 1 per chunk; smaller chunks keep every reader happy
# Levels per library: ISA-L's highest (3) is larger than 2 on photos; libdeflate 10 and above
# switch to its near-optimal parser, the first level smaller than Pillow's default on photos.
_LEVELS = {"fast": (("isal", 2), ("deflate", 1), ("zlib", 1)), "small": (("deflate", 10), ("zlib", 9))}


def can_write(image: Image.Image) -> bool:
    """Whether `write` handles this image's mode (other modes go through Pillow)."""
    return image.mode in COLOR_TYPES and image.width > 0 and image.height > 0


def up_filtered(pixels: np.ndarray) -> np.ndarray:
    """The PNG scanlines: each row's filter byte, then the row minus the row above (modulo 256)."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    lines = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    lines[:, 0] = _UP
    lines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=lines[1:, 1:])
    return lines


def compress(data: np.ndarray, compression: str) -> bytes:
    """A zlib stream of `data` from the first library available for `compression` ('fast' or 'small')."""
    for library, level in _LEVELS[compression]:
        if library == "isal" and isal_zlib is not None:
            return compress_in_parts(data, level, isal_zlib)
        if library == "deflate" and deflate is not None:
            return deflate.zlib_compress(data, level)
        if library == "zlib":
            return compress_in_parts(data, level, zlib)
    raise AssertionError("zlib is always available")  # pragma: no cover


def compress_in_parts(data: np.ndarray, level: int, module: ModuleType = zlib) -> bytes:
    """One zlib stream, its parts deflated on all cores at once (`module`: zlib or a drop-in such as isal_zlib).

    Each part is deflated on its own and ends on a byte boundary (a sync flush), so the parts
    simply follow one another; only the last one is marked final. The libraries release the
    GIL, so threads run truly in parallel. Small inputs are not worth the threads. How the
    data is split depends only on its size and the cores, never on the load, so an image
    always gives the same bytes.
    """
    flat = data.reshape(-1)
    parts = np.array_split(flat, max(1, min(settings.usable_cores(), flat.nbytes // _MIN_PART_BYTES)))

    def deflated(index: int) -> bytes:
        compressor = module.compressobj(level, module.DEFLATED, -15)
        last = index == len(parts) - 1
        return compressor.compress(parts[index]) + compressor.flush(module.Z_FINISH if last else module.Z_SYNC_FLUSH)

    pieces = [deflated(0)] if len(parts) == 1 else _deflating_threads().map(deflated, range(len(parts)))
    return _ZLIB_HEADER + b"".join(pieces) + struct.pack(">I", module.adler32(flat))


_threads: ThreadPoolExecutor | None = None
_threads_guard = threading.Lock()


def _deflating_threads() -> ThreadPoolExecutor:
    """The process's one pool for deflating parts, a thread per core, made on first use.

    Shared so that the batch path's worker threads, each encoding an image, queue their parts
    here rather than each starting a thread per core: the parts in flight never outnumber the cores.
    """
    global _threads
    with _threads_guard:
        if _threads is None:
            _threads = ThreadPoolExecutor(settings.usable_cores(), thread_name_prefix="rmbg-png")
        return _threads


def _forget_threads() -> None:
    """A forked child inherits the pool but not its threads: it starts its own on first use."""
    global _threads, _threads_guard
    _threads, _threads_guard = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def library(compression: str) -> str:
    """The deflate library and level `compress` uses here, for reports: e.g. 'isal level 2'."""
    available = {"isal": isal_zlib is not None, "deflate": deflate is not None, "zlib": True}
    name, level = next((name, level) for name, level in _LEVELS[compression] if available[name])
    return f"{name} level {level}"


def _chunk(kind: bytes, body: bytes | memoryview) -> bytes:
    """Length, type, data and the CRC of type and data."""
    crc = zlib.crc32(body, zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", crc)


def write(image: Image.Image, icc_profile: bytes | None = None, compression: str = "fast") -> bytes:
    """The image as a PNG file (8-bit L, RGB or RGBA, see `can_write`), with its ICC profile if given."""
    width, height = image.size
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[image.mode], 0, 0, 0)
    parts = [_SIGNATURE, _chunk(b"IHDR", header)]
    if icc_profile:  # name, separator, compression method 0 (zlib), the compressed profile
        parts.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    stream = memoryview(compress(up_filtered(np.asarray(image)), compression))
    parts += [_chunk(b"IDAT", stream[start : start + _IDAT_BYTES]) for start in range(0, len(stream), _IDAT_BYTES)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
