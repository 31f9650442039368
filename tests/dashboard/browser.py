"""Headless Chromium for the dashboard tests, and where their screenshots go.

Chromium is Debian's (``chromium``, installed by scripts/bootstrap-debian.sh): Playwright
drives it as it is, never downloading a browser of its own (no ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
REPO_ROOT = Path(__file__).resolve().parents[2]
#: committed copies of three screenshots, refreshed when ORBIT_UPDATE_SCREENSHOTS=1
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
DOCS_COPIES = {
    "instances": "instances.png",
    "live-migrate-form": "live-migrate-form.png",
    "migration-chart": "migration-chart.png",
}


def launch_chromium(playwright: Playwright) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard tests need Debian's chromium and "
            "chromium-driver (run scripts/bootstrap-debian.sh)",
            pytrace=False,
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def artifacts_dir(*parts: str) -> Path:
    """``$ORBIT_ARTIFACTS/dashboard/...`` (default ``artifacts/`` in the repository)."""
    base = Path(os.environ.get("ORBIT_ARTIFACTS") or REPO_ROOT / "artifacts")
    path = base.joinpath("dashboard", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Screenshots:
    """Saves PNGs of pages under one artifacts directory (and, when asked, the docs copies)."""

    def __init__(self, directory: Path, *, update_docs: bool = False) -> None:
        self.directory = directory
        self.update_docs = update_docs

    def take(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.update_docs and name in DOCS_COPIES:
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / DOCS_COPIES[name])
        return path
