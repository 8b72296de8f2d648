"""The UI's handlers in-process, where what they report matters more than how the page shows it."""

from __future__ import annotations

import re

import pytest
from helpers import cpu_service
from live import png_bytes, sample_image

from bgremover.engines import openvino as openvino_engine


@pytest.mark.slow
def test_compare_times_the_openvino_conversion_apart_from_the_run(offline_hub, tmp_path, monkeypatch) -> None:
    """The first RMBG-1.4 run on OpenVINO converts the network (23 s of a 25 s "run" in the issue):
    the Compare tab's time is the run's, and the one-time work is shown apart."""
    from bgremover.web.handlers import Handlers
    from bgremover.web.scratch import Scratch

    monkeypatch.setattr(openvino_engine, "engine_cache_dir", lambda: tmp_path / "engines")  # nothing converted yet
    handlers = Handlers(cpu_service("RMBG-1.4", size=64, runtime="openvino"), Scratch())
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(sample_image(80, 60)))

    def timed(info: str) -> tuple[float, float]:
        found = re.search(r"px: ([\d.]+) s · .* · loading and one-time preparation ([\d.]+) s \(not counted\)", info)
        assert found, info
        return float(found[1]), float(found[2])

    image, first = handlers.compare_one(photo, photo.name, "RMBG-1.4", 0)
    assert image.size == (80, 60)
    assert (tmp_path / "engines").is_dir()  # the conversion happened, during this call
    run, setup = timed(first)
    assert setup > run  # the conversion is in the preparation, not in the run
    _, second = handlers.compare_one(photo, photo.name, "RMBG-1.4", 0)
    assert timed(second)[1] < setup  # loaded and converted already
