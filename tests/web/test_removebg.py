"""`POST /v1.0/removebg` end to end: remove.bg's API v1.0 on a real `rmbg serve`.

An unchanged remove.bg client (PyPI `removebg` 0.4, its endpoint constant pointed at the server)
and raw requests drive every field group, every body kind and the failure paths; image URLs come
from a small HTTP server on loopback, which only a server with RMBG_REMOVEBG_ALLOW_PRIVATE_URLS=1
may fetch from.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live import SERVER_ARGS, TIMEOUT, Server, opened, png_bytes, run_server, sample_image
from PIL import Image

from bgremover.web.removebg import OPTION_FIELDS

TOKEN = "removebg-key-for-tests"
KEY = {"X-Api-Key": TOKEN}
UPLOAD_MB = 1
PHOTO = png_bytes(sample_image(800, 600))  # 0.48 MP: `preview` halves it, `full` keeps it
SMALL = png_bytes(sample_image(200, 150))


class Images(BaseHTTPRequestHandler):
    """GET /photo.png, /big (over the upload limit), /to/<url> (a 302 there), /hops/<n> (n redirects)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/photo.png":
            self._send(200, PHOTO, {"Content-Type": "image/png"})
        elif self.path == "/big":
            self._send(200, b"\0" * (UPLOAD_MB * 1024 * 1024 + 10), {"Content-Type": "image/png"})
        elif self.path.startswith("/to/"):
            self._send(302, b"", {"Location": self.path.removeprefix("/to/")})
        elif self.path.startswith("/hops/"):
            left = int(self.path.removeprefix("/hops/"))
            self._send(302, b"", {"Location": f"/hops/{left - 1}" if left else "/photo.png"})
        else:
            self._send(404, b"no", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    """A server whose operator allows private image URLs (the loopback image server)."""
    env = {"RMBG_API_TOKEN": TOKEN, "RMBG_MAX_UPLOAD_MB": str(UPLOAD_MB), "RMBG_REMOVEBG_ALLOW_PRIVATE_URLS": "1"}
    with run_server(tmp_path_factory.mktemp("removebg"), hf_home, *SERVER_ARGS, **env) as up:
        yield up


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, hf_home) -> Iterator[Server]:
    """The default: no token, private addresses refused; and one request at a time, none waiting."""
    env = {"RMBG_MAX_UPLOAD_MB": str(UPLOAD_MB), "RMBG_WORKERS": "1", "RMBG_QUEUE_LIMIT": "0"}
    with run_server(tmp_path_factory.mktemp("removebg_strict"), hf_home, *SERVER_ARGS, **env) as up:
        yield up


def removebg(server: Server, headers: dict | None = None, files: dict | None = None, **fields) -> requests.Response:
    files = {"image_file": ("photo.png", PHOTO)} if files is None and "image_url" not in fields else files
    return requests.post(
        server.url + "/v1.0/removebg", files=files, data=fields, headers=KEY | (headers or {}), timeout=TIMEOUT
    )


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert set(error) == {"title", "code", "detail"}, error
    return error


@pytest.fixture(scope="module")
def mask(server) -> np.ndarray:
    """The model's mask of PHOTO as the server's own /api/remove makes it."""
    response = requests.post(
        server.url + "/api/remove",
        files={"file": ("photo.png", PHOTO)},
        data={"output": "mask"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=TIMEOUT,
    )
    return np.asarray(opened(response), dtype=np.int16)


@pytest.fixture
def client(server, monkeypatch, tmp_path):
    """PyPI's `removebg` client, unchanged but for its endpoint constant; it writes files in tmp_path."""
    import removebg.removebg as module

    monkeypatch.setattr(module, "API_ENDPOINT", server.url + "/v1.0/removebg")
    monkeypatch.chdir(tmp_path)
    return module.RemoveBg


pytestmark = pytest.mark.slow  # servers in subprocesses


# --- An unchanged remove.bg client ------------------------------------------------------------------


def test_the_client_gets_full_size_cutouts_from_a_file(client, tmp_path, mask) -> None:
    (tmp_path / "photo.png").write_bytes(PHOTO)
    client(TOKEN, str(tmp_path / "errors.log")).remove_background_from_img_file("photo.png", size="full")
    result = Image.open(tmp_path / "photo.png_no_bg.png")
    assert result.mode == "RGBA" and result.size == (800, 600)
    assert np.array_equal(np.asarray(result.getchannel("A"), dtype=np.int16), mask)


def test_the_client_gets_previews_from_base64_and_urls(client, tmp_path, images) -> None:
    rbg = client(TOKEN, str(tmp_path / "errors.log"))
    rbg.remove_background_from_base64_img(base64.b64encode(PHOTO).decode(), new_file_name="b64.png")
    rbg.remove_background_from_img_url(images + "/photo.png", new_file_name="url.png")  # size: regular
    for name in ("b64.png", "url.png"):
        result = Image.open(tmp_path / name)
        assert result.mode == "RGBA" and result.size == (577, 433)  # 0.25 MP, the aspect kept
    assert Image.open(tmp_path / "b64.png").tobytes() == Image.open(tmp_path / "url.png").tobytes()


def test_the_client_is_refused_a_wrong_key_in_remove_bgs_format(client, tmp_path) -> None:
    (tmp_path / "photo.png").write_bytes(PHOTO)
    with pytest.raises(requests.HTTPError) as refused:
        client("wrong-key", str(tmp_path / "errors.log")).remove_background_from_img_file("photo.png")
    error = error_of(refused.value.response, 403)
    assert error["title"] == "Authentication failed" and error["code"] == "auth_failed"
    assert not (tmp_path / "photo.png_no_bg.png").exists()


# --- Keys, answers and headers ----------------------------------------------------------------------


def test_keys_by_header_and_bearer_and_no_key_is_403(server) -> None:
    assert removebg(server, headers={"X-Api-Key": "nope"}).status_code == 403
    bearer = removebg(server, headers={"X-Api-Key": "", "Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200
    bare = requests.post(server.url + "/v1.0/removebg", files={"image_file": ("a.png", SMALL)}, timeout=TIMEOUT)
    assert error_of(bare, 403)["code"] == "auth_failed"


def test_the_json_answer_carries_the_image_and_the_foreground_box(server) -> None:
    response = removebg(server, headers={"Accept": "application/json"}, size="full")
    data = response.json()["data"]
    image = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert image.size == (800, 600) and image.mode == "RGBA"
    left, top, right, bottom = image.getchannel("A").getbbox()
    assert (data["foreground_left"], data["foreground_top"]) == (left, top)
    assert (data["foreground_width"], data["foreground_height"]) == (right - left, bottom - top)
    headers = response.headers
    assert [headers[f"X-Foreground-{side}"] for side in ("Top", "Left", "Width", "Height")] == [
        str(data[f"foreground_{side}"]) for side in ("top", "left", "width", "height")
    ]
    assert (headers["X-Width"], headers["X-Height"], headers["X-Credits-Charged"]) == ("800", "600", "0")
    assert headers["X-Type"] == "other" and int(headers["X-RateLimit-Limit"]) >= 1
    assert 0 <= int(headers["X-RateLimit-Remaining"]) <= int(headers["X-RateLimit-Limit"])
    assert len(headers["X-Request-Id"]) == 32


@pytest.mark.parametrize("legacy", ["small", "regular", "medium", "hd", "4k", "auto", "50MP"])
def test_every_size_name_is_taken(server, legacy) -> None:
    response = removebg(server, size=legacy)
    width = 577 if legacy in ("small", "regular") else 800
    assert response.status_code == 200 and response.headers["X-Width"] == str(width), response.text


def test_urlencoded_and_json_bodies_with_base64(server) -> None:
    text = base64.b64encode(SMALL).decode()
    url = server.url + "/v1.0/removebg"
    encoded = requests.post(url, data={"image_file_b64": text, "format": "png"}, headers=KEY, timeout=TIMEOUT)
    as_json = requests.post(url, json={"image_file_b64": text, "crop": False, "format": "png"}, headers=KEY)
    assert opened(encoded).tobytes() == opened(as_json).tobytes()
    assert opened(encoded).size == (200, 150)


# --- Field groups -------------------------------------------------------------------------------------


def test_formats(server) -> None:
    assert removebg(server, format="auto").headers["content-type"] == "image/png"  # transparent
    assert removebg(server, format="auto", bg_color="fff").headers["content-type"] == "image/jpeg"  # opaque
    jpeg = opened(removebg(server, format="jpg"))
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
    webp = opened(removebg(server, format="webp", size="full"))
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    archive = zipfile.ZipFile(io.BytesIO(removebg(server, format="zip", size="full").content))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    color, alpha = (Image.open(archive.open(name)) for name in ("color.jpg", "alpha.png"))
    assert color.size == alpha.size == (800, 600) and alpha.mode == "L" and color.mode == "RGB"


def test_channels_alpha_semitransparency_and_bg_color(server, mask) -> None:
    alpha = opened(removebg(server, channels="alpha", size="full", format="png"))
    assert alpha.mode == "L" and np.array_equal(np.asarray(alpha, dtype=np.int16), mask)
    hard = opened(removebg(server, channels="alpha", size="full", semitransparency="false", format="png"))
    assert set(np.unique(np.asarray(hard))) <= {0, 255}
    green = opened(removebg(server, bg_color="00ff00", size="full", format="png"))
    assert green.mode == "RGB"
    corner = np.unravel_index(np.argmin(mask), mask.shape)
    assert green.getpixel((int(corner[1]), int(corner[0])))[1] > 200 or mask.min() > 0
    named = opened(removebg(server, bg_color="green", format="png"))
    half = opened(removebg(server, bg_color="00ff0080", format="png"))
    assert named.mode == "RGB" and half.mode == "RGBA"


def test_bg_image_file_and_url(server, images) -> None:
    backdrop = png_bytes(Image.new("RGB", (50, 50), (0, 0, 255)))
    files = {"image_file": ("photo.png", PHOTO), "bg_image_file": ("bg.png", backdrop)}
    from_file = opened(removebg(server, files=files, format="png"))
    from_url = opened(removebg(server, bg_image_url=images + "/photo.png", format="png"))
    assert from_file.mode == from_url.mode == "RGB" and from_file.size == from_url.size == (577, 433)


def test_crop_margin_in_pixels_and_percent(server) -> None:
    plain = removebg(server, crop="true", size="full")
    width, height = int(plain.headers["X-Width"]), int(plain.headers["X-Height"])
    assert (plain.headers["X-Foreground-Left"], plain.headers["X-Foreground-Top"]) == ("0", "0")
    pixels = removebg(server, crop="true", crop_margin="30px", size="full")
    assert (int(pixels.headers["X-Width"]), int(pixels.headers["X-Height"])) == (width + 60, height + 60)
    sides = removebg(server, crop="true", crop_margin="10 20px", size="full")
    assert (int(sides.headers["X-Width"]), int(sides.headers["X-Height"])) == (width + 40, height + 20)
    percent = removebg(server, crop="true", crop_margin="10%", size="full")
    expected = (width + 2 * round(width * 0.1), height + 2 * round(height * 0.1))
    assert (int(percent.headers["X-Width"]), int(percent.headers["X-Height"])) == expected


def test_scale_and_position_place_the_subject(server) -> None:
    half = removebg(server, scale="50%", position="0% 0%", size="full").headers
    assert (half["X-Foreground-Left"], half["X-Foreground-Top"]) == ("0", "0")
    assert int(half["X-Foreground-Width"]) <= 400 and int(half["X-Foreground-Height"]) <= 300
    centred = removebg(server, scale="50%", size="full").headers
    left, width = int(centred["X-Foreground-Left"]), int(centred["X-Foreground-Width"])
    assert abs(left + width / 2 - 400) <= 2


def test_roi_keeps_the_subject_inside_it(server, mask) -> None:
    inside = removebg(server, roi="0% 0% 50% 100%", size="full").headers
    assert int(inside["X-Foreground-Left"]) + int(inside["X-Foreground-Width"]) <= 400
    y, x = np.argwhere(mask < 8)[0]  # a pixel of background: a region of interest with no subject in it
    nothing = removebg(server, roi=f"{x}px {y}px {x + 1}px {y + 1}px", size="full")
    assert error_of(nothing, 400)["code"] == "unknown_foreground"
    assert "roi" in error_of(removebg(server, roi="50% 0% 10% 100%"), 400)["detail"]


def test_type_type_level_add_shadow(server) -> None:
    assert removebg(server, type="person", type_level="2").headers["X-Type"] == "person"
    error = error_of(removebg(server, add_shadow="true"), 400)
    assert "add_shadow" in error["detail"]
    assert removebg(server, add_shadow="false", semitransparency="true").status_code == 200


# --- Failures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "mentions"),
    [
        ({"size": "huge"}, "size"),
        ({"format": "gif"}, "format"),
        ({"channels": "rgb"}, "channels"),
        ({"bg_color": "not-a-colour"}, "bg_color"),
        ({"crop_margin": "600px"}, "crop_margin"),
        ({"crop_margin": "1 2 3"}, "crop_margin"),
        ({"scale": "5%"}, "scale"),
        ({"position": "left"}, "position"),
        ({"roi": "0 0 10"}, "roi"),
        ({"type": "spaceship"}, "type"),
        ({"crop": "perhaps"}, "crop"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_fields_are_400_naming_the_field(server, fields, mentions) -> None:
    assert mentions in error_of(removebg(server, **fields), 400)["detail"]


def test_bad_sources_are_400(server) -> None:
    url = server.url + "/v1.0/removebg"
    bad_b64 = requests.post(url, data={"image_file_b64": "not base64!"}, headers=KEY, timeout=TIMEOUT)
    assert error_of(bad_b64, 400)["code"] == "invalid_file_b64"
    none = requests.post(url, data={"size": "full"}, headers=KEY, timeout=TIMEOUT)
    assert error_of(none, 400)["code"] == "missing_source"
    both = removebg(server, image_file_b64=base64.b64encode(SMALL).decode())
    assert "more than one" in error_of(both, 400)["detail"]
    not_an_image = removebg(server, files={"image_file": ("a.png", b"hello")})
    assert error_of(not_an_image, 400)["code"] == "invalid_image"
    big = base64.b64encode(b"\0" * (UPLOAD_MB * 1024 * 1024 * 2)).decode()
    assert error_of(requests.post(url, data={"image_file_b64": big}, headers=KEY), 400)["code"] == "file_too_large"
    too_big_file = removebg(server, files={"image_file": ("a.png", b"\0" * (UPLOAD_MB * 1024 * 1024 * 2))})
    assert error_of(too_big_file, 400)["code"] == "file_too_large"
    as_text = requests.post(url, files={"size": (None, "full")}, data={"image_file": "abc"}, headers=KEY)
    assert "must be a file" in error_of(as_text, 400)["detail"]
    plain = requests.post(url, data=b"image", headers=KEY | {"Content-Type": "text/plain"}, timeout=TIMEOUT)
    assert error_of(plain, 400)["code"] == "invalid_parameters"
    assert error_of(requests.get(url, headers=KEY, timeout=TIMEOUT), 405)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://x/", "http://", "http://[::1", "javascript:1"]
)
def test_image_urls_other_than_http_are_400(server, url) -> None:
    assert error_of(removebg(server, image_url=url), 400)["code"] == "invalid_image_url"


def test_url_bodies_over_the_limit_and_endless_redirects_are_400(server, images) -> None:
    assert error_of(removebg(server, image_url=images + "/big"), 400)["code"] == "file_too_large"
    assert "redirects" in error_of(removebg(server, image_url=images + "/hops/5"), 400)["detail"]  # 6 redirects
    assert removebg(server, image_url=images + "/hops/4").status_code == 200  # 5: the most that are followed
    assert "HTTP 404" in error_of(removebg(server, image_url=images + "/missing"), 400)["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "10.0.0.1", "169.254.169.254", "0.0.0.0"])
def test_private_addresses_are_refused_by_default(strict_server, images, host) -> None:
    port = images.rsplit(":", 1)[1]
    response = removebg(strict_server, image_url=f"http://{host}:{port}/photo.png")
    error = error_of(response, 400)
    assert error["code"] == "invalid_image_url" and "RMBG_REMOVEBG_ALLOW_PRIVATE_URLS" in error["detail"], error


def test_without_a_token_no_key_is_needed(strict_server) -> None:
    response = requests.post(
        strict_server.url + "/v1.0/removebg", files={"image_file": ("a.png", SMALL)}, timeout=TIMEOUT
    )
    assert response.status_code == 200 and response.headers["X-Width"] == "200"


# --- Fuzz: every field, hostile values ------------------------------------------------------------------

FUZZ_VALUES = st.one_of(
    st.sampled_from(["", "inf", "nan", "-1", "1e400", "9" * 300, "100%", "101%", "0%", "-5px", "30px", "10% 10%"]),
    st.sampled_from(["true", "false", "full", "preview", "zip", "alpha", "fff", "#12345", "center", "original"]),
    st.sampled_from(["http://127.0.0.1:1/", "file:///etc/passwd", "not base64", "data:image/png;base64,AAAA"]),
    st.text(max_size=16),
)
FUZZ_FORMS = st.dictionaries(st.sampled_from([*OPTION_FIELDS, "image_url", "image_file_b64"]), FUZZ_VALUES, max_size=4)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=FUZZ_FORMS)
def test_no_field_value_gets_a_500_or_leaves_remove_bgs_envelope(strict_server, form) -> None:
    form = {key: value.replace("\x00", "") for key, value in form.items()}
    files = None if {"image_url", "image_file_b64"} & set(form) else {"image_file": ("a.png", SMALL)}
    response = requests.post(strict_server.url + "/v1.0/removebg", files=files, data=form, timeout=TIMEOUT)
    assert response.status_code in (200, 400), (form, response.status_code, response.text)
    if response.status_code == 400:
        error_of(response, 400)


@pytest.mark.parametrize("path", ["/v1.0/removebg", "/metrics", "/livez", "/readyz"])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_the_new_routes_answer_any_method_and_body_without_a_500(strict_server, path, method) -> None:
    for body in ({"json": {"image_url": 5}}, {"json": [1]}, {"data": b"\xff" * 100}, {}):
        response = requests.request(method, strict_server.url + path, timeout=TIMEOUT, **body)
        assert response.status_code < 500, (method, body, response.text)


def test_a_full_server_answers_429_with_retry_after_and_rate_limit_headers(strict_server) -> None:
    def send(_: int) -> requests.Response:
        files = {"image_file": ("photo.png", PHOTO)}
        return requests.post(strict_server.url + "/v1.0/removebg", files=files, data={"size": "full"}, timeout=TIMEOUT)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {answer.status_code for answer in answers} == {200, 429}, [a.status_code for a in answers]
    busy = next(answer for answer in answers if answer.status_code == 429)
    assert error_of(busy, 429)["code"] == "rate_limit_exceeded"
    assert int(busy.headers["Retry-After"]) >= 1
    assert (busy.headers["X-RateLimit-Limit"], busy.headers["X-RateLimit-Remaining"]) == ("1", "0")
    assert int(busy.headers["X-RateLimit-Reset"]) >= int(time.time())


# --- remove.bg's npm client --------------------------------------------------------------------------

NPM = Path(__file__).resolve().parents[1] / "npm"


def node_client(server: Server, key: str, kind: str, source: str, out: Path, size: str = "") -> dict:
    """remove.bg's npm client (tests/npm; .ci/run installs it) through tests/npm/removebg_client.js."""
    assert (NPM / "node_modules" / "remove.bg").is_dir(), "run `npm install --prefix tests/npm` (.ci/run does)"
    endpoint = server.url + "/v1.0/removebg"
    command = ["node", str(NPM / "removebg_client.js"), endpoint, key, kind, source, str(out), size]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_npm_client_gets_json_answers_from_file_base64_and_url(server, tmp_path, images) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    full = node_client(server, TOKEN, "file", str(photo), tmp_path / "file.png", "full")
    assert (full["resultWidth"], full["resultHeight"], full["creditsCharged"]) == ("800", "600", "0")
    assert full["detectedType"] == "other" and int(full["rateLimit"]) >= 1
    assert Image.open(tmp_path / "file.png").size == (800, 600)
    preview = node_client(server, TOKEN, "base64", str(photo), tmp_path / "b64.png")
    assert (preview["resultWidth"], preview["resultHeight"]) == ("577", "433")
    from_url = node_client(server, TOKEN, "url", images + "/photo.png", tmp_path / "url.png")
    assert Image.open(tmp_path / "url.png").tobytes() == Image.open(tmp_path / "b64.png").tobytes()
    assert from_url["base64img"] == preview["base64img"]  # the lengths of the same image


def test_the_npm_client_is_refused_a_wrong_key_in_remove_bgs_format(server, tmp_path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PHOTO)
    (error,) = node_client(server, "wrong", "file", str(photo), tmp_path / "no.png")["rejected"]
    assert error["title"] == "Authentication failed" and error["code"] == "auth_failed"
    assert not (tmp_path / "no.png").exists()
