"""A real browser for UI tests: Debian's Chromium driven by Playwright.

Tests that use it are skipped where Chromium is not installed (.ci/run
installs it). With SAVE_SCREENSHOTS=1 their screenshots are written to
docs/screenshots/ as well.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Playwright's own default is 5 s, short for a loaded two-core CI machine.
STEP_TIMEOUT_MS = 30_000

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)",
)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def new_page(browser, **options):
    """A page with the patient step timeout, 1280 x 720 unless told."""
    from playwright.sync_api import expect

    expect.set_options(timeout=STEP_TIMEOUT_MS)
    page = browser.new_page(**{"viewport": {"width": 1280, "height": 720}, **options})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    return page


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SAVE_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / "screenshots" / name)
    return path
