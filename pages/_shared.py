"""Streamlit glue shared by the pages: this session's run, the run history, cached look-ups.

Not a page (the leading underscore; app.py lists the pages). Everything heavy is in kdcore.
"""
from __future__ import annotations

import threading

import streamlit as st
import torch

import kdcore
from kdcore import ui_support as ui
from kdcore.live import LiveRun, RunLimitReached, worker_threads
from kdcore.store import default_runs_dir

POLL_S = 0.5  # how often a live view polls while a run trains (the Train page has its own cadences)
MAX_POINTS = 200  # per phase and series: enough for a smooth curve, cheap for the browser

# The server's own torch work (profiles, soft targets) gets the same share of the cores as a
# training worker: OpenMP threads that outnumber the free cores spin and slow every call down
# (a 42-parameter MLP measured 20 ms per batch instead of 0.03 ms on 2 busy cores).
torch.set_num_threads(worker_threads())


class SessionRuns:
    """The run of one browser session; lives in a session-scoped resource cache.

    Switching pages keeps it (the cache outlives page scripts); closing the tab releases the
    cache entry, whose ``on_release`` stops the run.
    """

    def __init__(self) -> None:
        self.live: LiveRun | None = None
        self.sweep = None  # a kdcore.sweep.SweepRun started from the α × T sweep page
        self.last_run_id: int | None = None
        self._lock = threading.Lock()

    def start(self, cfg: kdcore.RunConfig, store: kdcore.RunStore) -> LiveRun:
        """Start ``cfg`` unless this session already trains (one run per session).

        Raises:
            RunLimitReached: this session or the server is at its limit; the message says why.
        """
        with self._lock:
            if self.running:
                raise RunLimitReached("This session is already training a run or a sweep; stop it "
                                      "or wait for it to finish before starting another.")
            live = LiveRun(cfg, store=store, max_points=MAX_POINTS)
            live.start()
            self.live = live
            return live

    @property
    def running(self) -> bool:
        return ((self.live is not None and self.live.running)
                or (self.sweep is not None and self.sweep.running))

    def current_run_id(self) -> int | None:
        if self.live is not None and self.live.run_id is not None:
            return self.live.run_id
        return self.last_run_id

    def close(self) -> None:
        for job in (self.live, self.sweep):
            if job is not None:
                job.close()


@st.cache_resource(scope="session", on_release=SessionRuns.close, show_spinner=False)
def session_runs() -> SessionRuns:
    """This browser session's run holder (created on first use, released when the tab closes)."""
    return SessionRuns()


def runs_dir() -> str:
    return str(default_runs_dir())


@st.cache_resource(show_spinner=False)
def _store(root: str) -> kdcore.RunStore:
    return kdcore.RunStore(root)


def store() -> kdcore.RunStore:
    """The run history at ``$KD_RUNS_DIR`` (default ./runs)."""
    return _store(runs_dir())


@st.cache_data(show_spinner="Measuring the model…", max_entries=64)
def model_profile(name: str, params_json: str, in_shape: tuple, num_classes: int, batch: int) -> dict:
    """Cached :func:`kdcore.ui_support.profile_dict` (params, size, latency)."""
    import json

    return ui.profile_dict(name, json.loads(params_json), in_shape, num_classes, batch)


@st.cache_data(show_spinner=False)
def models_for(dataset: str) -> list[str]:
    return ui.models_for(dataset)


@st.cache_resource(show_spinner="Loading the dataset…", max_entries=4)
def load_data(data_json: str):
    """A DataBundle, shared read-only by every session (keyed by the DataConfig JSON)."""
    import json

    return kdcore.data.load_data(kdcore.DataConfig(**json.loads(data_json)))


@st.cache_resource(show_spinner="Loading the run's models…", max_entries=8)
def run_models(root: str, run_id: int):
    """(config, {phase: model}) of a stored run; read-only, eval mode."""
    return ui.run_models(_store(root), run_id)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "estimating…"
    s = max(0, int(round(s)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def sidebar_status() -> None:
    """The sidebar block every page shares: this session's run and the server's load."""
    holder = session_runs()
    with st.sidebar:
        st.caption("This session")
        _sidebar_run(holder)
        st.caption(f"History in `{runs_dir()}`")


def _sidebar_run(holder: SessionRuns) -> None:
    from kdcore.live import active_runs, max_runs

    polling = holder.running

    @st.fragment(run_every=4 * POLL_S if polling else None)
    def line() -> None:
        snap = holder.live.snapshot() if holder.live is not None else None
        if snap is None:
            st.write("No run yet.")
        else:
            rid = f"run {snap.run_id}" if snap.run_id is not None else "run"
            if snap.running:
                st.write(f"Training {rid}: {snap.phase}, {snap.progress:.0%}")
            else:
                st.write(f"Last {rid}: {snap.status}")
        st.caption(f"Server: {active_runs()} of {max_runs()} training slot(s) in use")
        if polling and snap is not None and snap.done:  # redraw the page once with the result
            st.rerun(scope="app")

    line()


__all__ = ["SessionRuns", "session_runs", "store", "runs_dir", "model_profile", "models_for",
           "load_data", "run_models", "fmt_seconds", "sidebar_status", "RunLimitReached", "POLL_S"]
