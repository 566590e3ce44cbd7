"""Helpers for driving the dashboard through ``streamlit.testing.v1.AppTest`` (imported as
``tests.apptest``); the fixtures that go with them (``runs_dir``, thread count) are in conftest."""
from __future__ import annotations

import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
# the folder app.py's st.Page entries point into (see app.py)
PAGES = next(d for d in ("app_pages", "pages") if (ROOT / d / "train.py").is_file())
QUICK = {"epochs": "2", "teacher_epochs": "2", "samples": "200", "seeds": "1"}  # a run of about a second


def app(query: dict | None = None) -> AppTest:
    """app.py in a fresh session with ``query`` as its URL parameters, after its first run."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query or {})
    return at.run()


def ok(at: AppTest) -> AppTest:
    """``at`` after asserting its last run raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def pending(at: AppTest) -> dict:
    """The config the Train page would launch (as a dict)."""
    return at.session_state["kd_pending_config"]


def figures(at: AppTest) -> list[dict]:
    """Plotly figure specs of every chart on the page, read from the element protos."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def train_until_done(at: AppTest, timeout: float = 60) -> AppTest:
    """Press Start on the Train page and rerun until the comparison table is drawn."""
    at.button(key="start").click().run()
    ok(at)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if at.get("arrow_data_frame") or any("finished" in (p.proto.text or "") for p in at.get("progress")):
            if at.dataframe:
                return ok(at)
        time.sleep(0.2)
        at.run()
    raise AssertionError(f"the run did not finish in {timeout} s: {[e.value for e in at.error]}")
