"""The Remover on synthetic-weight models: model-card pre/post-processing, outputs and the library API."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from live import gradient, photo
from PIL import Image

from bgremover.engines import native_bf16_cpu, pick_device, pick_dtype
from bgremover.imaging import resizing
from bgremover.imaging.decoding import decode
from bgremover.pipeline import Options, Remover, check_inference_size

SIZE = 256


@pytest.fixture(scope="module")
def removers(hf_home) -> dict[str, Remover]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        return {name: Remover.load(name, device="cpu", inference_size=SIZE) for name in ("RMBG-1.4", "BiRefNet_lite")}


def reference_birefnet_mask(remover: Remover, image: Image.Image) -> np.ndarray:
    """BiRefNet's model-card pipeline: PIL resize, ToTensor, ImageNet normalisation, sigmoid,
    8-bit mask resized back with PIL."""
    resized = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # the card's ImageNet values
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.inference_mode():
        prediction = remover.engine.network(x).sigmoid()[0, 0]
    mask = Image.fromarray((prediction.numpy() * 255).astype(np.uint8))
    return np.asarray(mask.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32)


def reference_isnet_mask(remover: Remover, image: Image.Image) -> np.ndarray:
    """RMBG-1.4's published utilities: bilinear interpolate, /255, mean 0.5 std 1.0; first
    side output, bilinear back, min-max stretch, x255."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear") / 255.0
    x = (x - 0.5) / 1.0
    with torch.inference_mode():
        result = remover.engine.network(x)
    result = F.interpolate(result, size=image.size[::-1], mode="bilinear")[0, 0]
    result = (result - result.min()) / (result.max() - result.min())
    return (result * 255).numpy().astype(np.uint8).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "reference"), [("BiRefNet_lite", reference_birefnet_mask), ("RMBG-1.4", reference_isnet_mask)]
)
def test_mask_equals_the_upstream_pipeline(removers, name, reference) -> None:
    remover = removers[name]
    image = photo()
    ours = np.asarray(remover.predict([image])[0], dtype=np.float32)
    theirs = reference(remover, image)
    difference = np.abs(ours - theirs)
    assert ours.shape == theirs.shape == (200, 300)
    assert difference.mean() <= 1.5, difference.mean()


def test_isnet_mask_is_stretched_to_full_range(removers) -> None:
    mask = np.asarray(removers["RMBG-1.4"].predict([photo()])[0])
    assert mask.min() == 0 and mask.max() == 255


def test_batch_gives_each_images_own_mask(removers) -> None:
    remover = removers["BiRefNet_lite"]
    images = [photo(300, 200), gradient(120, 90)]
    batched = remover.predict(images)
    singles = [remover.predict([image])[0] for image in images]
    for together, alone, image in zip(batched, singles, images, strict=True):
        assert together.size == image.size
        assert np.abs(np.asarray(together, dtype=int) - np.asarray(alone, dtype=int)).max() <= 1


def test_cutout_has_input_size_and_alpha_is_the_mask(removers) -> None:
    remover = removers["RMBG-1.4"]
    decoded = decode(photo(301, 199))
    result = remover.process([decoded])[0]
    assert result.image.mode == "RGBA" and result.image.size == (301, 199)
    assert np.array_equal(np.asarray(result.image)[..., 3], np.asarray(result.mask))
    visible = np.asarray(result.mask)[..., None] > 0  # the colour under alpha 0 is zeroed
    assert np.array_equal(np.asarray(result.image)[..., :3], np.where(visible, np.asarray(decoded.rgb), 0))


def test_threshold_mask_and_crop_outputs(removers) -> None:
    remover = removers["RMBG-1.4"]
    hard = remover.remove(photo(), output="mask", threshold=0.5)
    assert hard.mode == "L" and set(np.unique(np.asarray(hard))) <= {0, 255}
    cropped = remover.remove(photo(), threshold=0.5, crop=True, crop_margin=2)
    rows, cols = np.nonzero(np.asarray(hard) >= 8)
    assert cropped.size == (
        min(cols.max() + 3, 300) - max(cols.min() - 2, 0),
        min(rows.max() + 3, 200) - max(rows.min() - 2, 0),
    )


def test_colour_output_is_opaque_rgb(removers) -> None:
    remover = removers["RMBG-1.4"]
    out = remover.remove(photo(), output="color", background_color=(0, 255, 0), threshold=0.5)
    mask = np.asarray(remover.remove(photo(), output="mask", threshold=0.5))
    array = np.asarray(out)
    assert out.mode == "RGB"
    assert (array[mask == 0] == [0, 255, 0]).all()
    assert np.array_equal(array[mask == 255], np.asarray(photo())[mask == 255])


def test_library_api_accepts_pil_bytes_arrays_and_paths(removers, tmp_path) -> None:
    remover = removers["RMBG-1.4"]
    image = photo()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = tmp_path / "p.png"
    image.save(path)
    outputs = [remover.remove(x) for x in (image, buffer.getvalue(), np.asarray(image), path, str(path))]
    for out in outputs[1:]:
        assert np.array_equal(np.asarray(out), np.asarray(outputs[0]))


def test_options_and_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown output 'sticker'"):
        Options(output="sticker")
    with pytest.raises(ValueError, match="threshold 2 must be between 0 and 1"):
        Options(threshold=2)
    with pytest.raises(ValueError, match="output 'image' needs a background image"):
        Options(output="image")
    with pytest.raises(ValueError, match="must be a positive multiple of 32"):
        check_inference_size(500)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        pick_dtype("fp8", torch.device("cpu"))
    assert pick_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native_bf16_cpu() else torch.float32)
    assert str(pick_device("cpu")) == "cpu" and pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert str(pick_device("auto")) == "cpu"
        with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU here"):
            pick_device("cuda")


def test_the_network_input_is_the_resized_image_normalised(removers) -> None:
    """0..1 pixels, resized with the card's filter, minus the mean, over the std: dividing by 255
    after the resize (as the pipeline does, to spare a full-resolution pass) changes nothing."""
    image = photo(301, 199)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    for remover in removers.values():
        processing = remover.info.processing
        resized = F.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", antialias=processing.antialias)
        mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (processing.mean, processing.std))
        expected = (resized - mean) / std
        assert (remover.preprocess([image]) - expected).abs().max().item() <= 1e-5


def test_full_resolution_work_in_bands_equals_the_whole_image(removers, monkeypatch) -> None:
    """Bounded memory: resizing and mask upsampling run in bands of rows, with the same result."""
    image = photo(301, 199)
    for remover in removers.values():
        whole_batch, whole_mask = remover.preprocess([image]), remover.predict([image])[0]
        with monkeypatch.context() as patch:
            patch.setattr(resizing, "BAND_PIXELS", 301 * 7)  # 7-row bands, and a short last one
            banded_batch, banded_mask = remover.preprocess([image]), remover.predict([image])[0]
        assert (banded_batch - whole_batch).abs().max().item() <= 1e-5
        assert np.abs(np.asarray(banded_mask, dtype=int) - np.asarray(whole_mask, dtype=int)).max() <= 1


class ArrayFed:
    """A PyTorch engine behind the interface of an engine fed NumPy arrays (OpenVINO's), so that the
    pipeline's NumPy pre/post-processing runs the same network as its PyTorch one."""

    numpy_io = True

    def __init__(self, engine) -> None:
        self.engine, self.info, self.device, self.lock = engine, engine.info, engine.device, engine.lock

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
        return self.engine(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("name", ["RMBG-1.4", "BiRefNet_lite"])
@pytest.mark.parametrize("size", [(301, 199), (97, 450), (640, 512)])
def test_numpy_processing_gives_the_masks_of_the_pytorch_processing(removers, name, size) -> None:
    """OpenVINO's runs prepare batches and masks without PyTorch: same network input (antialiased
    for BiRefNet, not for IS-Net), same upsampling and activation (sigmoid, min-max stretch)."""
    remover = removers[name]
    arrays = Remover(ArrayFed(remover.engine), SIZE)
    image = photo(*size)
    batch = arrays.preprocess([image])
    assert isinstance(batch, np.ndarray) and batch.shape == (1, 3, SIZE, SIZE)
    assert np.abs(batch - remover.preprocess([image]).numpy()).max() <= 1e-3
    expected = np.asarray(remover.predict([image])[0], dtype=int)
    got = np.asarray(arrays.predict([image])[0], dtype=int)
    assert got.shape == expected.shape == (size[1], size[0])
    assert np.abs(got - expected).max() <= 1 and np.mean(got != expected) < 0.01
