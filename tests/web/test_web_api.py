"""The web server end to end: a real `python rmbg.py` process with the synthetic models, spoken to over HTTP.

The HTTP API (`/api/remove`, `/api/models`, `/health`) and Gradio's named endpoints
(through gradio_client) are both checked against what the pipeline computes in-process.
"""

from __future__ import annotations

import http.client
import io
import os
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import cpu_service
from live import (
    MODEL,
    SERVER_ARGS,
    TIMEOUT,
    UPLOAD_LIMIT_MB,
    Server,
    channel,
    is_cutout_of,
    opened,
    png_bytes,
    run_server,
    sample_image,
)
from PIL import Image

pytestmark = pytest.mark.slow  # a server in a subprocess (and a browser): minutes, not seconds


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, hf_home) -> Iterator[Server]:
    """`rmbg serve`: the UI and the API in one process."""
    folder = tmp_path_factory.mktemp("web_api")
    with run_server(folder, hf_home, *SERVER_ARGS, RMBG_MAX_UPLOAD_MB=str(UPLOAD_LIMIT_MB)) as up:
        yield up


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory, hf_home) -> Iterator[Server]:
    """`rmbg serve --ray` (a local Ray instance, one replica) with the same model, size and upload limit."""
    folder = tmp_path_factory.mktemp("ray_serve")
    with run_server(folder, hf_home, *SERVER_ARGS, "--ray", RMBG_MAX_UPLOAD_MB=str(UPLOAD_LIMIT_MB)) as up:
        yield up


@pytest.fixture(scope="module", params=["serve", "serve --ray"])
def server(request) -> Server:
    """The one API under test, run both ways: the tests that take `server` hold for `rmbg serve` and for
    its Ray Serve deployment alike (UI-only tests take `plain_server`)."""
    return request.getfixturevalue("ray_server" if request.param.endswith("--ray") else "plain_server")


# --- Images and what the pipeline makes of them in-process ------------------------------------


@pytest.fixture(scope="module")
def sample() -> Image.Image:
    return sample_image()


@pytest.fixture(scope="module")
def expected_mask(hf_home, sample) -> np.ndarray:
    """The soft mask the pipeline computes in this process, with the server's model and size."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(hf_home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("HF_HUB_CACHE", raising=False)
        from bgremover.pipeline import Remover

        mask = Remover.load(MODEL, device="cpu", precision="fp32", inference_size=256).predict([sample])[0]
    return np.asarray(mask, dtype=np.int16)


# --- The shared model pool, in-process -------------------------------------------------------


def test_pool_loads_a_model_once_and_shares_it_across_sizes(offline_hub):
    from bgremover.service.pool import UnknownModel

    registry = cpu_service(MODEL, size=256).pool
    ready, body = registry.health()
    assert not ready and body["status"] == "loading"
    base = registry.get(MODEL)
    assert registry.get("rmbg-1.4") is base and base.inference_size == 256
    larger = registry.get(MODEL, 512)
    assert larger.inference_size == 512 and larger.engine is base.engine and base.inference_size == 256
    expected = {"status": "ok", "device": "cpu", "engine": "torch", "precision": "fp32", "model": MODEL}
    assert registry.health() == (True, expected)
    assert registry.describe_device() == "cpu (fp32)"
    for outside_the_zoo in ("/etc/passwd", "someone/some-repo"):  # clients must not pick files or repos
        with pytest.raises(UnknownModel):
            registry.get(outside_the_zoo)
    with pytest.raises(ValueError, match="above the limit"):
        registry.get(MODEL, 4096)


# --- /health and /api/models -----------------------------------------------------------------


def test_health_is_ok_once_the_default_model_is_loaded(server, request):
    response = server.get("/health")
    assert response.status_code == 200
    expected = {"status": "ok", "device": "cpu", "engine": "torch", "precision": "fp32", "model": MODEL}
    body = response.json()
    if request.node.callspec.params["server"] == "serve":  # Ray serves the API alone: no page, no "ui"
        assert body.pop("ui") in ("building", "ready")  # the web page, built after the API answers
    assert body == expected


def test_models_lists_the_zoo_with_license_gated_cached_and_loaded(server):
    from bgremover.zoo import ZOO

    body = server.get("/api/models").json()
    assert body["default_model"] == MODEL and body["device"] == "cpu"
    rows = {row["name"]: row for row in body["models"]}
    assert set(rows) == set(ZOO)
    assert rows[MODEL] | {"cached": True, "loaded": True, "gated": True, "default": True} == rows[MODEL]
    assert "non-commercial" in rows[MODEL]["license"]
    assert rows["BiRefNet_lite"]["cached"] and not rows["BiRefNet_lite"]["gated"]
    assert rows["BiRefNet_lite"]["license"] == "MIT"
    assert rows["BiRefNet_HR"] | {"cached": False, "loaded": False} == rows["BiRefNet_HR"]
    assert rows["RMBG-2.0"]["gated"] and not rows["RMBG-2.0"]["cached"]
    assert {rows[name]["availability"] for name in (MODEL, "BiRefNet_lite")} == {"ready"}
    assert rows["RMBG-2.0"]["availability"] == "offline"  # the server runs with HF_HUB_OFFLINE=1
    assert {row["source"] for row in rows.values()} == {"zoo"}


# --- /api/remove: results --------------------------------------------------------------------


def test_cutout_is_a_png_of_the_input_size_whose_alpha_is_the_models_mask(server, sample, expected_mask):
    response = server.remove(png_bytes(sample), size=256)
    assert response.headers["content-type"] == "image/png"
    assert 'filename="photo_nobg.png"' in response.headers["content-disposition"]
    assert response.headers["X-Batch-Size"] == "1"  # inferred alone: on a CPU requests are not batched
    cutout = opened(response)
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == sample.size
    alpha = channel(cutout, "A")
    assert alpha.std() > 1, "a constant mask would make this test meaningless"
    assert np.abs(alpha - expected_mask).max() <= 1  # the same model in another process: equal up to rounding
    assert is_cutout_of(cutout, sample)


def test_mask_output_is_the_cutouts_alpha_pixel_for_pixel(server, sample):
    cutout = opened(server.remove(png_bytes(sample)))
    mask = opened(server.remove(png_bytes(sample), output="mask"))
    assert mask.mode == "L" and mask.size == sample.size
    assert np.array_equal(np.asarray(mask), np.asarray(cutout.getchannel("A")))


def test_color_output_composites_over_the_background_colour(plain_server, sample):
    alpha = channel(opened(plain_server.remove(png_bytes(sample), output="mask")), "L")
    result = opened(plain_server.remove(png_bytes(sample), output="color", bg_color="#00ff00"))
    assert result.mode == "RGB" and result.size == sample.size
    pixels = np.asarray(result, dtype=np.int16)
    assert (alpha == 0).any() and (pixels[alpha == 0] == (0, 255, 0)).all()
    source = np.asarray(sample, dtype=np.float64)
    expected = (source * alpha[..., None] + np.array([0, 255, 0]) * (255 - alpha[..., None])) / 255
    assert np.abs(pixels - expected).max() <= 1.0


def test_threshold_makes_the_soft_mask_binary_at_that_level(plain_server, sample):
    soft = channel(opened(plain_server.remove(png_bytes(sample), output="mask")), "L")
    hard = channel(opened(plain_server.remove(png_bytes(sample), output="mask", threshold=0.5)), "L")
    assert set(np.unique(hard)) == {0, 255}
    assert np.array_equal(hard, np.where(soft >= 128, 255, 0))


def test_crop_cuts_the_image_to_the_subjects_box_plus_margin(plain_server, sample):
    from bgremover.imaging.composing import binarize, subject_box

    soft = opened(plain_server.remove(png_bytes(sample), output="mask"))
    left, top, right, bottom = subject_box(binarize(soft, 1.0), margin=3)
    cropped = opened(plain_server.remove(png_bytes(sample), crop="true", crop_margin=3, threshold=1.0))
    assert cropped.size == (right - left, bottom - top)
    assert cropped.width < sample.width and cropped.height < sample.height


def test_webp_is_lossless_with_alpha_and_jpeg_needs_an_opaque_output(server, sample):
    png = opened(server.remove(png_bytes(sample)))
    response = server.remove(png_bytes(sample), format="webp")
    assert response.headers["content-type"] == "image/webp"
    webp = opened(response)
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    assert np.array_equal(np.asarray(webp), np.asarray(png))
    response = server.remove(png_bytes(sample), format="jpeg", output="color")
    assert response.headers["content-type"] == "image/jpeg"
    jpeg = opened(response)
    assert jpeg.format == "JPEG" and jpeg.size == sample.size
    refused = server.remove(png_bytes(sample), format="jpeg")
    assert refused.status_code == 400 and "transparency" in refused.json()["error"]


def test_parallel_requests_all_get_their_own_correct_result(server):
    images = [sample_image(120 + 8 * i, 90 + 4 * i, seed=i) for i in range(10)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(lambda image: server.remove(png_bytes(image)), images))
    for image, response in zip(images, responses, strict=True):
        cutout = opened(response)
        assert cutout.size == image.size
        assert is_cutout_of(cutout, image)
    single = opened(server.remove(png_bytes(images[3])))
    assert np.array_equal(np.asarray(single), np.asarray(opened(responses[3])))


# --- /api/remove: errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"threshold": "2"}, "threshold"),
        ({"threshold": "half"}, "threshold"),
        ({"output": "sticker"}, "output"),
        ({"format": "gif"}, "format"),
        ({"compression": "tiny"}, "compression"),
        ({"bg_color": "blurple"}, "colour"),
        ({"size": "100"}, "multiple of 32"),
        ({"crop": "maybe"}, "crop"),
        ({"crop_margin": "-1"}, "margin"),
        ({"model": "no-such-model"}, "unknown model"),
        ({"treshold": "0.5"}, "unknown field"),
    ],
)
def test_bad_options_are_400_with_a_message(server, sample, fields, mentions):
    response = server.remove(png_bytes(sample), **fields)
    assert response.status_code == 400
    assert mentions in response.json()["error"]


def test_a_request_without_a_file_is_400(server):
    response = requests.post(server.url + "/api/remove", data={"output": "mask"}, timeout=TIMEOUT)
    assert response.status_code == 400 and "file" in response.json()["error"]


@pytest.mark.parametrize(
    ("payload", "mentions"),
    [
        (lambda png: b"", "empty"),
        (lambda png: b"this is not an image", "not an image"),
        (lambda png: png[: len(png) // 2], "truncated"),
    ],
    ids=["zero-bytes", "text", "truncated-png"],
)
def test_unusable_images_are_415_with_the_reason(server, sample, payload, mentions):
    response = server.remove(payload(png_bytes(sample)), name="broken.png")
    assert response.status_code == 415
    error = response.json()["error"]
    assert mentions in error and "broken.png" in error
    assert server.get("/health").status_code == 200


def test_uploads_over_the_limit_are_413_by_length_and_while_reading(server):
    limit = UPLOAD_LIMIT_MB * 1024 * 1024
    too_big = server.remove(os.urandom(limit + 200_000), name="big.png")
    assert too_big.status_code == 413 and "RMBG_MAX_UPLOAD_MB" in too_big.json()["error"]

    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    connection.putrequest("POST", "/api/remove")  # declares 1 GB, sends nothing: refused unread
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(1024**3))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()

    def chunked_body() -> Iterator[bytes]:  # no Content-Length at all: counted while reading
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(12):
            yield os.urandom(100_000)
        yield b"\r\n--x--\r\n"

    streamed = requests.post(
        server.url + "/api/remove",
        data=chunked_body(),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        timeout=TIMEOUT,
    )
    assert streamed.status_code == 413
    assert server.get("/health").status_code == 200


def test_an_uncached_model_is_503_with_the_fix(server, sample):
    response = server.remove(png_bytes(sample), model="BiRefNet")
    assert response.status_code == 503
    error = response.json()["error"]
    assert "is not downloaded here" in error and "rmbg download BiRefNet --to" in error
    assert server.get("/health").status_code == 200
    assert opened(server.remove(png_bytes(sample))).mode == "RGBA"


def test_another_cached_model_loads_on_demand(server, sample):
    cutout = opened(server.remove(png_bytes(sample), model="BiRefNet_lite", size=256))
    assert cutout.mode == "RGBA" and cutout.size == sample.size
    rows = {row["name"]: row for row in server.get("/api/models").json()["models"]}
    assert rows["BiRefNet_lite"]["loaded"]


# --- Gradio's named endpoints through gradio_client ------------------------------------------


@pytest.fixture(scope="module")
def client(plain_server):
    from gradio_client import Client

    return Client(plain_server.url + "/", verbose=False)


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory, sample) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "sample.png"
    sample.save(path)
    return path


def test_client_remove_gives_slider_cutout_mask_download_and_time(client, sample_file, sample, expected_mask):
    from gradio_client import handle_file

    slider, result, mask, download, info = client.predict(handle_file(str(sample_file)), MODEL, api_name="/remove")
    assert Path(download).name == "sample_nobg.png"
    cutout = Image.open(download)
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == sample.size
    assert np.abs(channel(cutout, "A") - expected_mask).max() <= 1
    assert np.array_equal(np.asarray(Image.open(mask).convert("L")), np.asarray(cutout.getchannel("A")))
    before, after = (Image.open(path) for path in slider)
    difference = np.abs(np.asarray(before.convert("RGB"), dtype=np.int16) - np.asarray(sample, dtype=np.int16))
    assert before.size == sample.size and difference.mean() < 3  # a JPEG preview of the input
    assert np.array_equal(np.asarray(after), np.asarray(cutout))
    assert Image.open(result).size == sample.size
    assert MODEL in info and " s**" in info


def test_client_remove_reports_bad_input_and_missing_models(client, tmp_path, sample_file):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "notes.png"
    text.write_bytes(b"this is not an image")
    with pytest.raises(AppError, match="notes.png: not an image"):
        client.predict(handle_file(str(text)), MODEL, api_name="/remove")
    with pytest.raises(AppError, match="rmbg download BiRefNet --to"):
        client.predict(handle_file(str(sample_file)), "BiRefNet", api_name="/remove")


def test_client_batch_keeps_names_and_zips_pngs(client, tmp_path):
    from gradio_client import handle_file

    paths = []
    for index, name in enumerate(["cat.jpg", "dog.png", "broken.png"]):
        paths.append(tmp_path / name)
        sample_image(100 + 20 * index, 80, seed=index).save(paths[-1])
    paths[-1].write_bytes(paths[-1].read_bytes()[:100])
    gallery, archive, summary = client.predict(
        [handle_file(str(path)) for path in paths], MODEL, 2, 0.0, 256, api_name="/batch"
    )
    assert [item["caption"] for item in gallery] == ["cat.png", "dog.png"]
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist() == ["cat.png", "dog.png"]
        sizes = [Image.open(io.BytesIO(zipped.read(name))).size for name in zipped.namelist()]
        modes = {Image.open(io.BytesIO(zipped.read(name))).mode for name in zipped.namelist()}
    assert sizes == [(100, 80), (120, 80)] and modes == {"RGBA"}
    assert "2 image(s)" in summary and "broken.png" in summary and "truncated" in summary


def test_client_compare_shows_each_models_time_and_memory(client, sample_file, sample):
    from gradio_client import handle_file

    image_a, info_a, image_b, info_b = client.predict(
        handle_file(str(sample_file)), MODEL, "BiRefNet_lite", 256, api_name="/compare"
    )
    for image, info, name in ((image_a, info_a, MODEL), (image_b, info_b, "BiRefNet_lite")):
        assert Image.open(image).size == sample.size and Image.open(image).mode == "RGBA"
        assert name in info and " s · peak RSS " in info and "MiB" in info
    _, _, missing, reason = client.predict(handle_file(str(sample_file)), MODEL, "RMBG-2.0", 256, api_name="/compare")
    assert missing is None and "RMBG-2.0" in reason and "is not downloaded here" in reason


def test_gradio_inputs_must_be_the_clients_own_uploads(plain_server, sample_file):
    """Naming a file that is on the server (here: the test's own image) as an input must be refused."""
    endpoint = plain_server.url + "/gradio_api/call/remove"
    payload = {"path": str(sample_file), "meta": {"_type": "gradio.FileData"}}
    inputs = [payload, MODEL, "cutout", "#ffffff", None, 0, False, 0, False, 0, "fast"]
    event = requests.post(endpoint, json={"data": inputs}, timeout=TIMEOUT).json()["event_id"]
    stream = requests.get(f"{endpoint}/{event}", timeout=TIMEOUT).text
    assert "event: error" in stream and "not uploaded by a user" in stream
    assert "event: complete" not in stream


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"output": "mask", "size": "128"},
        {"output": "color", "bg_color": "#336699", "format": "jpeg"},
        {"format": "webp", "threshold": "0.5", "crop": "true", "crop_margin": "4"},
        {"refine_edges": "true"},
    ],
    ids=["cutout", "mask-128", "color-jpeg", "webp-threshold-crop", "refine-edges"],
)
def test_ray_serve_answers_byte_for_byte_like_rmbg_serve(ray_server, plain_server, sample, fields):
    image = png_bytes(sample)
    ray_answer, plain_answer = ray_server.remove(image, **fields), plain_server.remove(image, **fields)
    assert ray_answer.status_code == plain_answer.status_code == 200, ray_answer.text
    assert ray_answer.headers["content-type"] == plain_answer.headers["content-type"]
    assert ray_answer.headers["content-disposition"] == plain_answer.headers["content-disposition"]
    assert ray_answer.content == plain_answer.content


def test_both_servers_have_the_probes_metrics_and_remove_bgs_api(server, sample):
    assert [server.get(path).status_code for path in ("/livez", "/readyz")] == [200, 200]
    answer = requests.post(
        server.url + "/v1.0/removebg", files={"image_file": ("a.png", png_bytes(sample))}, timeout=TIMEOUT
    )
    assert answer.status_code == 200 and answer.headers["X-Width"] == str(sample.width)
    assert answer.headers["X-Request-Id"] and answer.headers["X-Credits-Charged"] == "0"
    refused = requests.post(server.url + "/v1.0/removebg", data={"size": "huge"}, timeout=TIMEOUT)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "invalid_parameters"
    metrics = server.get("/metrics")
    assert metrics.status_code == 200
    assert 'rmbg_http_request_duration_seconds_count{method="POST",route="/v1.0/removebg",status="200"}' in metrics.text
    assert f'rmbg_inference_seconds_count{{model="{MODEL}"}}' in metrics.text


# --- A server whose default model cannot be loaded -------------------------------------------


def test_health_is_503_with_the_reason_while_the_ui_still_serves(tmp_path, hf_home, sample):
    with run_server(tmp_path, hf_home, "--model", "BiRefNet", ready="/") as unready:
        health = unready.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["model"] == "BiRefNet" and body["status"] in ("loading", "error")
        deadline = time.monotonic() + 60
        while body["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.2)
            body = unready.get("/health").json()
        assert body["status"] == "error" and "is not downloaded here" in body["reason"]
        assert unready.get("/").status_code == 200
        response = unready.remove(png_bytes(sample))
        assert response.status_code == 503 and "rmbg download BiRefNet --to" in response.json()["error"]
        assert opened(unready.remove(png_bytes(sample), model=MODEL, size=256)).mode == "RGBA"
        assert unready.get("/health").status_code == 503
