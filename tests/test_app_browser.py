"""app.py in a real browser: headless Chromium generates text, and looks inside the model on the second tab."""

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import patience, run_script, write_shakespeare
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


def waiting(seconds: float) -> float:
    """patience(seconds) in milliseconds, as Playwright takes its timeouts."""
    return patience(seconds) * 1000


@contextmanager
def browser_page(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path | None = None) -> Iterator:
    """A laptop-sized page of headless Chromium showing app.py, which serves a tiny model (or checkpoint); and
    Playwright's API."""
    require("gradio")
    sync_api = require("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no browser at {CHROMIUM}: .ci/run installs Debian's chromium")
        pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium")
    with serve_app(checkpoint or tiny_checkpoint(tmp_path_factory)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=waiting(30))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(waiting(30))  # clicks, fills and page loads; Playwright's default is 30 s
            page.goto(url)
            yield page, sync_api
        finally:
            browser.close()


def test_the_page_generates_text_in_a_browser(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    with browser_page(tmp_path_factory) as (page, sync_api):
        page.get_by_label("Prompt").fill("ROMEO:")
        page.get_by_label("number input for max length (new tokens)").fill("100")
        page.get_by_role("button", name="Generate").click()
        output = page.get_by_label("output 1")
        # the prompt and then new text: proof that the model ran and the page received its stream
        sync_api.expect(output).to_have_value(re.compile(r"^ROMEO:.{20,}", re.DOTALL), timeout=waiting(60))
        sync_api.expect(page.get_by_text("Done: 2 × up to 100 tokens")).to_be_visible(timeout=waiting(60))
        page.screenshot(path=tmp_path / "app.png", full_page=True)
    if os.environ.get("APP_SCREENSHOT"):
        shutil.copy(tmp_path / "app.png", os.environ["APP_SCREENSHOT"])
    assert (tmp_path / "app.png").stat().st_size > 10_000


def test_the_look_inside_tab_draws_the_next_tokens_the_attention_and_the_surprise(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    with browser_page(tmp_path_factory) as (page, sync_api):
        expect = sync_api.expect
        page.get_by_role("tab", name="Look inside").click()
        text = page.get_by_label("Text the model reads")
        text.fill("ROMEO: Wh")
        expect(page.get_by_text("likeliest next tokens after 9 tokens")).to_be_visible(timeout=waiting(60))
        expect(page.locator("#next-tokens svg .mark-rect path")).to_have_count(10, timeout=waiting(30))  # a bar a token
        heatmap = page.locator("#attention img")
        expect(heatmap).to_be_visible(timeout=waiting(30))
        assert heatmap.evaluate("img => img.naturalWidth") > 300  # matplotlib's picture arrived and was decoded
        expect(page.get_by_text("Mean surprise")).to_be_visible(timeout=waiting(30))
        shaded = page.locator("#surprise").get_by_text("W", exact=True)  # a shaded token
        expect(shaded).to_be_visible(timeout=waiting(5))
        page.screenshot(path=tmp_path / "app_inside.png", full_page=True)
        # clicking the likeliest token adds it to the text, and the views follow
        # click, not check(): the page clears the choice once it has added the token, so the radio
        # may already be unchecked again when Playwright looks
        page.get_by_role("radio").first.click()
        expect(text).to_have_value(re.compile(r"^ROMEO: Wh.$", re.DOTALL), timeout=waiting(30))
        expect(page.get_by_text("likeliest next tokens after 10 tokens")).to_be_visible(timeout=waiting(30))
    if os.environ.get("APP_INSIDE_SCREENSHOT"):
        shutil.copy(tmp_path / "app_inside.png", os.environ["APP_INSIDE_SCREENSHOT"])
    assert (tmp_path / "app_inside.png").stat().st_size > 10_000


def test_stop_ends_a_long_generation_and_keeps_the_text_so_far(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    # an untrained model big enough that 8 outputs of 1000 tokens take many seconds on a CPU
    write_shakespeare(tmp_path)
    untrained = ["--max_iters=0", "--n_layer=8", "--n_head=8", "--n_embd=512", "--block_size=512", "--eval_iters=1"]
    assert run_script("gpt.py", [*untrained, "--num_samples=1", "--max_new_tokens=1"], tmp_path).returncode == 0
    with browser_page(tmp_path_factory, tmp_path / "trained_model.pth") as (page, sync_api):
        page.get_by_label("number input for max length (new tokens)").fill("1000")
        page.get_by_label("number input for number of outputs").fill("8")
        page.get_by_role("button", name="Generate").click()
        output = page.get_by_label("output 1")
        sync_api.expect(output).to_have_value(re.compile(r".{10,}", re.DOTALL), timeout=waiting(60))
        page.get_by_role("button", name="Stop").click()
        sync_api.expect(page.get_by_text("Stopped.")).to_be_visible(timeout=waiting(10))
        stopped_at = output.input_value()
        page.wait_for_timeout(2_000)  # a generation still running would keep adding text
        assert output.input_value() == stopped_at
        assert 10 <= len(stopped_at) < 1000  # the text so far stays; the 1000 tokens never came
        assert not page.get_by_text("Done:").is_visible()
