"""End to end in a real browser: `streamlit run app.py` driven by Playwright in Debian's Chromium.

Open the app, choose a synthetic set, start, watch the live loss chart gain points, read the
final table, find the run on the Runs page. A screenshot of every page goes to
``test-artifacts/screens/`` (printed); a test writes nothing else: the README's screenshot in
``assets/`` is retaken by hand from a real run, and the ``server`` fixture fails a test that changed
``assets/``. Every test fails if the browser requests anything from a host other than the app's:
the app must work offline and not phone home.

Skips without Chromium or Playwright, unless KD_REQUIRE_BROWSER is set (CI).
"""
import os
import re
import time

import pytest

from tests.browser import SCREENS, browser_page, need_chromium, playwright, settle, shot

pytestmark = pytest.mark.browser

# points on the loss chart, read from the Plotly graph divs the page holds
LOSS_POINTS = """() => {
  // a redrawn Plotly chart is remounted, and the old copy lingers hidden for a moment: take the max
  const counts = [...document.querySelectorAll('.js-plotly-plot')]
    .filter(d => d.layout && d.layout.title && String(d.layout.title.text).includes('Total training loss'))
    .map(g => g.data.reduce((n, t) => n + ((t.x || []).length), 0));
  return counts.length ? Math.max(...counts) : -1;
}"""

FINISHED_RUN = """() => {
  const m = [...document.querySelectorAll('[data-testid=stProgress]')]
    .map(e => /Run (\\d+) finished/.exec(e.innerText)).filter(Boolean);
  return m.length ? Math.max(...m.map(x => +x[1])) : 0;
}"""
DISTILLED_POINTS = LOSS_POINTS.replace("g.data.reduce", "g.data.filter(t => t.name === 'distilled').reduce")


def will_run(page) -> str:
    """The Train page's "Will run: <summary>" line (or "Next run:" while one trains)."""
    line = page.locator("[data-testid=stMarkdownContainer] p").filter(has_text="run:")
    return " ".join(line.first.inner_text().split())


def test_train_live_then_find_the_run(server):
    need_chromium()
    url, runs = server
    print(f"screenshots in {SCREENS}")
    with playwright() as p:
        browser, page, offline = browser_page(p, url)
        try:
            # ~20 s of training on 2 idle cores (longer when busy): long enough to watch mid-run
            # every label (labelled=0): the students' phases last as long as the teacher's
            page.goto(f"{url}/?epochs=150&teacher_epochs=150&samples=2000&batch=16&seeds=1&labelled=0",
                      wait_until="domcontentloaded")
            page.get_by_text("Will run:").wait_for(timeout=90_000)
            settle(page)

            # choose a synthetic set in the picker
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name="Concentric circles").click()
            page.locator("[data-testid=stMarkdownContainer] p").filter(
                has_text=re.compile(r"run: circles ·")).first.wait_for(timeout=30_000)
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
            page.get_by_text("phase 3 of").wait_for(timeout=300_000)
            page.wait_for_function(f"({DISTILLED_POINTS})() >= 10", timeout=60_000)
            page.get_by_role("heading", name="Distillation loss", exact=True).evaluate(
                "h => h.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            shot(page, "2_train_midrun")

            # the end: the comparison table and the verdict
            page.get_by_text("Test-set comparison").wait_for(timeout=300_000)
            page.get_by_text("Verdict.").wait_for(timeout=10_000)
            settle(page)
            assert page.get_by_text("95 % CI").count() >= 1  # the verdict carries its interval
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
            page.locator(".st-key-temp_T input[type=range]").focus()
            page.keyboard.press("End")  # T: 4 -> 30
            page.get_by_text("Entropy at T = 30").wait_for(timeout=30_000)
            settle(page)
            assert page.locator("[data-testid=stMetricValue]").first.inner_text() != before
            assert "temp_T=30" in page.url  # the lab's own parameter
            shot(page, "7_temperature_lab")

            # back on Train: the lab's T = 30 stayed on the lab; Train keeps its own T = 4
            page.get_by_role("link", name="Train", exact=True).click()
            page.get_by_text("Test-set comparison").wait_for(timeout=30_000)
            settle(page)
            assert "kd T=4 " in will_run(page)
            assert page.get_by_text("out of range").count() == 0
            assert page.locator("[data-testid=stException]").count() == 0
            shot(page, "8_train_after_lab")

            # several seeds from one teacher: the verdict over seeds with its interval
            page.goto(f"{url}/?epochs=3&teacher_epochs=3&samples=400&seeds=3", wait_until="domcontentloaded")
            page.get_by_text("students over seeds 0, 1, 2, one teacher").wait_for(timeout=90_000)
            settle(page)
            page.locator(".st-key-start button").click()
            page.get_by_text("Test-set comparison over 3 seeds").wait_for(timeout=300_000)
            page.get_by_text("Over 3 seeds distillation").wait_for(timeout=10_000)
            assert page.get_by_text("95 % CI").count() >= 1
            assert page.locator("[data-testid=stException]").count() == 0
            settle(page)
            shot(page, "9_train_three_seeds")
            offline.check()
        except Exception:
            shot(page, "failure")
            raise
        finally:
            browser.close()
    assert (runs / "history.sqlite").exists()


def test_a_deep_link_opened_first_has_the_apps_navigation(server):
    """The first request after a start is a deep link: still app.py's sidebar, no helper pages."""
    url, _ = server
    with playwright() as p:
        browser, page, offline = browser_page(p, url, height=1200)
        try:
            page.goto(f"{url}/temperature_lab", wait_until="domcontentloaded")
            page.get_by_role("heading", name="Temperature lab", exact=True).wait_for(timeout=90_000)
            settle(page)
            nav = page.locator("[data-testid=stSidebarNav]")
            names = " | ".join(nav.inner_text().split("\n"))
            assert "Train" in names and "α × T sweep" in names, names
            for helper in ("charts", "lab", "shared", "ui", "live"):  # kdapp modules are never pages
                assert page.get_by_role("link", name=helper, exact=True).count() == 0, names
            assert page.get_by_text("This session").count() == 1  # app.py's session box
            shot(page, "deep_link_first")
            offline.check()
        finally:
            browser.close()


def wait_text(page, text: str, timeout_s: float) -> float:
    """Seconds until ``text`` is visible on the page."""
    t0 = time.perf_counter()
    page.get_by_text(text).first.wait_for(timeout=timeout_s * 1000)
    return time.perf_counter() - t0


def test_a_long_session_stays_responsive_and_presets_load(server):
    """Five runs and a sweep in one session, every preset clicked, then one more run: its panel
    shows within 2 s of Start and Stop takes within 2 s (issue 14)."""
    from kdapp import ui
    from kdapp import lab

    url, _ = server
    with playwright() as p:
        browser, page, offline = browser_page(p, url, height=1400)
        try:
            page.goto(f"{url}/?epochs=2&teacher_epochs=2&samples=200&seeds=1", wait_until="domcontentloaded")
            page.get_by_text("Will run:").wait_for(timeout=90_000)
            settle(page)
            last = 0
            for _ in range(5):
                page.locator(".st-key-start button").click()
                # "Run N finished" with a new N (a multi-seed start files one run per seed)
                page.wait_for_function(f"({FINISHED_RUN})() > {last}", timeout=120_000)
                last = page.evaluate(FINISHED_RUN)
                settle(page)
            # a sweep in the same session: two cells on two moons
            page.get_by_role("link", name="α × T sweep", exact=True).click()
            page.get_by_role("heading", name="α × T sweep", exact=True).wait_for(timeout=30_000)
            settle(page)
            for key, value in (("sweep_teacher_params", "16"), ("sweep_student_params", "4")):
                box = page.locator(f".st-key-{key} input")
                box.fill(value)
                box.press("Enter")
                settle(page)
            page.get_by_role("combobox", name="Dataset").click()
            page.get_by_role("option", name="Two moons").click()
            settle(page)
            for key in ("sweep_teacher", "sweep_student"):
                page.locator(f".st-key-{key}").get_by_role("combobox").click()
                page.get_by_role("option", name="mlp", exact=True).click()
                settle(page)
            for key in ("sweep_teacher_epochs", "sweep_epochs"):
                box = page.locator(f".st-key-{key} input")
                box.fill("2")
                box.press("Enter")
                settle(page)
            box = page.locator(".st-key-sweep_subset input")
            box.fill("0")
            box.press("Enter")
            settle(page)
            start = page.get_by_role("button", name=re.compile(r"Start the sweep \(\d+ cells\)"))
            start.click()
            wait_text(page, "Sweep finished", 300)
            settle(page)
            shot(page, "long_1_sweep")

            # every preset, clicked in this used session, sets exactly its run
            for preset in lab.presets():
                train_links = [x for x in preset.links if x.page == "pages/train.py"]
                for link, cfg in zip(train_links, preset.configs):
                    page.get_by_role("link", name="Presets & tour", exact=True).click()
                    page.get_by_role("link", name=link.label, exact=True).click()
                    page.get_by_text("Will run:").wait_for(timeout=30_000)
                    settle(page)
                    assert "link=1" not in page.url
                    want = " ".join(ui.config_summary(cfg).split())
                    assert want in will_run(page), (link.label, will_run(page), want)
                for link in preset.links:
                    if link.page != "pages/sweep.py":
                        continue
                    page.get_by_role("link", name="Presets & tour", exact=True).click()
                    page.get_by_role("link", name=link.label, exact=True).click()
                    cells = len(link.params["alphas"]) * len(link.params["temps"])
                    page.get_by_role("heading", name="α × T sweep", exact=True).wait_for(timeout=30_000)
                    settle(page)
                    if not page.get_by_role("button", name=re.compile("Start the sweep")).is_visible():
                        page.get_by_text("Set up the grid").click()  # folded after a sweep
                    page.get_by_role("button", name=f"Start the sweep ({cells} cells)").wait_for(timeout=30_000)
                    settle(page)
                    assert page.locator(".st-key-sweep_epochs input").input_value() == link.params["epochs"]
                    assert link.params["lr"] in page.locator(".st-key-sweep_lr").inner_text()
            shot(page, "long_2_after_presets")

            # one more run (the last preset's setup: Fashion-MNIST, seconds per epoch)
            page.get_by_role("link", name="Train", exact=True).click()
            page.get_by_text("Will run:").wait_for(timeout=30_000)
            settle(page)
            t0 = time.perf_counter()
            page.locator(".st-key-start button").click()
            page.locator("[data-testid=stProgress]").filter(has_text="phase 1 of").wait_for(timeout=30_000)
            panel_s = time.perf_counter() - t0
            page.wait_for_timeout(1500)  # let it train a little
            t0 = time.perf_counter()
            page.locator(".st-key-stop").get_by_role("button", name="Stop").first.click()
            page.get_by_text("stopped").first.wait_for(timeout=30_000)
            stop_s = time.perf_counter() - t0
            shot(page, "long_3_stopped")
            print(f"\nafter 5 runs and a sweep: Start -> panel {panel_s:.2f} s, Stop -> stopped {stop_s:.2f} s "
                  f"(load {os.getloadavg()[0]:.1f})")
            assert panel_s < 2.0 and stop_s < 2.0
            offline.check()
        except Exception:
            shot(page, "failure_long")
            raise
        finally:
            browser.close()
