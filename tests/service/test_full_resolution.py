"""Full-resolution output: every encoder and setting keeps the pixels; edge refinement stays within
its stated tolerance of the whole-image blur-fusion it replaces.

No timings here: they are measured by `rmbg bench --e2e` and recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import cpu_service
from PIL import Image, ImageCms

from bgremover.imaging import composing, decoding, encoding, png, refining
from bgremover.results import Options, finish
from bgremover.service.options import build_request


def photo_like(width: int = 97, height: int = 61, seed: int = 3) -> Image.Image:
    """Smooth gradients plus noise: row-to-row differences like a photo's, odd sizes to catch stride slips."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 / width, y * 200 / height, (x + y) * 100 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape) + 20, 0, 255).astype(np.uint8))


def soft_mask(width: int = 97, height: int = 61) -> Image.Image:
    """A disc with a soft edge and alpha 0 around it, as cut-outs have."""
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot(x - width / 2, y - height / 2)
    return Image.fromarray((np.clip((height / 3 - distance) / 6 + 0.5, 0, 1) * 255).round().astype(np.uint8))


def images() -> dict[str, Image.Image]:
    rgb = photo_like()
    rgba = rgb.copy()
    rgba.putalpha(soft_mask())
    return {"RGBA": rgba, "RGB": rgb, "L": soft_mask(), "LA": rgba.convert("LA")}


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA"])
@pytest.mark.parametrize("fmt", ["png", "webp"])
@pytest.mark.parametrize("compression", encoding.COMPRESSIONS)
def test_every_encoder_keeps_the_pixels_and_the_profile(mode: str, fmt: str, compression: str) -> None:
    image = images()[mode]
    if fmt == "webp" and mode in ("L", "LA"):  # WebP stores RGB(A): compare what Pillow hands it
        image = image.convert("RGBA" if mode == "LA" else "RGB")
    profile = srgb_profile()
    decoded = Image.open(io.BytesIO(encoding.encode(image, fmt, profile, compression=compression)))
    assert decoded.format == fmt.upper() and decoded.mode == image.mode
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    assert decoded.info["icc_profile"] == profile


@pytest.mark.parametrize("missing", [("isal_zlib",), ("deflate",), ("isal_zlib", "deflate")])
@pytest.mark.parametrize("compression", encoding.COMPRESSIONS)
def test_png_fallbacks_give_the_same_pixels(monkeypatch, missing: tuple[str, ...], compression: str) -> None:
    """Without ISA-L or libdeflate the standard library's zlib compresses: slower or larger, never different."""
    for name in missing:
        monkeypatch.setattr(png, name, None)
    unavailable = {{"isal_zlib": "isal", "deflate": "deflate"}[name] for name in missing}
    assert png.library(compression).split()[0] not in unavailable
    for mode in ("RGBA", "RGB", "L"):
        image = images()[mode]
        decoded = Image.open(io.BytesIO(encoding.encode(image, "png", compression=compression)))
        assert np.array_equal(np.asarray(decoded), np.asarray(image))


@pytest.mark.parametrize("module", [png.isal_zlib, zlib], ids=["isal", "zlib"])
def test_deflate_in_parts_is_one_valid_zlib_stream(monkeypatch, module) -> None:
    """Parts deflated on several cores join into one stream: zlib reads it back, Pillow decodes the PNG."""
    monkeypatch.setattr(png, "_MIN_PART_BYTES", 1000)
    monkeypatch.setattr(png.settings, "usable_cores", lambda: 3)
    lines = png.up_filtered(np.asarray(images()["RGBA"]))
    stream = png.compress_in_parts(lines, 1, module)
    assert zlib.decompress(stream) == lines.tobytes()
    image = images()["RGBA"]
    decoded = Image.open(io.BytesIO(encoding.encode(image, "png")))
    assert np.array_equal(np.asarray(decoded), np.asarray(image))


def test_images_encoded_side_by_side_share_one_thread_per_core(monkeypatch) -> None:
    """Each encoder splits its image as if alone (same bytes), but all the parts queue for the same
    threads, one per core, so encoders on many threads do not start a thread per core each."""
    monkeypatch.setattr(png, "_MIN_PART_BYTES", 1000)
    monkeypatch.setattr(png.settings, "usable_cores", lambda: 3)
    monkeypatch.setattr(png, "_threads", None)
    image, before = images()["RGBA"], _deflating_threads()
    alone = encoding.encode(image, "png")
    with ThreadPoolExecutor(8) as encoders:
        side_by_side = list(encoders.map(lambda _: encoding.encode(image, "png"), range(16)))
    assert side_by_side == [alone] * 16
    assert len(_deflating_threads() - before) <= 3


def _deflating_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("rmbg-png")}


def _encode_in_a_forked_child(image: Image.Image) -> None:
    os._exit(0 if encoding.encode(image, "png") else 1)


def test_a_forked_child_deflates_on_threads_of_its_own(monkeypatch) -> None:
    """A child forked after the parent's pool started has none of its threads: it must not wait on them."""
    monkeypatch.setattr(png, "_MIN_PART_BYTES", 1000)
    image = images()["RGBA"]
    encoding.encode(image, "png")  # the parent's pool now exists
    child = multiprocessing.get_context("fork").Process(target=_encode_in_a_forked_child, args=(image,))
    child.start()
    child.join(timeout=120)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0


def test_png_in_many_idat_chunks_and_without_a_profile(monkeypatch) -> None:
    monkeypatch.setattr(png, "_IDAT_BYTES", 100)
    image = images()["RGBA"]
    data = encoding.encode(image, "png")
    assert data.count(b"IDAT") > 10 and b"iCCP" not in data
    decoded = Image.open(io.BytesIO(data))
    assert "icc_profile" not in decoded.info and np.array_equal(np.asarray(decoded), np.asarray(image))


def test_small_is_smaller_than_fast() -> None:
    image = images()["RGBA"]
    assert len(encoding.encode(image, "png", compression="small")) < len(encoding.encode(image, "png"))


def test_unknown_compression_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown compression 'tiny': use fast .* or small"):
        encoding.encode(images()["RGB"], "png", compression="tiny")
    with pytest.raises(ValueError, match="unknown compression 'Max'"):
        build_request(compression="Max")
    assert build_request().compression == "fast"
    assert build_request(compression=" Small ").compression == "small"
    assert build_request(compression="").compression == "fast"


# --- Edge refinement ---------------------------------------------------------------------------


def _reference_box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The whole-image box mean (window clipped at the borders) the library used before tiles."""
    h, w = x.shape[-2:]
    integral = F.pad(x, (1, 0, 1, 0)).cumsum(-1).cumsum(-2)
    ys, xs = torch.arange(h), torch.arange(w)
    top, bottom = (ys - radius).clamp(min=0), (ys + radius + 1).clamp(max=h)
    left, right = (xs - radius).clamp(min=0), (xs + radius + 1).clamp(max=w)
    rows_b, rows_t = integral[..., bottom, :], integral[..., top, :]
    total = rows_b[..., right] - rows_b[..., left] - rows_t[..., right] + rows_t[..., left]
    return total / ((bottom - top)[:, None] * (right - left)[None, :])


def _reference_step(image, foreground, background, alpha, radius):
    blurred_alpha = _reference_box_blur(alpha, radius)
    blurred_fg = _reference_box_blur(foreground * alpha, radius) / (blurred_alpha + 1e-5)
    blurred_bg = _reference_box_blur(background * (1 - alpha), radius) / (1 - blurred_alpha + 1e-5)
    corrected = blurred_fg + alpha * (image - alpha * blurred_fg - (1 - alpha) * blurred_bg)
    return corrected.clamp(0, 1), blurred_bg


def reference_foreground(image: Image.Image, mask: Image.Image, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Blur-fusion over the whole image, as edge refinement computed it before (radius 90, then 6)."""
    rgb = torch.from_numpy(np.asarray(image, dtype=np.float64) / 255.0).permute(2, 0, 1).to(dtype)
    alpha = torch.from_numpy(np.asarray(mask, dtype=np.float64) / 255.0)[None].to(dtype)
    foreground, background = _reference_step(rgb, rgb, rgb, alpha, 90)
    foreground, _ = _reference_step(rgb, foreground, background, alpha, 6)
    return (foreground.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def subject_scene(width: int, height: int, seed: int = 5) -> tuple[Image.Image, Image.Image]:
    """A textured subject on a different textured background, blended through a soft-edged mask
    (a wavy disc whose edge is 2 to 20 pixels wide), as a photo's hair or fur would be."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = np.arctan2(y - height / 2, x - width / 2)
    inside = (0.35 * min(width, height)) * (1 + 0.1 * np.sin(5 * angle)) - np.hypot(x - width / 2, y - height / 2)
    alpha = np.clip(0.5 + inside / (2 + 18 * (np.sin(3 * angle) > 0.5)), 0, 1)
    subject = np.stack([200 + 30 * np.sin(x / 9), 60 + 40 * np.cos(y / 7), 40 + 0 * x], -1)
    background = np.stack([30 + 0 * x, 90 + 50 * np.sin((x + y) / 13), 210 + 20 * np.cos(x / 5)], -1)
    blend = alpha[..., None] * subject + (1 - alpha[..., None]) * background + rng.normal(0, 3, subject.shape)
    image = Image.fromarray(np.clip(blend, 0, 255).round().astype(np.uint8))
    return image, Image.fromarray((alpha * 255).round().astype(np.uint8))


def refined_colors(image: Image.Image, mask: Image.Image, *device) -> np.ndarray:
    """The colour channels of the refined cut-out."""
    return np.asarray(composing.refined_cutout(image, mask, *device))[..., :3]


@pytest.mark.parametrize("size", [(203, 149), (640, 360), (37, 9)])
def test_refinement_is_within_tolerance_of_whole_image_blur_fusion(size: tuple[int, int]) -> None:
    """The tolerance docs/output.md states: against today's whole-image float32 computation, on the soft
    band (0 < alpha < 1) mean |d| <= 0.25/255 and max <= 2/255; against the same computation in float64,
    every pixel within 1/255 (float32 integral images over a whole photo are noisier than that where
    alpha is 0, in pixels no one sees)."""
    image, mask = subject_scene(*size)
    refined = refined_colors(image, mask).astype(int)
    alpha = np.asarray(mask)
    band = (alpha > 0) & (alpha < 255)
    today = np.abs(refined - reference_foreground(image, mask).astype(int))[band]
    assert today.mean() <= 0.25 and today.max() <= 2
    assert np.abs(refined - reference_foreground(image, mask, torch.float64).astype(int)).max() <= 1


def test_refinement_keeps_opaque_pixels_and_clears_those_far_from_the_subject() -> None:
    image, mask = subject_scene(300, 200)
    refined, rgb, alpha = refined_colors(image, mask), np.asarray(image), np.asarray(mask)
    assert np.array_equal(refined[alpha == 255], rgb[alpha == 255])
    assert not refined[:, :5].any() and not refined[:5].any()  # alpha 0 and no subject within 6 pixels


@pytest.mark.parametrize("value", [0, 255, 128])
def test_refinement_of_uniform_masks_and_tiny_images(value: int) -> None:
    image = photo_like(3, 2)
    mask = Image.new("L", image.size, value)
    refined = refined_colors(image, mask).astype(int)
    expected = reference_foreground(image, mask, torch.float64).astype(int)
    assert refined.shape == (2, 3, 3) and np.abs(refined - expected).max() <= 1
    if value == 255:
        assert np.array_equal(refined, np.asarray(image))


@pytest.mark.parametrize("size", [(203, 149), (64, 128), (1, 1)])
def test_the_refined_cutout_is_the_output_with_the_mask_as_its_alpha(size: tuple[int, int]) -> None:
    """Widths that are not whole tiles make the cut-out a view with longer rows than the image's:
    every output path (cut-out, composite, crop, encoder) must see exactly the image's pixels."""
    image, mask = subject_scene(*size) if min(size) > 1 else (photo_like(1, 1), Image.new("L", (1, 1), 128))
    cutout = composing.refined_cutout(image, mask)
    assert cutout.mode == "RGBA" and cutout.size == image.size
    assert np.array_equal(np.asarray(cutout)[..., 3], np.asarray(mask))
    options = Options(refine_edges=True, crop=min(size) > 1)
    result = finish(decoding.Decoded(image), mask, options)
    box = composing.subject_box(mask) if options.crop else (0, 0, *size)
    expected = np.array(cutout.crop(box))
    expected[expected[..., 3] == 0] = 0  # the colour under alpha 0 is zeroed (docs/output.md, "Hidden colour")
    assert np.array_equal(np.asarray(result.image), expected)
    written = Image.open(io.BytesIO(encoding.encode(result.image, "png")))
    assert np.array_equal(np.asarray(written), np.asarray(result.image))
    white = finish(decoding.Decoded(image), mask, Options(output="color", refine_edges=True)).image
    white = np.asarray(white, dtype=int)
    a = np.asarray(mask, dtype=int)[..., None]
    expected = (np.asarray(cutout, dtype=int)[..., :3] * a + 255 * (255 - a) + 127) // 255
    assert white.shape == (*size[::-1], 3) and np.abs(white - expected).max() <= 1


def test_refinement_runs_on_the_given_device() -> None:
    image, mask = subject_scene(150, 100)
    on_cpu = refined_colors(image, mask, torch.device("cpu"))
    assert np.array_equal(on_cpu, refined_colors(image, mask))
    if torch.cuda.is_available():
        on_gpu = refined_colors(image, mask, "cuda")
        assert np.abs(on_gpu.astype(int) - on_cpu).max() <= 1


@pytest.mark.parametrize(("tiles", "rows"), [(1, refining.TILE), (10**6, 10**6)], ids=["smallest", "all-at-once"])
def test_refinement_does_not_depend_on_how_much_one_pass_takes(monkeypatch, tiles: int, rows: int) -> None:
    """A GPU takes far more tiles and rows per pass than a CPU: the pixels must not change."""
    image, mask = subject_scene(800, 560)
    usual = refined_colors(image, mask)
    monkeypatch.setattr(refining, "CPU_TILES_PER_PASS", tiles)
    monkeypatch.setattr(refining, "CPU_ROWS_PER_STRIP", rows)
    assert np.array_equal(refined_colors(image, mask), usual)


def test_a_gpu_pass_takes_many_tiles_and_rows_within_its_memory_budget() -> None:
    gpu, cpu, width = torch.device("cuda"), torch.device("cpu"), 4032
    assert refining._tiles_per_pass(cpu) == refining.CPU_TILES_PER_PASS
    assert refining._rows_per_strip(cpu, width) == refining.CPU_ROWS_PER_STRIP
    tiles, rows = refining._tiles_per_pass(gpu), refining._rows_per_strip(gpu, width)
    assert tiles >= 4 * refining.CPU_TILES_PER_PASS and rows >= 16 * refining.CPU_ROWS_PER_STRIP
    assert rows % refining.TILE == 0 and refining._rows_per_strip(gpu, 10**6) == refining.TILE
    tile_pixels = (refining.TILE + 2 * refining.FINE_RADIUS) ** 2
    assert tiles * refining._FLOATS_PER_TILE_PIXEL * tile_pixels * 4 <= refining.GPU_PASS_BYTES
    assert rows * width * refining._FLOATS_PER_STRIP_PIXEL * 4 <= refining.GPU_PASS_BYTES


# --- rmbg bench --e2e --------------------------------------------------------------------------


def test_bench_e2e_reports_every_stage_of_the_service_path(tmp_path, monkeypatch, capsys) -> None:
    from bgremover.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "untouched"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    photo = tmp_path / "photo.jpg"
    photo_like(160, 120).save(photo, quality=90)
    argv = ["bench", "--synthetic", "--model", "BiRefNet_lite", "--size", "64", "--precision", "fp32"]
    argv += ["--runs", "3", "--e2e", str(photo), "--e2e", str(photo), "--refine-edges", "--json"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    for result in results:
        stages = result["stages_s"]
        assert set(stages) == {"decode", "queue", "infer", "finish", "encode", "total"}
        assert all(stages[name] > 0 for name in ("decode", "infer", "finish", "encode", "total"))
        assert stages["queue"] >= 0
        assert stages["total"] >= sum(value for name, value in stages.items() if name != "total")
        outside_inference = stages["total"] - stages["infer"] - stages["queue"]
        assert result["outside_inference_s"] == pytest.approx(outside_inference)
        assert 0 < result["resize_in_s"] + result["mask_out_s"] < stages["infer"]
        assert result["outside_network_s"] == pytest.approx(
            outside_inference + result["resize_in_s"] + result["mask_out_s"]
        )
        assert (result["width"], result["height"], result["size"]) == (160, 120, 64)
        assert result["model"] == "BiRefNet_lite" and result["refine_edges"] and result["compression"] == "fast"
        assert result["output_bytes"] > 1000 and len(result["totals_s"]) == 3
    assert os.environ["HF_HOME"] == str(tmp_path / "untouched") and "HF_HUB_OFFLINE" not in os.environ


def test_bench_e2e_text_table_with_a_cached_model(offline_hub, tmp_path, capsys) -> None:
    from bgremover.cli import main

    photo = tmp_path / "small.jpg"
    photo_like(96, 64).save(photo, quality=90)
    argv = ["bench", "--model", "BiRefNet_lite", "--size", "64", "--runs", "1", "--e2e", str(photo)]
    assert main([*argv, "--format", "webp", "--compression", "small"]) == 0
    text = capsys.readouterr().out
    assert "small.jpg" in text and "96x64" in text and "webp, compression small" in text
    for stage in ("decode", "queue", "infer", "finish", "encode", "total", "no-infer", "in+out", "no-network"):
        assert stage in text


# --- The option in the front ends ---------------------------------------------------------------


def test_cli_writes_the_compression_asked_for(offline_hub, tmp_path) -> None:
    from bgremover.cli import main

    photo = tmp_path / "photo.jpg"
    photo_like(96, 64).save(photo, quality=90)
    sizes = {}
    for compression in encoding.COMPRESSIONS:
        target = tmp_path / f"{compression}.png"
        argv = ["remove", str(photo), "-o", str(target), "--model", "RMBG-1.4", "--size", "64", "-q"]
        assert main([*argv, "--compression", compression]) == 0
        sizes[compression] = target.stat().st_size
        assert Image.open(target).size == (96, 64)
    assert sizes["small"] < sizes["fast"]


def test_api_form_field_compression() -> None:
    from starlette.datastructures import FormData, UploadFile

    from bgremover.web.api import ApiError, parse_form

    service = cpu_service("RMBG-1.4", precision="auto")
    upload = UploadFile(io.BytesIO(b"image"), filename="a.jpg")
    assert parse_form(FormData([("file", upload), ("compression", "small")]), service).request.compression == "small"
    assert parse_form(FormData([("file", upload)]), service).request.compression == "fast"
    with pytest.raises(ApiError, match="unknown compression 'max'"):
        parse_form(FormData([("file", upload), ("compression", "max")]), service)
