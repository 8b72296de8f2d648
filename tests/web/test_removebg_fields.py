"""remove.bg's field syntax and its error envelope, in-process (quick): the live tests in
test_removebg.py check what the server makes of them."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from bgremover.web.removebg_errors import RemoveBgEnvelope
from bgremover.web.removebg_options import Length, parse_bg_color, parse_margin, parse_options, parse_position

PX, PC = (lambda v: Length(v, False)), (lambda v: Length(v, True))


@pytest.mark.parametrize(
    ("text", "sides"),
    [
        ("", (PX(0),) * 4),
        ("30px", (PX(30),) * 4),
        ("30", (PX(30),) * 4),
        ("10%", (PC(10),) * 4),
        ("10px 20%", (PX(10), PC(20), PX(10), PC(20))),
        ("1 2 3 4", (PX(1), PX(2), PX(3), PX(4))),
    ],
)
def test_crop_margin_takes_css_shorthand_in_pixels_or_percent(text, sides) -> None:
    assert parse_margin(text) == sides


@pytest.mark.parametrize("text", ["501px", "51%", "1 2 3", "-5px", "5em", "inf", "nan%"])
def test_crop_margin_beyond_remove_bgs_limits_is_refused(text) -> None:
    with pytest.raises(ValueError, match="crop_margin"):
        parse_margin(text)


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("81d4fa", (0x81, 0xD4, 0xFA, 255)),
        ("fff", (255, 255, 255, 255)),
        ("#000", (0, 0, 0, 255)),
        ("81d4fa80", (0x81, 0xD4, 0xFA, 0x80)),
        ("green", (0, 128, 0, 255)),
        ("", None),
    ],
)
def test_bg_color_is_hex_without_hash_with_alpha_or_a_name(text, rgba) -> None:
    assert parse_bg_color(text) == rgba


def test_position_and_scale_defaults_follow_remove_bg() -> None:
    assert parse_position("", scaled=True) == (0.5, 0.5) and parse_position("", scaled=False) is None
    assert parse_position("0% 100%", scaled=False) == (0.0, 1.0) and parse_position("25%", False) == (0.25, 0.25)
    options = parse_options({})
    assert (options.max_pixels, options.fmt, options.channels, options.semitransparency) == (
        250_000,
        "auto",
        "rgba",
        True,
    )
    assert parse_options({"size": "FULL", "type": "Car"}).max_pixels is None


def test_answers_from_outside_the_route_are_put_in_remove_bgs_envelope() -> None:
    app = FastAPI()
    app.get("/v1.0/guarded")(lambda: JSONResponse({"error": "no credentials"}, status_code=401))
    app.get("/v1.0/too-big")(lambda: JSONResponse({"error": "over the limit"}, status_code=413))
    app.get("/v1.0/ok")(lambda: {"fine": True})

    @app.get("/v1.0/bug")
    def bug() -> None:
        raise RuntimeError("a bug")

    app.get("/elsewhere")(lambda: JSONResponse({"error": "x"}, status_code=401))
    app.add_middleware(RemoveBgEnvelope)
    client = TestClient(app, raise_server_exceptions=False)
    for path, status, code in (
        ("/v1.0/guarded", 403, "auth_failed"),
        ("/v1.0/too-big", 400, "http_400"),
        ("/v1.0/bug", 503, "server_error"),
        ("/v1.0/nothing", 404, "http_404"),
    ):
        response = client.get(path)
        assert response.status_code == status, path
        (error,) = response.json()["errors"]
        assert error["code"] == code and error["title"] and error["detail"], error
    assert client.get("/v1.0/ok").json() == {"fine": True}
    assert client.get("/elsewhere").json() == {"error": "x"}  # other routes keep the server's own format
