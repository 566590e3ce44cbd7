"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

Open the app, choose a synthetic set, start, watch the live loss chart gain points, read the
final table, find the run on the Runs page. A screenshot of every page goes to
``test-artifacts/screens/`` (printed), and the Train page mid-run to ``assets/train_midrun.png``.

Skips without Chromium or Playwright, unless KD_REQUIRE_BROWSER is set (CI).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
SCREENS = ROOT / "test-artifacts" / "screens"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# points on the loss chart, read from the Plotly graph divs the page holds
LOSS_POINTS = """() => {
  // a redrawn Plotly chart is remounted, and the old copy lingers hidden for a moment: take the max
  const counts = [...document.querySelectorAll('.js-plotly-plot')]
    .filter(d => d.layout && d.layout.title && String(d.layout.title.text).includes('Total training loss'))
    .map(g => g.data.reduce((n, t) => n + ((t.x || []).length), 0));
  return counts.length ? Math.max(...counts) : -1;
}"""

DISTILLED_POINTS = LOSS_POINTS.replace("g.data.reduce", "g.data.filter(t => t.name === 'distilled').reduce")


def need(ok: bool, reason: str) -> None:
    if not ok:
        if os.environ.get("KD_REQUIRE_BROWSER"):
            pytest.fail(f"{reason} (required because KD_REQUIRE_BROWSER is set)")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """`streamlit run app.py` on a free port with an empty run history; yields its URL."""
    port = free_port()
    env = {**os.environ, "KD_RUNS_DIR": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("streamlit did not answer its health check in 30 s:\n"
                        + (tmp_path / "streamlit.log").read_text())
        print(f"\nstreamlit healthy after {time.perf_counter() - t0:.1f} s on {url}")
        yield url, tmp_path / "runs"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def settle(page) -> None:
    """Wait until Streamlit has finished the script run and drawn every lazy element."""
    page.wait_for_function("() => !document.querySelector('[data-testid=stSkeleton]')", timeout=60_000)
    page.wait_for_timeout(300)


def shot(page, name: str) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_train_live_then_find_the_run(server):
    need(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is not installed")
    url, runs = server
    print(f"screenshots in {SCREENS}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2150})
        try:
            # ~20 s of training on 2 idle cores (longer when busy): long enough to watch mid-run
            page.goto(f"{url}/?epochs=150&teacher_epochs=150&samples=2000&batch=16",
                      wait_until="domcontentloaded")
            page.get_by_text("Will run:").wait_for(timeout=90_000)
            settle(page)

            # choose a synthetic set in the picker
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name="Concentric circles").click()
            page.get_by_text("circles · train teacher").wait_for(timeout=30_000)
            settle(page)
            assert "dataset=Concentric" in page.url  # the setup is in the link
            shot(page, "1_train_setup")

            page.locator(".st-key-start button").click()
            page.wait_for_function(f"({LOSS_POINTS})() > 0", timeout=30_000)
            first = page.evaluate(LOSS_POINTS)
            page.wait_for_function(f"({LOSS_POINTS})() > {first + 20}", timeout=60_000)  # it grows
            assert page.locator("[data-testid=stProgress]").count() >= 1
            assert page.get_by_text("Next run:").count() == 1
            # the picture for the README: the distilled student training, all three curves drawn
            page.get_by_text("phase 3 of 3").wait_for(timeout=300_000)
            page.wait_for_function(f"({DISTILLED_POINTS})() >= 10", timeout=60_000)
            page.get_by_role("heading", name="Distillation loss", exact=True).evaluate(
                "h => h.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            mid = shot(page, "2_train_midrun")
            (ROOT / "assets").mkdir(exist_ok=True)
            shutil.copyfile(mid, ROOT / "assets" / "train_midrun.png")

            # the end: the comparison table and the verdict
            page.get_by_text("Test-set comparison").wait_for(timeout=300_000)
            page.get_by_text("Verdict.").wait_for(timeout=10_000)
            settle(page)
            assert page.locator("[data-testid=stDataFrame]").count() >= 1
            assert page.get_by_text("Last run 1: completed").count() == 1  # the sidebar knows
            page.get_by_text("Test-set comparison").scroll_into_view_if_needed()
            shot(page, "3_train_done")

            page.get_by_role("link", name="Runs", exact=True).click()
            page.get_by_role("heading", name="Runs", exact=True).wait_for(timeout=30_000)
            page.get_by_text("runs config 1 > run1.json").wait_for(timeout=30_000)  # run 1 is listed
            settle(page)
            assert page.locator("[data-testid=stDataFrame]").count() >= 2
            shot(page, "4_runs")
            # compress run 1's distilled student: the table of variants appears, no traceback
            page.get_by_role("button", name="Measure compression").click()
            # (the table is a canvas grid: its cells exist for screen readers, not as visible text)
            page.get_by_text("pruned 80% (global) + int8").wait_for(state="attached", timeout=60_000)
            assert page.locator("[data-testid=stException]").count() == 0
            page.get_by_text("Honest limits").scroll_into_view_if_needed()
            shot(page, "4b_runs_compress")

            page.get_by_role("link", name="Soft targets", exact=True).click()
            page.get_by_text("Sample #").first.wait_for(timeout=60_000)
            settle(page)
            shot(page, "5_soft_targets")

            page.get_by_role("link", name="Guide", exact=True).click()
            page.get_by_role("heading", name="What knowledge distillation is",
                             exact=True).wait_for(timeout=30_000)
            shot(page, "6_guide")

            # the Temperature lab: moving T changes the entropy shown and lands in the URL
            page.get_by_role("link", name="Temperature lab", exact=True).click()
            page.get_by_text("Entropy at T = 4").wait_for(timeout=60_000)
            settle(page)
            before = page.locator("[data-testid=stMetricValue]").first.inner_text()
            page.locator(".st-key-T input[type=range]").focus()
            page.keyboard.press("End")  # T: 4 -> 30
            page.get_by_text("Entropy at T = 30").wait_for(timeout=30_000)
            settle(page)
            assert page.locator("[data-testid=stMetricValue]").first.inner_text() != before
            assert "T=30" in page.url
            shot(page, "7_temperature_lab")

            # back on Train with T = 30, beyond the Train slider's 20: a message and a reset, no
            # traceback; the finished run is still shown
            page.get_by_role("link", name="Train", exact=True).click()
            page.get_by_text("Test-set comparison").wait_for(timeout=30_000)
            page.get_by_text("out of range").wait_for(timeout=10_000)
            assert page.locator("[data-testid=stException]").count() == 0
            shot(page, "8_train_after_lab")
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()
    assert (runs / "history.sqlite").exists()
