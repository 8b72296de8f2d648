"""Hostile option values: every numeric field finite and in range, a clear message naming the field, never a 500.

The unit cases pin the messages; the property-based case throws hypothesis-made values at every
form field of a real server's `POST /api/remove`, and the UI case sends the same values through
Gradio's named endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live import MODEL, SERVER_ARGS, TIMEOUT, Server, png_bytes, run_server, sample_image

from bgremover.service.options import build_request

# Strings a hostile client types into numeric fields: the overflowing, the undefined, the huge.
NASTY_NUMBERS = ["inf", "-inf", "nan", "NaN", "1e400", "-1e400", "1e308", "9" * 400, "-1", "0x10", "1_0", " 2 "]
FIELDS = ("output", "bg_color", "threshold", "crop", "crop_margin", "refine_edges", "size", "model", "compression")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": "inf"}, "size='inf' is not a whole number"),
        ({"size": "nan"}, "size='nan' is not a whole number"),
        ({"size": "1e400"}, "size='1e400' is not a whole number"),
        ({"size": "512.5"}, "size='512.5' is not a whole number"),
        ({"bg_color": "rgb(inf,0,0)", "output": "color"}, "bg_color='rgb.inf,0,0.' is not a colour"),
        ({"bg_color": "rgb(nan,0,0)", "output": "color"}, "bg_color='rgb.nan,0,0.' is not a colour"),
        ({"threshold": "nan"}, "threshold='nan' is not a number: use 0 to 1"),
        ({"threshold": "inf"}, "threshold='inf' is not a number"),
        ({"threshold": "1.5"}, "threshold='1.5' is out of range: use 0 to 1"),
        ({"crop_margin": "inf"}, "crop_margin='inf' is not an integer"),
        ({"crop_margin": "1e12"}, "crop_margin='1e12' is out of range"),
        ({"crop_margin": "-1"}, "crop_margin='-1' is out of range"),
        ({"crop_margin": "2.5"}, "crop_margin='2.5' is not an integer"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused_naming_the_field(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_request(**fields)


def test_finite_numbers_in_range_still_pass() -> None:
    request = build_request(size="512.0", threshold="1", crop_margin="100000", bg_color="rgb(255, 0, 0.4)")
    assert (request.size, request.options.threshold, request.options.crop_margin) == (512, 1.0, 100_000)
    assert request.options.background_color == (255, 0, 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("hostile_options"), hf_home, *SERVER_ARGS) as up:
        yield up


TINY = png_bytes(sample_image(48, 32))
VALUES = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    st.sampled_from(["", "rgb(inf,0,0)", "rgb(1e400,0,0)", "#fff", "color", "mask", "true", "64", "small"]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=12),
)
FORMS = st.dictionaries(st.sampled_from([*FIELDS, "format"]), VALUES, max_size=4)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(form=FORMS)
def test_no_form_value_gets_a_500_from_the_api(server, form) -> None:
    form = {key: value.replace("\x00", "") for key, value in form.items()}
    response = requests.post(server.url + "/api/remove", files={"file": ("a.png", TINY)}, data=form, timeout=TIMEOUT)
    assert response.status_code in (200, 400), (form, response.status_code, response.text)
    if response.status_code == 400:
        message = response.json()["error"]
        assert any(name in message for name in (*form, "format", "JPEG")), (form, message)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("size", "inf", "size='inf' is not a whole number"),
        ("bg_color", "rgb(inf,0,0)", "is not a colour"),
        ("crop_margin", "inf", "crop_margin='inf' is not an integer"),  # JSON has no inf: typed as text
        ("threshold", "nan", "threshold='nan' is not a number"),
    ],
)
def test_the_ui_names_the_bad_value_instead_of_an_unexpected_error(server, tmp_path, option, value, message) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    image = tmp_path / "a.png"
    image.write_bytes(TINY)
    client = Client(server.url + "/", verbose=False)
    output = "color" if option == "bg_color" else "cutout"
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(image)), MODEL, output, **{option: value}, api_name="/remove")
