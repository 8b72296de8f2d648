"""One list of output kinds (`choices.OUTPUTS`) and one format-to-suffix rule, as every front end sees them."""

from __future__ import annotations

import pytest
from PIL import Image

from bgremover.choices import OUTPUTS, PHOTO_ONLY_OUTPUTS
from bgremover.cli import main
from bgremover.imaging.encoding import OUTPUT_FORMATS, file_suffix
from bgremover.planning import plan_files
from bgremover.results import Options
from bgremover.service.options import build_request


def test_file_suffixes_follow_the_formats() -> None:
    assert [file_suffix(fmt) for fmt in OUTPUT_FORMATS] == [".png", ".webp", ".jpg"]


def test_planned_outputs_use_the_same_suffix(tmp_path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    jobs = plan_files([str(tmp_path / "photo.png")], None, "jpeg")
    assert [job.target.name for job in jobs] == ["photo_nobg.jpg"]


def test_an_unknown_output_names_every_kind() -> None:
    with pytest.raises(ValueError, match="use cutout, mask, color, image"):
        Options(output="sticker")
    with pytest.raises(ValueError, match=r"output='image': use cutout, mask, color\.$"):
        build_request(output="image", outputs=PHOTO_ONLY_OUTPUTS)


def test_the_cli_offers_every_kind(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["remove", "photo.png", "--output", "sticker"])
    assert exited.value.code == 2
    assert "(choose from " + ", ".join(repr(kind) for kind in OUTPUTS) + ")" in capsys.readouterr().err
