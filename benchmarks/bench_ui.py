"""Dashboard benchmark (issue 3's numbers), in a real browser. Prints a markdown table.

    python benchmarks/bench_ui.py              # 5 starts, 20 widget changes (~2 min on 2 cores)
    python benchmarks/bench_ui.py --starts 3 --changes 10

1. ``streamlit run app.py`` -> ``/_stcore/health`` answers: launch to first "ok" (target < 10 s).
2. Start -> first loss point: click Start on the two-moons set, wait until the loss chart in the
   page (the Plotly graph div) holds a point; the run is then stopped (target < 2 s).
3. Widget change while training: with a long run training, move the T slider by one step
   with the keyboard and wait until the page shows the new value in the "Next run" line, i.e.
   the full rerun reached the browser (target median < 300 ms). The same with no run
   training is printed for comparison: the difference is what training costs the page.
   The server's share alone (the script rerun in-process with AppTest) is printed too.
4. ``--gc``: why a long session froze (issue 14): the full garbage collection Streamlit ran after
   every script run, and what it did to a training thread.

Needs Debian's Chromium (/usr/bin/chromium or $KD_CHROMIUM) and the playwright package.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LOSS_POINTS = """() => {
  const counts = [...document.querySelectorAll('.js-plotly-plot')]
    .filter(d => d.layout && d.layout.title && String(d.layout.title.text).includes('Total training loss'))
    .map(g => g.data.reduce((n, t) => n + ((t.x || []).length), 0));
  return counts.length ? Math.max(...counts) : -1;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(runs_dir: str) -> tuple[subprocess.Popen, str, float]:
    """Start the app; return the process, its URL and seconds from launch to a healthy answer."""
    port = free_port()
    env = {**os.environ, "KD_RUNS_DIR": runs_dir}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < 60:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("streamlit did not answer its health check within 60 s")


def settle(page) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=stSkeleton]')", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)


def wait_stopped(page) -> None:
    page.get_by_text("stopped by request").first.wait_for(timeout=60_000)
    settle(page)


def start_to_first_point(page, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        # a fresh browser session each time, so no earlier run's points are on the chart
        page.goto(f"{url}/?epochs=1000", wait_until="domcontentloaded")
        page.get_by_text("Will run:").wait_for(timeout=120_000)
        settle(page)
        page.wait_for_timeout(1000)
        assert page.evaluate(LOSS_POINTS) == 0  # the empty chart is drawn before any run
        t0 = time.perf_counter()
        page.locator(".st-key-start button").click()
        page.wait_for_function(f"({LOSS_POINTS})() > 0", timeout=30_000, polling=10)
        out.append(time.perf_counter() - t0)
        page.locator(".st-key-stop button").click()
        wait_stopped(page)
    return out


def move_t(page, n: int, label: str) -> list[float]:
    """Seconds from a keyboard step of the T slider to the new T in the page's summary line."""
    thumb = page.locator(".st-key-T input[type=range]")
    out = []
    for i in range(n):
        # exact patterns: a plain "T=4 " would also match "T=4.5" (Playwright trims spaces)
        key, want = (("ArrowRight", re.compile(r"T=4\.5 α")) if i % 2 == 0
                     else ("ArrowLeft", re.compile(r"T=4 α")))
        page.wait_for_timeout(400)  # between changes, as a person would
        thumb.focus()
        t0 = time.perf_counter()
        thumb.press(key)
        page.locator("p", has_text=label).filter(has_text=want).wait_for(timeout=30_000)
        out.append(time.perf_counter() - t0)
    return out


def rerun_idle_and_training(page, url: str, n: int) -> tuple[list[float], list[float]]:
    page.goto(f"{url}/?epochs=1000&teacher_epochs=1000", wait_until="domcontentloaded")
    page.get_by_text("Will run:").wait_for(timeout=120_000)
    settle(page)
    idle = move_t(page, n, "Will run:")
    page.locator(".st-key-start button").click()
    page.wait_for_function(f"({LOSS_POINTS})() > 0", timeout=30_000)
    page.wait_for_timeout(1500)
    busy = move_t(page, n, "Next run:")
    page.locator(".st-key-stop button").click()
    wait_stopped(page)
    return idle, busy


def script_rerun(runs_dir: str, n: int) -> tuple[list[float], list[float]]:
    """Server side only: AppTest reruns the Train page after a T change, idle then training."""
    os.environ["KD_RUNS_DIR"] = runs_dir
    sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params.update({"epochs": "1000", "teacher_epochs": "1000"})
    at.run()

    def changes() -> list[float]:
        out = []
        for i in range(n):
            at.slider(key="T").set_value(4.5 if i % 2 == 0 else 4.0)
            t0 = time.perf_counter()
            at.run()
            out.append(time.perf_counter() - t0)
        return out

    idle = changes()
    at.button(key="start").click().run()
    time.sleep(1)
    busy = changes()
    at.button(key="stop").click().run()
    return idle, busy


def gc_starvation(runs_dir: str, seconds: float = 4.0) -> None:
    """Why a long session froze (issue 14): Streamlit's gc.collect(2) after every script run.

    Loads every page in-process (AppTest), counts the objects a full collection walks, times it,
    then measures a training thread's steps per second while the main thread collects every
    0.5 s (what fragments polling twice a second cost with ``runner.postScriptGC`` on) against
    the same with the startup objects frozen (app.py's ``gc.freeze()``) and with no collection.
    """
    import gc
    import threading

    import torch
    from streamlit.testing.v1 import AppTest

    os.environ["KD_RUNS_DIR"] = runs_dir
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    for name in ("temperature_lab", "sweep", "runs", "soft_targets", "boundaries", "presets"):
        at.switch_page(f"pages/{name}.py").run()
    gc.unfreeze()  # app.py froze them: measure what Streamlit's default would walk

    def collect_ms(n: int = 5) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            gc.collect(2)
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def steps_per_s(collect: bool) -> float:
        model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        opt = torch.optim.Adam(model.parameters())
        x, y = torch.randn(32, 2), torch.randint(2, (32,))
        done, stop = [0], threading.Event()

        def train() -> None:
            while not stop.is_set():
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                done[0] += 1

        t = threading.Thread(target=train)
        t0 = time.perf_counter()
        t.start()
        while time.perf_counter() - t0 < seconds:
            if collect:
                gc.collect(2)
            time.sleep(0.5)
        stop.set()
        t.join()
        return done[0] / (time.perf_counter() - t0)

    objects = len(gc.get_objects())
    full = collect_ms()
    busy = steps_per_s(True)
    gc.freeze()
    frozen = collect_ms()
    busy_frozen = steps_per_s(True)
    quiet = steps_per_s(False)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ngc after every script run, every page loaded in-process ({os.cpu_count()} cores, load {load})\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| objects a full collection walks | {objects:,} |")
    print(f"| gc.collect(2), Streamlit's post-run default | {full:.0f} ms median of 5 |")
    print(f"| gc.collect(2) after gc.freeze() | {frozen:.1f} ms median of 5 |")
    print(f"| training steps/s, gc.collect(2) every 0.5 s | {busy:.0f} |")
    print(f"| training steps/s, same after gc.freeze() | {busy_frozen:.0f} |")
    print(f"| training steps/s, no collections | {quiet:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=5, help="Start -> first point repeats")
    ap.add_argument("--changes", type=int, default=20, help="widget changes while training")
    ap.add_argument("--gc", action="store_true", help="only the garbage-collection starvation figures")
    args = ap.parse_args()
    if args.gc:
        with tempfile.TemporaryDirectory() as runs:
            gc_starvation(runs)
        return
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as runs:
        health = []
        for _ in range(3):  # cold launches: the server answers before any page imports torch
            proc, url, secs = launch(runs)
            health.append(secs)
            proc.terminate()
            proc.wait(10)
        s_idle, s_busy = script_rerun(runs, args.changes)
        proc, url, _ = launch(runs)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 2150})
                first = start_to_first_point(page, url, args.starts)
                idle, rerun = rerun_idle_and_training(page, url, args.changes)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)

    ms = [x * 1000 for x in rerun]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nKD Playground dashboard, {os.cpu_count()} CPU core(s), Chromium headless, "
          f"load average {load} at the end\n")
    print("| measure | target | result |")
    print("|---|---|---|")
    print(f"| `streamlit run app.py` -> health check answers | < 10 s | "
          f"{statistics.median(health):.2f} s median of {len(health)} (max {max(health):.2f} s) |")
    print(f"| Start -> first point on the loss chart (two moons) | < 2 s | "
          f"{statistics.median(first):.2f} s median of {len(first)} (max {max(first):.2f} s) |")
    for what, xs, target in (("while training", ms, "median < 300 ms"),
                             ("no run (for comparison)", [x * 1000 for x in idle], ""),
                             ("server side only (AppTest), while training", [x * 1000 for x in s_busy], ""),
                             ("server side only (AppTest), no run", [x * 1000 for x in s_idle], "")):
        print(f"| widget change -> page updated, {what} | {target} | "
              f"{statistics.median(xs):.0f} ms median of {len(xs)} (p90 "
              f"{statistics.quantiles(xs, n=10)[-1]:.0f} ms, max {max(xs):.0f} ms) |")


if __name__ == "__main__":
    main()
