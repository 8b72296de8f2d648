"""Encoder settings by quality preset: `draft`, `standard` (the default), `high` and `master`.

Each preset trades encoding speed against file size and fidelity; the settings were chosen by
measuring frames per second, bytes and PSNR of the colour and the alpha against the frames at
1080p on a 2-core CPU (`tools/video_bench.py --encoders`, the table in docs/video.md).
"""

from __future__ import annotations

QUALITIES = ("draft", "standard", "high", "master")

_PRESETS: dict[str, dict[str, dict[str, str]]] = {
    "libvpx-vp9": {
        "draft": {"deadline": "realtime", "cpu-used": "8", "crf": "36"},
        "standard": {"deadline": "realtime", "cpu-used": "7", "crf": "30"},
        "high": {"deadline": "good", "cpu-used": "4", "crf": "24"},
        "master": {"deadline": "good", "cpu-used": "2", "crf": "8"},
    },
    "libx264": {
        "draft": {"preset": "veryfast", "crf": "23"},
        "standard": {"preset": "fast", "crf": "18"},
        "high": {"preset": "slow", "crf": "15"},
        "master": {"preset": "slow", "crf": "4"},
    },
    "libwebp_anim": {
        "draft": {"quality": "60", "compression_level": "1"},
        "standard": {"quality": "80", "compression_level": "3"},
        "high": {"quality": "92", "compression_level": "5"},
        "master": {"lossless": "1", "compression_level": "3"},
    },
    "prores_ks": {  # 4444 (profile 4) and 4444 XQ (5); the speed barely differs between them
        "draft": {"profile": "4"},
        "standard": {"profile": "4"},
        "high": {"profile": "4"},
        "master": {"profile": "5"},
    },
}


def check_quality(quality: str) -> str:
    """The preset's name, refused with the choices."""
    quality = str(quality).strip().lower()
    if quality not in QUALITIES:
        raise ValueError(f"quality {quality!r}: use one of {', '.join(QUALITIES)} (standard is the default).")
    return quality


def encoder_options(codec: str, quality: str) -> dict[str, str]:
    """The encoder's private options for the preset."""
    return dict(_PRESETS.get(codec, {}).get(check_quality(quality), {}))
