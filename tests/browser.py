"""Helpers for the end-to-end tests in Chromium (imported as ``tests.browser``); the ``server``
fixture (``streamlit run app.py`` on a free port) is in conftest.

Screenshots go to ``test-artifacts/screens/`` and nowhere else: the README's screenshot in
``assets/`` is retaken by hand, and the ``server`` fixture fails a test that changed ``assets/``.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from tests.helpers import need

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
SCREENS = ROOT / "test-artifacts" / "screens"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def need_browser(ok: bool, reason: str) -> None:
    """Skip without Chromium or Playwright, unless CI sets KD_REQUIRE_BROWSER (then fail)."""
    need(ok, reason, "KD_REQUIRE_BROWSER")


def need_chromium() -> None:
    need_browser(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Offline:
    """Records every request the page makes to a host other than the app's (none may happen)."""

    def __init__(self, page, url: str) -> None:
        self.app = urlsplit(url).netloc
        self.outside: list[str] = []
        page.on("request", self._seen)

    def _seen(self, request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.netloc != self.app:
            self.outside.append(request.url)

    def check(self) -> None:
        assert not self.outside, f"{len(self.outside)} request(s) left the machine: {self.outside[:5]}"


def playwright():
    """Playwright's sync context manager (skips the test when the package is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_browser(False, "the playwright package is not installed")
    return sync_playwright()


def browser_page(p, url: str, height: int = 2150, **page_args):
    """Launch Chromium and open one page; returns (browser, page, Offline watcher of the page)."""
    need_chromium()
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": height}, **page_args)
    return browser, page, Offline(page, url)


def settle(page) -> None:
    """Wait until Streamlit has finished the script run and drawn every lazy element."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stSkeleton]')", timeout=60_000)
    page.wait_for_timeout(300)


def shot(page, name: str) -> Path:
    """Screenshot of ``page`` as test-artifacts/screens/<name>.png."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
