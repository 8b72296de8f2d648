"""A model's identity: a checkpoint folder named like a zoo model stays that folder, everywhere.

Hand-downloaded weights end up in folders named like their Hub repository (`./BiRefNet_lite`,
`./RMBG-2.0`). Such a folder is `local:<folder>`: it never takes over the zoo entry of the same
name, and the zoo entry never takes over it, in the loader, the pool, the CLI and the server.
The folders here hold RMBG-1.4's synthetic IS-Net weights, so a mix-up with a zoo model of
another architecture shows in the network that runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import cpu_service
from live import TIMEOUT, opened, png_bytes, run_server, sample_image
from PIL import Image

from bgremover.cli import main
from bgremover.hub import ModelLoadError, load_model, resolve
from bgremover.nets.isnet import ISNet
from bgremover.service.pool import UnknownModel
from bgremover.zoo import ZOO

FOLDER_NAMES = [variant for name in ZOO for variant in (name, name.lower(), name.upper())]


def isnet_weights(hf_home: Path) -> Path:
    """The synthetic RMBG-1.4 checkpoint in the test cache."""
    return next((hf_home / "hub").glob("models--briaai--RMBG-1.4/snapshots/*/model.safetensors"))


def checkpoint_folder(root: Path, name: str, hf_home: Path) -> Path:
    """A folder `root/name` holding model.safetensors, as a hand download leaves it (a link: no copy)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").symlink_to(isnet_weights(hf_home))
    return folder


@pytest.mark.parametrize("folder_name", FOLDER_NAMES)
def test_a_folder_named_like_a_zoo_model_is_offered_as_local_beside_the_zoo(offline_hub, tmp_path, folder_name):
    folder = checkpoint_folder(tmp_path, folder_name, offline_hub)
    info = resolve(str(folder))
    assert (info.name, info.origin, info.repo_id) == (f"local:{folder_name}", "local", None)
    pool = cpu_service(str(folder), size=256).pool
    local = f"local:{folder_name}"
    assert pool.default_model == local and pool.names() == [local, *ZOO]
    assert pool.canonical(None) == local and pool.canonical(local) == local
    zoo_name = next(name for name in ZOO if name.casefold() == folder_name.casefold())
    assert pool.canonical(folder_name) == zoo_name  # a bare zoo name always means the zoo's model
    rows = {row["name"]: row for row in pool.models()}
    assert rows[local] | {"source": "local", "repo_id": None, "cached": True, "availability": "ready"} == rows[local]
    assert rows[local]["license"].startswith("unknown") and str(folder) not in json.dumps(rows)
    assert rows[zoo_name]["source"] == "zoo" and rows[zoo_name]["repo_id"] == ZOO[zoo_name].repo_id
    assert rows[zoo_name]["license"] == ZOO[zoo_name].license


def test_the_pool_loads_the_folder_for_its_name_and_the_zoo_model_for_the_zoo_name(offline_hub, tmp_path):
    folder = checkpoint_folder(tmp_path, "BiRefNet_lite", offline_hub)
    pool = cpu_service(str(folder), size=256).pool
    local = pool.get()
    assert local.engine.info.name == "local:BiRefNet_lite" and isinstance(local.engine.network, ISNet)
    zoo_model = pool.get("BiRefNet_lite")
    assert zoo_model.engine.info.name == "BiRefNet_lite" and zoo_model.engine.info.family == "birefnet"
    with pytest.raises(UnknownModel):
        pool.get(str(folder))  # a client never names server paths


def test_an_uncached_zoo_model_named_like_the_folder_says_why_and_the_folder_still_works(offline_hub, tmp_path):
    folder = checkpoint_folder(tmp_path, "RMBG-2.0", offline_hub)
    pool = cpu_service(str(folder), size=256).pool
    assert pool.get().engine.info.name == "local:RMBG-2.0"
    assert pool.availability("RMBG-2.0") == "offline"
    with pytest.raises(ModelLoadError, match="RMBG-2.0 is not downloaded here") as raised:
        pool.get("RMBG-2.0")
    assert str(folder) not in str(raised.value)


def test_availability_says_what_each_model_needs_before_anyone_picks_it(offline_hub, monkeypatch):
    from bgremover.web.events import model_choices

    pool = cpu_service("RMBG-1.4", size=256).pool
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, no token: nothing here is fetched by asking
    assert [pool.availability(name) for name in ("RMBG-1.4", "RMBG-2.0", "BiRefNet")] == ["ready", "token", "download"]
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert pool.availability("RMBG-2.0") == "download"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    choices = dict(model_choices(pool))
    assert choices["RMBG-2.0 · non-commercial · not on this machine"] == "RMBG-2.0"
    assert choices["BiRefNet_lite · MIT · ready"] == "BiRefNet_lite"


def test_the_cli_runs_the_folder_and_names_it_local(offline_hub, tmp_path, capsys):
    folder = checkpoint_folder(tmp_path / "ckpt", "birefnet_lite", offline_hub)
    sample_image().save(tmp_path / "photo.png")
    common = ["--size", "256", "--device", "cpu", "--precision", "fp32"]
    assert (
        main(["remove", str(tmp_path / "photo.png"), "--model", str(folder), "-o", str(tmp_path / "a.png"), *common])
        == 0
    )
    assert "; local:birefnet_lite on torch" in capsys.readouterr().err
    assert (
        main(["remove", str(tmp_path / "photo.png"), "--model", "RMBG-1.4", "-o", str(tmp_path / "b.png"), *common])
        == 0
    )
    same_weights = [np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png")]
    assert np.array_equal(*same_weights)


def test_download_to_a_folder_gives_a_folder_that_loads_as_local(offline_hub, tmp_path, capsys):
    assert main(["download", "RMBG-1.4", "--to", str(tmp_path / "weights")]) == 0
    copied = tmp_path / "weights" / "RMBG-1.4" / "model.safetensors"
    assert capsys.readouterr().out.strip() == f"RMBG-1.4: {copied}"
    assert copied.read_bytes() == isnet_weights(offline_hub).read_bytes() and not copied.is_symlink()
    loaded = load_model(str(copied.parent))
    assert loaded.info.name == "local:RMBG-1.4" and loaded.info.origin == "local"
    assert main(["download", "BiRefNet", "--to", str(tmp_path / "weights")]) == 2
    assert not (tmp_path / "weights" / "BiRefNet").exists()  # nothing half-written for a failed download


# --- The server, black-box ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("folder_name", ["BiRefNet_lite", "rmbg-2.0"])
def test_the_server_answers_with_the_folder_and_keeps_the_zoo_model_apart(tmp_path, hf_home, folder_name):
    folder = checkpoint_folder(tmp_path / "checkpoints", folder_name, hf_home)
    local = f"local:{folder_name}"
    image = png_bytes(sample_image())
    args = ("--model", str(folder), "--size", "256", "--precision", "fp32")
    with run_server(tmp_path, hf_home, *args) as server:
        assert server.get("/health").json()["model"] == local
        default = server.remove(image)
        assert default.status_code == 200 and default.headers["X-Model"] == local
        named = server.remove(image, model=local)
        assert named.headers["X-Model"] == local and named.content == default.content
        as_isnet = server.remove(image, model="RMBG-1.4")  # the same weights under their zoo name
        assert np.array_equal(np.asarray(opened(as_isnet)), np.asarray(opened(default)))
        rows = {row["name"]: row for row in server.get("/api/models").json()["models"]}
        assert rows[local]["source"] == "local" and rows[local]["repo_id"] is None and rows[local]["default"]
        assert str(folder) not in json.dumps(rows)
        zoo_name = next(name for name in ZOO if name.casefold() == folder_name.casefold())
        assert rows[zoo_name]["source"] == "zoo" and not rows[zoo_name]["default"]
        zoo_answer = server.remove(image, model=folder_name)
        if rows[zoo_name]["cached"]:  # BiRefNet_lite: the zoo's Swin-T network, not the folder's IS-Net
            assert zoo_answer.headers["X-Model"] == zoo_name
            assert not np.array_equal(np.asarray(opened(zoo_answer)), np.asarray(opened(default)))
        else:  # RMBG-2.0 is not cached: the zoo model is refused with the fix, the folder unaffected
            assert zoo_answer.status_code == 503 and f"{zoo_name} is not downloaded here" in zoo_answer.json()["error"]
        config = requests.get(server.url + "/config", timeout=TIMEOUT).json()
        dropdowns = [c["props"] for c in config["components"] if c.get("type") == "dropdown"]
        model_choices = [dict(map(tuple, d["choices"])) for d in dropdowns if d.get("label") == "Model"]
        assert model_choices and {f"{local} · local checkpoint · ready": local}.items() <= model_choices[0].items()
