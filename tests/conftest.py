"""Fixtures shared by the test files. Shared plain helpers live in ``tests/helpers.py``,
``tests/apptest.py`` (AppTest), ``tests/browser.py`` (Chromium) and ``tests/idx.py``."""
import hashlib
import os
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest
import torch

from tests.helpers import need

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Tests marked slow here rather than with @pytest.mark.slow in their file, because those files were
# being reshaped by their owners when the markers came in (issue 11); move each mark onto its test
# and drop the entry. A name that no longer matches a collected test is reported as a warning.
SLOW_BY_NAME = {
    "test_live.py": {"test_concurrent_run_limit",
                     "test_workers_pause_while_a_page_is_computed_and_never_for_long",
                     "test_a_run_keeps_training_while_pages_are_computed",
                     "test_probe_costs_time_the_trainers_own_steps_and_leave_the_run_untouched"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    files = {}
    for item in items:
        names = SLOW_BY_NAME.get(item.path.name)
        if names is not None:
            files[item.path.name] = item.path
            if item.originalname in names:
                item.add_marker(pytest.mark.slow)
    for name, path in files.items():
        source = path.read_text()
        for gone in sorted(n for n in SLOW_BY_NAME[name] if f"def {n}(" not in source):
            warnings.warn(f"conftest SLOW_BY_NAME: no test {gone} in {name}", stacklevel=1)


@pytest.fixture
def store(tmp_path):
    from kdcore import RunStore

    return RunStore(tmp_path / "runs")


@pytest.fixture
def fashion_mnist_installed():
    from kdcore.data import DEBIAN_FASHION_MNIST

    need(os.path.isdir(DEBIAN_FASHION_MNIST),
         "Debian package dataset-fashion-mnist is not installed", "KD_REQUIRE_FMNIST")


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The dashboard sets torch's process-wide thread count; give other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty run history for the dashboard (``KD_RUNS_DIR``), with Streamlit's caches cleared
    before and after so one test's session run cannot leak into the next."""
    import streamlit as st

    from kdapp.live import active_runs

    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    st.cache_resource.clear()  # releases any session holder left over (stopping its run)
    st.cache_data.clear()
    yield tmp_path / "runs"
    st.cache_resource.clear()
    t0 = time.perf_counter()
    while active_runs() and time.perf_counter() - t0 < 10:
        time.sleep(0.05)


def _tree_digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def server(tmp_path):
    """`streamlit run app.py` on a free port with an empty run history; yields (URL, runs folder).

    On teardown: the shipped config kept usage metrics off, and the test left ``assets/`` (the
    README's screenshot) as it found it (screenshots belong in test-artifacts/)."""
    from tests.browser import ROOT, free_port

    assets = _tree_digest(ROOT / "assets")
    port = free_port()
    env = {**os.environ, "KD_RUNS_DIR": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # the shipped .streamlit/config.toml
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
    # the shipped config turns Streamlit's usage metrics off
    assert "Collecting usage statistics" not in (tmp_path / "streamlit.log").read_text()
    assert _tree_digest(ROOT / "assets") == assets, "a browser test changed assets/ (write to test-artifacts/)"
