"""Streamlit glue shared by the pages: this session's run, the run history, cached look-ups.

Not a page (the leading underscore; app.py lists the pages). Everything heavy is in kdcore.
"""
from __future__ import annotations

import gc
import threading
import uuid

import streamlit as st
import torch

import kdcore
from kdapp import ui
from kdapp.live import LiveResume, LiveRun, LiveSeeds, RunLimitReached, worker_threads
from kdcore.history.store import default_runs_dir

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
        self.sweep = None  # a kdapp.sweep_run.SweepRun started from the α × T sweep page
        self.last_run_id: int | None = None
        self._lock = threading.Lock()
        self.owner = uuid.uuid4().hex  # filed with this session's runs: on a shared server it deletes only those

    def owned(self, store: kdcore.RunStore) -> kdcore.RunStore:
        """The history, filing the runs started through it as this session's."""
        return kdcore.RunStore(store.root, owner=self.owner)

    def start(self, cfg: kdcore.RunConfig | None, store: kdcore.RunStore, seeds: list[int] | None = None, *,
              resume_id: int | None = None) -> LiveRun:
        """Start ``cfg`` (over ``seeds``, one teacher for all, when more than one), or resume the
        interrupted or stopped run ``resume_id``, unless this session already trains (one run per
        session).

        Raises:
            RunLimitReached: this session or the server is at its limit; the message says why.
        """
        with self._lock:
            if self.running:
                raise RunLimitReached("This session is already training a run or a sweep; stop it "
                                      "or wait for it to finish before starting another.")
            if resume_id is not None:
                live = LiveResume(resume_id, store=self.owned(store), max_points=MAX_POINTS)
            elif seeds and len(seeds) > 1:
                live = LiveSeeds(cfg, seeds, store=self.owned(store), max_points=MAX_POINTS)
            else:
                live = LiveRun(cfg, store=self.owned(store), max_points=MAX_POINTS)
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


_frozen = False


def freeze_startup_objects() -> None:
    """Move what is alive after the first page run (torch, plotly, pandas, the app's modules)
    out of the garbage collector's sight, once per process.

    A full collection walks every object; with these libraries loaded that took 0.5 s with the GIL
    held on a busy 2-core machine, during which a training thread cannot step. Frozen objects are
    never collected, which costs nothing for modules that live as long as the server anyway.
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


# --------------------------------------------------------------------------------------------
# Each page's settings: widget keys and URL parameters


LINK = "link"  # a one-shot URL parameter on a link that sets a page up (see Scope.adopt_link)
URL = "query-params"  # the `bind` value that keeps a widget in the address


class Scope:
    """One page's namespace for widget keys and the URL parameters bound to them.

    A page creates every key through its scope, ``K = sh.SCOPES["temperature_lab"]`` then
    ``st.slider(..., key=K("T"), bind=sh.URL)``, which puts ``?temp_T=`` in the address. Prefixes
    differ from page to page, so no widget reads another page's value (Streamlit keeps URL-bound
    values in the session across pages). The Train page is the app's root and keeps bare names.
    """

    def __init__(self, page: str, prefix: str) -> None:
        self.page = page  # the page file's stem, pages/<page>.py
        self.prefix = prefix
        self.names: set[str] = set()  # every name this page has keyed, for adopt_link

    def __call__(self, name: str) -> str:
        self.names.add(name)
        return self.prefix + name

    def link(self, values: dict) -> dict:
        """URL parameters of a link that sets this page up: ``values`` by name, the rest at defaults."""
        return {**{self.prefix + k: v for k, v in values.items()}, LINK: "1"}

    def adopt_link(self) -> None:
        """On a link made by :meth:`link`: forget this page's remembered settings first.

        Streamlit seeds a URL-bound widget from the address only the first time it is drawn in a
        session; later its remembered value wins and an absent parameter leaves it as it was. A
        link must set every field of its setup, in a fresh session and in a used one, so each of
        this page's values is forgotten and read again from the address (absent = default).
        """
        if LINK not in st.query_params:
            return
        del st.query_params[LINK]
        for name in self.names:
            st.session_state.pop(self.prefix + name, None)


SCOPES = {s.page: s for s in (
    Scope("train", ""), Scope("soft_targets", "soft_"), Scope("runs", "runs_"),
    Scope("guide", "guide_"), Scope("presets", "presets_"), Scope("temperature_lab", "temp_"),
    Scope("boundaries", "bound_"), Scope("dark_knowledge", "dark_"), Scope("omitted_class", "omit_"),
    Scope("sweep", "sweep_"))}


def open_page(page: str) -> Scope:
    """Called first by every page: the app's navigation around it, a link's setup adopted.

    A folder named ``pages/`` beside app.py makes Streamlit start in its legacy mode: until app.py
    has run once, a deep link runs the page alone, with an automatic sidebar that lists the helper
    modules too. That first run is turned into a rerun of app.py, which owns navigation.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:  # what st.navigation sets, set before app.py could run
        PagesManager.uses_pages_directory = False
        st.rerun()
    scope = SCOPES[page]
    scope.adopt_link()
    return scope


def runs_dir() -> str:
    return str(default_runs_dir())


@st.cache_resource(show_spinner=False)
def _store(root: str) -> kdcore.RunStore:
    return kdcore.RunStore(root)


def store() -> kdcore.RunStore:
    """The run history at ``$KD_RUNS_DIR`` (default ./runs); an unusable one stops the page with its message."""
    from kdcore.errors import StoreUnavailable

    try:
        return _store(runs_dir())
    except StoreUnavailable as e:  # a file, a read-only or full folder: what to do, not a traceback
        st.error(str(e), icon=":material/database:")
        st.stop()


@st.cache_data(show_spinner="Measuring the model…", max_entries=64)
def model_profile(name: str, params_json: str, in_shape: tuple, num_classes: int, batch: int) -> dict:
    """Cached :func:`kdapp.ui.profile_dict` (params, size, latency)."""
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


def eta_text(eta_s: float | None) -> str:
    """"about 2 min 05 s left", "under a second left" (not "about 0 s"), or what is happening
    while no time can be estimated yet."""
    if eta_s is None:
        return "estimating the time left"
    return "under a second left" if eta_s < 0.5 else f"about {fmt_seconds(max(eta_s, 1.0))} left"


def stop_button(job, key: str) -> None:
    """Stop for a run or sweep, drawn outside the auto-refreshing fragments.

    A button inside a fragment that redraws every second can lose a click that lands while it
    is redrawn (the first click seemed ignored); out here it is drawn once per page run.
    """
    st.button("Stop", key=key, on_click=_stop_and_wait, args=(job,), icon=":material/stop:",
              disabled=job.stop_event.is_set(), width="stretch",
              help="Stops between two training steps; what was trained so far is kept.")


def _stop_and_wait(job) -> None:
    """Button callback: ask the job to stop and give it a moment (it stops within a step), so the
    page run this click starts already shows it stopped instead of a poll later."""
    job.stop()
    job.join(STOP_WAIT_S)


STOP_WAIT_S = 1.0


def sidebar_status() -> None:
    """The sidebar block every page shares: this session's run and the server's load."""
    holder = session_runs()
    with st.sidebar:
        st.caption("This session")
        _sidebar_run(holder)
        st.caption(f"History in `{runs_dir()}`")


def _sidebar_run(holder: SessionRuns) -> None:
    from kdapp.live import active_runs, max_runs

    # The jobs training when the page was drawn: the page is redrawn once when they have all
    # ended. (Waiting on the last *run* instead, while a sweep trained after a finished run,
    # redrew the page again and again: the sweep paused for every redraw and the page never
    # finished drawing: the long-session freeze of issue 14.)
    training = [job for job in (holder.live, holder.sweep) if job is not None and job.running]

    @st.fragment(run_every=4 * POLL_S if training else None)
    def line() -> None:
        sweep = holder.sweep
        snap = holder.live.snapshot() if holder.live is not None else None
        if sweep is not None and sweep.running:
            s = sweep.snapshot()
            st.write(f"Training a sweep: {len(s.cells)} of {len(s.alphas) * len(s.temps)} cells, "
                     f"{s.progress:.0%}")
        elif snap is None:
            st.write("No run yet.")
        else:
            rid = f"run {snap.run_id}" if snap.run_id is not None else "run"
            if snap.running:
                st.write(f"Training {rid}: {snap.phase}, {snap.progress:.0%}")
            else:
                st.write(f"Last {rid}: {snap.status}")
        st.caption(f"Server: {active_runs()} of {max_runs()} training slot(s) in use")
        if training and not any(job.running for job in training):  # redraw once with the result
            st.rerun(scope="app")

    line()


__all__ = ["Scope", "SCOPES", "open_page", "LINK", "URL", "SessionRuns", "session_runs", "store",
           "freeze_startup_objects", "runs_dir", "model_profile", "models_for", "load_data", "run_models", "fmt_seconds", "eta_text", "stop_button",
           "sidebar_status", "RunLimitReached", "POLL_S"]
