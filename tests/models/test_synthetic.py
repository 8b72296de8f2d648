"""`bgremover/synthetic.py`: synthetic Hub caches that the real loader reads offline."""

from __future__ import annotations

import os

import pytest

from bgremover import hub
from bgremover.synthetic import product_photo, synthetic_hub, synthetic_matte


@pytest.mark.slow
def test_a_synthetic_hub_is_written_once_and_leaves_the_environment_as_it_was(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    with synthetic_hub("rmbg-1.4", tmp_path / "home") as name:
        assert name == "RMBG-1.4"
        assert os.environ["HF_HOME"] == str(tmp_path / "home") and os.environ["HF_HUB_OFFLINE"] == "1"
        assert "HF_HUB_CACHE" not in os.environ
        found = hub.identify_model(name)  # the real by-name path, offline
        assert found.label == "IS-Net" and found.path.is_relative_to(tmp_path / "home" / "hub")
        written = found.path.stat().st_mtime_ns
    assert dict(os.environ) == before
    with synthetic_hub("RMBG-1.4", tmp_path / "home") as name:
        assert hub.identify_model(name).path.stat().st_mtime_ns == written  # reused, not written again


def test_synthetic_hubs_are_for_zoo_models_only(tmp_path) -> None:
    with pytest.raises(ValueError, match="--synthetic needs a zoo model name"), synthetic_hub("someone/else", tmp_path):
        pass
    assert not (tmp_path / "hub").exists()


def test_stand_in_photos_are_deterministic() -> None:
    first, again = product_photo(64, 48, seed=3), product_photo(64, 48, seed=3)
    assert first.size == (64, 48) and first.mode == "RGB" and first.tobytes() == again.tobytes()
    assert first.tobytes() != product_photo(64, 48, seed=4).tobytes()
    matte = synthetic_matte(64, 48)
    assert matte.mode == "L" and matte.getextrema() == (0, 255)
