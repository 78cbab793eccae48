"""app.py in a real browser: headless Chromium types a prompt, clicks Generate and sees the text arrive."""

import os
import re
import shutil
from pathlib import Path

import pytest

from test_app import require, serve_app, tiny_checkpoint

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium); Playwright's own download is not used
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root in CI containers
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_the_page_generates_text_in_a_browser(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    require("gradio")
    sync_api = require("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no browser at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    with serve_app(tiny_checkpoint(tmp_path_factory)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            page.get_by_label("Prompt").fill("ROMEO:")
            page.get_by_label("number input for max length (new tokens)").fill("100")
            page.get_by_role("button", name="Generate").click()
            output = page.get_by_label("output 1")
            # the prompt and then new text: proof that the model ran and the page received its stream
            sync_api.expect(output).to_have_value(re.compile(r"^ROMEO:.{20,}", re.DOTALL), timeout=60_000)
            sync_api.expect(page.get_by_text("Done: 2 × up to 100 tokens")).to_be_visible(timeout=60_000)
            page.screenshot(path=tmp_path / "app.png", full_page=True)
        finally:
            browser.close()
    if os.environ.get("APP_SCREENSHOT"):
        shutil.copy(tmp_path / "app.png", os.environ["APP_SCREENSHOT"])
    assert (tmp_path / "app.png").stat().st_size > 10_000
