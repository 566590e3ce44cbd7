"""One run in a background thread, read through a locked snapshot (the dashboard's worker).

:class:`LiveRun` calls :func:`kdcore.train.experiment.run_experiment` in a daemon thread with a
callback that folds each event into its state under a lock; a page copies that state with
:meth:`LiveRun.snapshot` as often as it likes and never touches the training objects. Chart
series keep every k-th point and double k when full, so a long run stays at a bounded number
of points per series. A process-wide limit (``$KD_MAX_RUNS``, default 2) caps how many runs
train at once across all browser sessions. Workers are polite to the web server they share a
process with: each uses its share of the cores (:func:`worker_threads`, which sets torch's
process-wide thread count) and pauses between steps while a page is computed
(:data:`foreground`). Nothing here imports Streamlit.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from kdcore.config import RunConfig, to_dict
from kdcore.events import EpochEnd, PhaseEnd, PhaseStart, RunEnd, SeedStart, StepEnd
from kdcore.train.experiment import RunResult, run_experiment
from kdcore.history.store import RunStore
from kdcore.lab.teaching import LAB_RECORDERS

__all__ = ["Worker", "LiveRun", "LiveSeeds", "seed_phase", "split_phase", "SEED_SEP", "LiveSnapshot", "Series", "RunLimitReached", "max_runs", "active_runs",
           "active_run_ids", "probe_costs", "PhaseCost", "EVAL_BATCH", "PROFILE_BATCHES", "claim_slot", "release_slot", "worker_threads", "foreground", "MAX_RUNS_ENV", "DEFAULT_MAX_RUNS"]

MAX_RUNS_ENV = "KD_MAX_RUNS"
DEFAULT_MAX_RUNS = 2  # two CPU-bound runs already share a small machine's cores
DONE = ("completed", "stopped", "diverged", "failed")

_active_lock = threading.Lock()
_active: set["LiveRun"] = set()


class RunLimitReached(RuntimeError):
    """Too many runs are training in this process; the message says what to do."""


def max_runs() -> int:
    """The concurrent-run limit: ``$KD_MAX_RUNS`` if it is a positive integer, else 2."""
    try:
        n = int(os.environ.get(MAX_RUNS_ENV, DEFAULT_MAX_RUNS))
    except ValueError:
        return DEFAULT_MAX_RUNS
    return n if n >= 1 else DEFAULT_MAX_RUNS


def worker_threads() -> int:
    """Intra-op threads for a training worker: the cores divided by the run limit, at least 1."""
    return max(1, (os.cpu_count() or 1) // max_runs())


class _Foreground:
    """Interactive work first: while a page is computed, training workers pause between steps.

    A training step holds the GIL and a core; a page rerun is many small steps that each wait
    for both, so on a small machine a run in the background makes every click slow. A page
    wraps its script in ``with foreground():``; workers call :meth:`yield_to_pages` after each
    step and wait (bounded) until no page is being computed, plus a short grace in which the
    browser draws the answer. Training loses a fraction of a second per click.
    """

    MAX_PAUSE_S = 1.0  # a worker never waits longer than this per step, whatever a page does

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Event()
        self._idle.set()
        self._until = 0.0

    @contextmanager
    def __call__(self, grace_s: float = 0.25):
        with self._lock:
            self._active += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                self._until = max(self._until, time.monotonic() + grace_s)
                if self._active == 0:
                    self._idle.set()

    def yield_to_pages(self) -> float:
        """Wait while a page is computed (and its grace); returns the seconds waited (0.0: none)."""
        t0 = time.monotonic()
        waited = not self._idle.is_set()
        if waited:
            self._idle.wait(self.MAX_PAUSE_S)
        rest = min(self._until - time.monotonic(), self.MAX_PAUSE_S - (time.monotonic() - t0))
        if rest > 0:
            time.sleep(rest)
            waited = True
        return time.monotonic() - t0 if waited else 0.0


foreground = _Foreground()


def claim_slot(holder: Any) -> None:
    """Count ``holder`` (a run or a sweep) against the process-wide limit of training jobs.

    Raises:
        RunLimitReached: ``max_runs()`` jobs already train; the message says what to do.
    """
    limit = max_runs()
    with _active_lock:
        if len(_active) >= limit:
            raise RunLimitReached(
                f"{len(_active)} run(s) are already training on this server, the most it allows "
                f"at once ({MAX_RUNS_ENV}={limit}). Wait for one to finish, or stop yours, and "
                "start again.")
        _active.add(holder)


def release_slot(holder: Any) -> None:
    """Give back the slot taken by :func:`claim_slot` (safe to call twice)."""
    with _active_lock:
        _active.discard(holder)


def active_runs() -> int:
    """How many LiveRuns are training in this process right now."""
    with _active_lock:
        return len(_active)


def active_run_ids() -> set[int]:
    """Store ids of the runs training in this process (a page must not delete those)."""
    with _active_lock:
        return {r.run_id for r in _active if r.run_id is not None}


def _planned_phases(cfg: RunConfig, store: RunStore | None = None) -> tuple[str, ...]:
    """The training phases a run goes through, in order (loaded teachers train nothing, nor does a
    teacher that a finished run in ``store`` already trained)."""
    from kdcore.train.experiment import find_trained_teacher

    trains = cfg.teacher_source == "train" and (store is None or find_trained_teacher(store, cfg) is None)
    phases = ["teacher"] if trains else []
    extra = getattr(cfg, "extra_teachers", ())
    sources = getattr(cfg, "extra_teacher_sources", ()) or ("train",) * len(extra)
    phases += [f"teacher_{i + 2}" for i, src in enumerate(sources) if src == "train"]
    return tuple(phases) + ("baseline", "distilled") + (("pseudo",) if getattr(cfg, "pseudo_arm", False) else ())


def load_with_sizes(data_cfg) -> tuple[Any, dict]:
    """(the DataBundle, the sizes an ETA plans with), loaded before a job so it is loaded once;
    (None, {}) when it cannot be loaded: the job loads it again and reports why."""
    from kdcore.data import load_data

    try:
        data = load_data(data_cfg)
    except Exception:  # noqa: BLE001  (the job's own load names the problem)
        return None, {}
    return data, {"test": len(data.y_test), "train": len(data.y_train), "val": len(data.y_val),
                  "in_shape": tuple(data.in_shape), "classes": len(data.classes)}


@dataclass(frozen=True)
class PhaseCost:
    """Measured costs of one phase's model, as the run will pay them."""

    step_s: float  # one training step through the trainer's own loop (batching, loss terms, events), work s
    forward_s: float  # eval-mode forward per sample at the evaluation batch (validation, test, cached logits)
    pre_rows: int = 0  # rows the teacher runs over before this phase trains (its cached logits)
    epoch_rows: int = 0  # labelled rows an epoch passes over (a few-labels student sees fewer)


EVAL_BATCH = 1024  # kdcore.train.trainer.predict_logits' batch: validation, test metrics and cached logits
PROFILE_BATCHES = 11  # kdcore.models.profile: 2 warm-up + 9 timed batches at the students' batch size


def work_clock() -> float:
    """The ETA's clock for costs: CPU seconds of the calling (training) thread.

    A cost read on the wall clock is stretched by whatever else the cores run at that moment, and
    on a small shared machine a short phase's first epoch is a few scheduler slices: too few to
    read the load from. The thread's own CPU time is the work, nearly whatever the load; the ETA
    turns work into wall time by :meth:`LiveRun.slowdown`, read over the last few seconds.
    """
    return time.thread_time()


SLOWDOWN_WINDOW_S = 5.0  # the ETA reads the run's share of the cores over this much recent time
CALM_S = 0.5  # after a page paused the run, this much calm before the ETA reads a pace again
PACE_STEPS = 16  # a phase's own steps (after its first) from which its pace is its newer half's mean
CLOCK_EVERY_S = 0.05  # at most one (wall, work) sample this often


def _eval_forward_s(model: torch.nn.Module, x: torch.Tensor, device) -> float:
    """Work seconds per sample of an eval forward at the evaluation batch, as predict_logits runs it."""
    from kdcore.train.trainer import predict_logits

    rows = x[:EVAL_BATCH]
    if not len(rows):
        return 0.0
    predict_logits(model, rows[:16], device=device)  # first-call allocations are not the pace
    t0 = work_clock()
    predict_logits(model, rows, device=device)
    return (work_clock() - t0) / len(rows)


def _timed_steps(distiller, view, optim, device, teacher_logits, callback, *,
                 min_steps: int = 8, min_s: float = 0.03, max_steps: int = 30) -> float:
    """Mean work seconds (:func:`work_clock`) per training step of ``distiller`` on ``view`` through
    :func:`kdcore.train.trainer.fit` itself, stopped after a few steps; the first two (warm-up) do
    not count, nor does the slowest."""
    from kdcore.train.trainer import fit

    stop = threading.Event()
    times: list[float] = []

    def on_event(ev: Any) -> None:
        if callback is not None:
            callback(ev)
        if isinstance(ev, StepEnd):
            times.append(work_clock())
            if len(times) >= max_steps or (len(times) >= min_steps and times[-1] - times[2] >= min_s):
                stop.set()

    fit(distiller, view, dataclasses.replace(optim, epochs=1), phase="probe", seed=0, device=device,
        callbacks=[on_event], stop=stop, teacher_logits=teacher_logits)
    gaps = sorted(b - a for a, b in zip(times[2:], times[3:])) or \
        sorted(b - a for a, b in zip(times, times[1:]))
    if len(gaps) > 2:
        gaps = gaps[:-1]
    if not gaps:
        raise RuntimeError("too few steps to time")
    return sum(gaps) / len(gaps)


def probe_costs(cfg: RunConfig, phases: tuple[str, ...], data, *, callback=None,
                eval_models: tuple[str, ...] = ()) -> dict[str, PhaseCost]:
    """The planned work of the phases to come, measured: what the ETA charges a phase that has not run.

    Each phase's model (an extra teacher, the student alone, the student with its distiller) is
    trained for a few steps on the data it will train on, through the trainer's own loop
    (:func:`kdcore.train.trainer.fit`, with ``callback`` receiving its events as the run's do), and
    stopped; its eval forward is timed at the evaluation batch on the validation split. Fresh
    models of the same architectures, under a forked RNG and the init lock, so the run's models
    and random streams are untouched. Cached teacher logits are stood in for by random ones of
    the same shape (a step's cost does not depend on their values).

    Args:
        cfg: the run. phases: base phase names to probe ("teacher_2", "baseline", "distilled", "pseudo").
        data: the run's DataBundle. callback: receives the probe's training events.
        eval_models: "teacher" to time the first teacher's eval forward too (when it is not trained here,
            its logits are still to be cached).
    Returns:
        {phase: PhaseCost}, plus "teacher" (forward only) when asked; a phase whose model cannot be
        built or trained here is left out (the ETA then charges it the current pace).
    """
    from kdcore.config import phase_architectures
    from kdcore.data import student_views
    from kdcore.train.experiment import without_class
    from kdcore.models import build_model, seeded_init
    from kdcore.train.trainer import Alone, make_distiller

    device = torch.device(cfg.device)
    arch = phase_architectures(cfg)
    in_shape, k = tuple(data.in_shape), len(data.classes)
    student_data = without_class(data, cfg.data.omit_class) if cfg.data.omit_class >= 0 else data
    labelled, transfer = student_views(student_data, cfg.data)
    distil_data = transfer if transfer is not None else labelled
    out: dict[str, PhaseCost] = {}
    with seeded_init(0):  # the init lock: a probe's draws never land inside another run's init
        try:
            teacher = build_model(cfg.teacher.name, in_shape=in_shape, num_classes=k, params=cfg.teacher.params)
        except Exception:  # noqa: BLE001  (best effort: the ETA then uses the current pace)
            return out
        teacher.to(device).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
        if "teacher" in eval_models:
            try:
                out["teacher"] = PhaseCost(0.0, _eval_forward_s(teacher, data.x_val if len(data.x_val)
                                                                else data.x_train, device))
            except Exception:  # noqa: BLE001
                pass
        for phase in phases:
            m = arch.get(phase)
            if m is None:
                continue
            try:
                model = build_model(m.name, in_shape=in_shape, num_classes=k, params=m.params).to(device)
                pre, t_logits = 0, None
                if phase.startswith("teacher"):
                    d, view, optim = Alone(model), data, cfg.teacher_optim
                elif phase == "distilled":
                    d, view, optim = make_distiller(cfg.loss, model, teacher, in_shape=in_shape), distil_data, cfg.optim
                    if distil_data.augment is None and (d.uses_teacher_logits_only or cfg.pseudo_arm):
                        pre = len(distil_data.x_train)
                    if distil_data.augment is None and d.uses_teacher_logits_only:
                        t_logits = torch.randn(len(distil_data.x_train), k)
                else:  # baseline and the pseudo-label arm: the student alone on the labelled samples
                    d, view, optim = Alone(model), (labelled if phase == "baseline" else distil_data), cfg.optim
                step_s = _timed_steps(d, view, optim, device, t_logits, callback)
                forward_s = _eval_forward_s(model, data.x_val if len(data.x_val) else data.x_train, device)
                out[phase] = PhaseCost(step_s, forward_s, pre, view.n_labelled)
            except Exception:  # noqa: BLE001  (a phase it cannot probe is charged the current pace)
                continue
    return out


def _work(now: float, work: float | None) -> float:
    """The work clock of an event (a test feeding events by hand gives the wall clock alone)."""
    return now if work is None else work


def _probed(probe: dict[str, PhaseCost], phase: str) -> PhaseCost | None:
    """A phase's probed cost; a seed's student phase costs what its base phase does."""
    return probe.get(split_phase(phase)[0])


def _model_of(phase: str) -> str:
    """Which model a phase trains and evaluates: a teacher's own name, or "student" (every student
    phase trains the same architecture, so one's measured eval cost is every other's)."""
    base = split_phase(phase)[0]
    return base if base.startswith("teacher") else "student"


class Series:
    """An append-only list of points that keeps every k-th one, doubling k when it is full.

    The newest point is always available through :meth:`points`, so a chart never lags the run
    by more than one event, and ``len(points()) <= max_points + 1`` however long the run is.
    """

    def __init__(self, max_points: int = 300):
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.max_points = max_points
        self.stride = 1
        self.count = 0  # points offered, kept or not
        self._kept: list[dict] = []
        self._last: dict | None = None

    def add(self, point: dict) -> None:
        self.count += 1
        self._last = point
        if (self.count - 1) % self.stride:
            return
        self._kept.append(point)
        if len(self._kept) > self.max_points:
            # kept points sit at offsets 0, k, 2k...; every other one sits at 0, 2k, 4k...
            self._kept = self._kept[::2]
            self.stride *= 2

    def points(self) -> list[dict]:
        """A copy of the kept points plus the newest point if it was not kept."""
        out = list(self._kept)
        if self._last is not None and (not out or out[-1] is not self._last):
            out.append(self._last)
        return out


@dataclass(frozen=True)
class LiveSnapshot:
    """A consistent copy of a run's state at one moment; safe to read without a lock."""

    status: str  # starting | running | completed | stopped | diverged | failed
    message: str  # the verdict when completed, else why it ended
    config: dict
    run_id: int | None
    phases: tuple[str, ...]  # the phases this run will go through, in order
    phase: str  # the phase in progress (or the last one)
    epoch: int
    epochs: int
    step: int  # steps done in the current phase
    total_steps: int  # steps of the current phase
    progress: float  # 0..1 over all planned training steps
    eta_s: float | None  # rough seconds left; None until a rate is known
    elapsed_s: float
    first_point_s: float | None  # start() -> first StepEnd, seconds
    last_step: dict | None  # newest {"phase", "x", "step", "loss", <terms>}
    steps: dict[str, list[dict]]  # phase -> [{"x": epochs done (fractional), "step", "loss", <terms>}]
    epochs_log: dict[str, list[dict]]  # phase -> [{"epoch", "train_acc", "val_acc", "train_loss", ...}]
    metrics: dict[str, dict]  # phase -> test metrics, filled as each phase ends
    version: int  # increases with every event: equal versions mean equal snapshots

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def running(self) -> bool:
        return not self.done


class Worker:
    """A job in a daemon thread that holds one of the server's training slots; a page polls it.

    Subclasses set ``thread_name`` and implement :meth:`_run` (the job, returning an object with
    ``status`` and ``message``); :meth:`_finally` runs once the job has ended, however it ended.
    """

    thread_name = "kd-worker"

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.result: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()
        self._t0 = 0.0
        self._t_end: float | None = None
        self._version = 0
        self._status, self._message = "starting", ""
        self._run_id: int | None = None

    def start(self):
        """Start the job in a daemon thread.

        Raises:
            RunLimitReached: when ``max_runs()`` jobs already train in this process.
            RuntimeError: when this job was started before.
        """
        if self._thread is not None:
            raise RuntimeError(f"this {type(self).__name__} was already started; make a new one")
        claim_slot(self)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the job to stop; it ends between two training steps with status 'stopped'."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has finished; True if it has."""
        return self._finished.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop and wait briefly: what a closing browser session calls."""
        self.stop()
        if self._thread is not None:
            self.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._finished.is_set()

    @property
    def run_id(self) -> int | None:
        """The history id of the run in progress (a page must not delete it)."""
        return self._run_id

    def _run(self) -> Any:
        raise NotImplementedError

    def _begin(self) -> None:
        """Hook: runs in the job's thread before the job."""

    def _finally(self) -> None:
        """Hook: runs after the job ended, before :meth:`join` returns."""

    def _work(self) -> None:
        try:
            # Small models gain nothing from intra-op threads, and OpenMP threads that spin while
            # the web server and other runs want the same cores make training many times slower
            # (measured: 60x on 2 busy cores). Give each job its share of the cores instead.
            torch.set_num_threads(worker_threads())
            self._begin()
            self.result = self._run()
            release_slot(self)  # before the status a page reads says the job ended
            with self._lock:  # events normally did this; the result is the last word anyway
                self._status, self._message = self.result.status, self.result.message
                if getattr(self.result, "run_id", None) is not None:
                    self._run_id = self.result.run_id
                self._version += 1
        except BaseException as e:  # the jobs do not raise, but a page must never hang
            release_slot(self)
            with self._lock:
                self._status, self._message = "failed", f"{type(e).__name__}: {e}"
                self._version += 1
        finally:
            with self._lock:
                self._t_end = time.perf_counter()
            release_slot(self)
            self._finally()
            self._finished.set()


class LiveRun(Worker):
    """A distillation run in a worker thread that a page polls.

    Args:
        cfg: the run. store: the history to record it in (None = keep nothing).
        max_points: per-series bound on chart points.
    """

    thread_name = "kd-live-run"

    def __init__(self, cfg: RunConfig, *, store: RunStore | None = None, max_points: int = 300):
        super().__init__()
        self.cfg = cfg
        self.store = store
        self.max_points = max_points
        self.result: RunResult | None = None
        self.first_point = threading.Event()  # set at the first StepEnd: a page may wait for it
        self._first_point: float | None = None
        self._phases = _planned_phases(cfg, store)
        self._planned: dict[str, int] = {}  # phase -> planned steps (estimated until it starts)
        self._done_steps: dict[str, int] = {}
        self._started: set[str] = set()
        self._phase, self._epoch, self._epochs, self._step, self._total = self._phases[0], 0, 0, 0, 0
        self._steps = {p: Series(max_points) for p in self._phases}
        self._epochs_log = {p: Series(max_points) for p in self._phases}
        self._metrics: dict[str, dict] = {}
        self._last_step: dict | None = None
        # The ETA (issue 14): the current phase at its measured pace, the phases after it at their
        # own measured or probed costs.
        self._probe: dict[str, PhaseCost] | None = None  # None until a phase's first epoch has ended
        self._probed_after: set[str] = set()  # phases whose first epoch end probed the phases after them
        self._probes = True  # False in a stand-in that only times the run's event handling
        self._data = None  # the run's DataBundle, which the probe trains a few steps on
        self._sizes: dict = {}  # split sizes, for the planned validation and test passes
        # Costs are in work seconds (work_clock: the training thread's CPU time), turned into wall
        # time by slowdown(); the countdown between events is on the wall clock.
        self._t_mark = 0.0  # wall clock at the current phase's newest step end (or epoch start)
        self._w_mark = 0.0  # work clock at the same moment
        self._clock: list[tuple[float, float]] = []  # recent (wall, work) samples, for slowdown()
        self._paused = 0.0  # wall seconds the worker paused for pages (left out of the slowdown)
        # the run's first epochs run while the page reruns after Start: until an epoch ends with
        # no pause for a page in it, what was measured is the page's start-up, and the line says
        # "estimating" (no page, no pause: the first epoch end is calm)
        self._paused_mark = 0.0  # _paused at the last epoch end
        self._calm = False  # enough has been measured with no page paused the run
        self._calm_from: float | None = None  # (wall - paused) at the newest epoch end a page paused
        # the current phase's steps after its first (warm-up) one, as running sums: the pace is read
        # from the newer half of them, as a phase's first steps (and a fresh process's first epoch)
        # run slower than its later ones
        self._loop_cum: list[float] = []
        self._first_step_s: float | None = None
        self._val_s, self._val_n = 0.0, 0  # the current phase's validation passes
        # ... after its first: a phase's first epoch warms up (its first validation pass, first
        # filing) and its end cost 1.5-3x a later one's in the 2-D runs: the steady cost is these
        self._rest_s, self._rest_n = 0.0, 0
        # what an epoch's end costs beyond its model's validation forward (filing the epoch, the
        # lab's recorders), measured where that forward was probed: a phase to come pays it too
        self._fixed_s, self._fixed_n = 0.0, 0  # ... summed over the current phase's epochs
        self._epoch_fixed = 0.0  # ... per epoch, the newest phase's mean
        self._fixed_known = False  # ... read from an epoch after a phase's first
        # what an epoch's start costs beyond a step (its batch order, the schedule, filing the
        # previous epoch's point): the first step after an epoch end less the pace; a tiny
        # student's epoch is two steps, so this is no rounding error
        self._after_epoch = False  # the next step is an epoch's first (not the phase's)
        self._start_s, self._start_n = 0.0, 0  # ... summed over the current phase's epochs
        self._epoch_start = 0.0  # ... per epoch, the newest phase's mean
        self._paces: dict[str, float] = {}  # base phase -> measured seconds per training step
        self._eval_ps: dict[str, float] = {}  # model (_model_of) -> measured eval seconds per sample
        self._finished_s: dict[str, float] = {}  # base phase -> measured seconds of its end (tests, metrics)

    def _begin(self) -> None:
        # the slowdown's first sample: loading the data and building the models (CPU work under the
        # same load) then count, so the run's first reading is not read from its first epoch alone
        with self._lock:
            self._tick(time.perf_counter() - self._paused, work_clock())

    def _run(self) -> RunResult:
        data, self._sizes = load_with_sizes(self.cfg.data)
        self._data = data
        return run_experiment(self.cfg, store=self.store, callbacks=[self._on_event],
                              stop=self.stop_event, data=data, recorders=LAB_RECORDERS)

    def _finally(self) -> None:
        self.first_point.set()  # nobody waits for a point that will never come

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, StepEnd) and self._first_point is not None:
            # outside the lock; never before the first point. A pause for a page is no slowdown of
            # the run's own: pages pause it when they are computed (most after Start, when the
            # whole page reruns), not at a pace to plan by
            self._paused += foreground.yield_to_pages()
        now, work = time.perf_counter(), work_clock()
        probe: dict[str, PhaseCost] | None = None
        if isinstance(ev, EpochEnd) and self._probes and ev.phase not in self._probed_after:
            # the phases after this one, measured now that its first epoch is done (never before the
            # first point, and again after each phase's first epoch, under the load of the moment)
            self._probed_after.add(ev.phase)
            probe = self._probe_after(ev.phase)
        probe_s, probe_w = ((time.perf_counter() - now, work_clock() - work) if probe is not None else (0.0, 0.0))
        with self._lock:
            self._version += 1
            self._tick(now + probe_s - self._paused, work + probe_w)
            if getattr(ev, "run_id", None) is not None:
                self._run_id = ev.run_id
            if isinstance(ev, StepEnd):
                self._on_step(ev, now, work)
            elif isinstance(ev, EpochEnd):
                self._epoch = ev.epoch
                self._on_epoch_end(ev, now, probe, probe_s, work, probe_w)
                self._epochs_log.setdefault(ev.phase, Series(self.max_points)).add({
                    "epoch": ev.epoch, "train_loss": ev.train_loss, "train_acc": ev.train_acc,
                    "val_loss": ev.val_loss, "val_acc": ev.val_acc, "seconds": ev.seconds,
                    **{f"term_{k}": v for k, v in ev.terms.items()}})
            elif isinstance(ev, PhaseStart):
                self._on_phase_start(ev, now, work)
            elif isinstance(ev, PhaseEnd):
                self._on_phase_end(ev, now, work)
            elif isinstance(ev, RunEnd):
                # the slot is free before any page can see the end: a page redraws once on "done",
                # and a slot released after that redraw read "2 of 2 in use" until the next one
                release_slot(self)
                self._status, self._message = ev.status, ev.message
                self._metrics.update({k: dict(v) for k, v in ev.metrics.items()})

    def _probe_after(self, phase: str) -> dict[str, PhaseCost]:
        """Probed costs of the phases after ``phase`` that no earlier phase has measured (an earlier
        seed's baseline, say), and the teacher's eval forward if its logits are still to be cached
        and no teacher phase of this run has measured it."""
        after = self._phases_after(phase)
        measured = {*self._paces, split_phase(phase)[0]}  # this phase's kind is measured as it runs
        bases = tuple(dict.fromkeys(b for b in (split_phase(p)[0] for p in after) if b not in measured))
        # the teacher's eval forward, timed once: it prices the logits a student caches, and it
        # tells a teacher phase's validation pass from the rest of its epoch's end (filing,
        # recorders), which every phase's epoch pays
        eval_models = ("teacher",) if "teacher" not in (self._probe or {}) else ()
        if self._data is None or not (bases or eval_models):
            return {}
        # the probe's steps go through a stand-in of this worker's event handling, as the run's do
        stand_in = LiveRun(self.cfg, store=None)
        stand_in._probes, stand_in._first_point = False, 0.0
        return probe_costs(self.cfg, bases, self._data, callback=stand_in._on_event, eval_models=eval_models)

    def _phases_after(self, phase: str) -> tuple[str, ...]:
        return self._phases[self._phases.index(phase) + 1:] if phase in self._phases else ()

    def carry_over(self, last: "LiveRun") -> None:
        """Take over what ``last`` (the estimator of the sweep cell before) measured and probed:
        paces, eval costs, phase ends, the slowdown's samples and the page-pause state."""
        self._probe, self._paces, self._eval_ps = last._probe, dict(last._paces), dict(last._eval_ps)
        self._clock, self._paused, self._paused_mark = list(last._clock), last._paused, last._paused
        self._calm, self._calm_from = last._calm, last._calm_from
        self._finished_s = dict(last._finished_s)
        if "distilled" in last._planned:
            self._planned["distilled"] = last._planned["distilled"]

    def _tick(self, now: float, work: float) -> None:
        """Keep a (wall, work) sample for :meth:`slowdown`: at most one per CLOCK_EVERY_S, and
        only the newest SLOWDOWN_WINDOW_S of them (plus the one before, where the window starts)."""
        c = self._clock
        if c and now - c[-1][0] < CLOCK_EVERY_S:
            return
        c.append((now, work))
        while len(c) > 2 and c[1][0] <= now - SLOWDOWN_WINDOW_S:
            del c[0]

    def slowdown(self) -> float:
        """Wall seconds per work second over the last SLOWDOWN_WINDOW_S of the run (at least 1):
        1 on an idle machine, 1.5 when the training thread got two thirds of a core, more while
        pages make it wait."""
        c = self._clock
        if len(c) < 2:
            return 1.0
        (t0, w0), (t1, w1) = c[0], c[-1]
        return max((t1 - t0) / (w1 - w0), 1.0) if w1 - w0 > 1e-3 else 1.0

    def _on_phase_start(self, ev: PhaseStart, now: float, work: float | None = None) -> None:
        self._status = "running"
        self._phase, self._epoch, self._epochs, self._step = ev.phase, 0, ev.epochs, 0
        self._total = ev.epochs * ev.steps_per_epoch
        self._t_mark, self._w_mark, self._loop_cum, self._first_step_s = now, _work(now, work), [], None
        self._val_s, self._val_n, self._rest_s, self._rest_n = 0.0, 0, 0.0, 0
        self._fixed_s, self._fixed_n = 0.0, 0
        self._after_epoch, self._start_s, self._start_n = False, 0.0, 0
        self._planned[ev.phase] = self._total
        if ev.phase not in self._phases:  # a phase this module does not know: before the students
            i = self._phases.index("baseline") if "baseline" in self._phases else len(self._phases)
            self._phases = self._phases[:i] + (ev.phase,) + self._phases[i:]
        self._started.add(ev.phase)
        # Until a phase starts its step count is unknown; estimate it from this phase's
        # training-set size (steps_per_epoch * batch_size is within one batch of it) until a probe
        # has seen the rows it trains on.
        n_train = ev.steps_per_epoch * self._batch_size(ev.phase)
        for p in self._phases:
            if p not in self._started:
                self._planned[p] = self._planned_steps(p, n_train)

    def _on_phase_end(self, ev: PhaseEnd, now: float, work: float | None = None) -> None:
        if ev.status != "completed":
            return
        self._metrics[ev.phase] = dict(ev.metrics)
        self._done_steps[ev.phase] = self._planned.get(ev.phase, 0)
        if ev.phase == self._phase and self._val_n:  # trained here: its last validation pass to its end
            self._finished_s[split_phase(ev.phase)[0]] = _work(now, work) - self._w_mark

    def _planned_steps(self, phase: str, n_train: int) -> int:
        optim = self.cfg.teacher_optim if phase.startswith("teacher") else self.cfg.optim
        c = _probed(self._probe or {}, phase)
        rows = c.epoch_rows if c is not None and c.epoch_rows else n_train
        return optim.epochs * math.ceil(rows / optim.batch_size)

    def _batch_size(self, phase: str) -> int:
        return (self.cfg.teacher_optim if phase.startswith("teacher") else self.cfg.optim).batch_size

    def _on_step(self, ev: StepEnd, now: float, work: float | None = None) -> None:
        if self._first_point is None:
            self._first_point = now - self._t0
            self.first_point.set()
        self._status = "running"
        self._phase, self._epoch, self._step, self._total = ev.phase, ev.epoch, ev.step, ev.total_steps
        self._done_steps[ev.phase] = ev.step
        work = _work(now, work)
        if self._first_step_s is None:  # the first step warms up (allocations): not the pace
            self._first_step_s = work - self._w_mark
        elif self._after_epoch:  # an epoch's first step: the pace's share of it is a step's
            self._after_epoch = False
            pace = self._step_pace()
            self._start_s += max(work - self._w_mark - (pace or 0.0), 0.0)
            self._start_n += 1
            self._epoch_start = self._start_s / self._start_n
        else:
            self._loop_cum.append((self._loop_cum[-1] if self._loop_cum else 0.0) + work - self._w_mark)
        self._t_mark, self._w_mark = now, work
        spe = ev.total_steps / max(self._epochs, 1) if self._epochs else ev.total_steps
        point = {"phase": ev.phase, "x": ev.step / spe if spe else float(ev.epoch), "step": ev.step,
                 "loss": ev.loss, **ev.terms}
        self._last_step = point
        self._steps.setdefault(ev.phase, Series(self.max_points)).add(point)

    def _on_epoch_end(self, ev: EpochEnd, now: float, probe: dict[str, PhaseCost] | None = None,
                      probe_s: float = 0.0, work: float | None = None, probe_w: float | None = None) -> None:
        # from the epoch's last step to its end: the validation pass
        work = _work(now, work)
        gap = work - self._w_mark
        if self._paused != self._paused_mark:
            # a page was computed during this epoch: what the run measured shared the cores with
            # it (a pause is capped at a second, a page rerun after Start takes longer on 2 cores).
            # The slowdown and the pace start afresh, and the line waits for CALM_S of calm.
            self._calm, self._calm_from = False, now - self._paused
            self._clock, self._loop_cum = self._clock[-1:], []
        elif not self._calm:
            self._calm = self._calm_from is None or now - self._paused - self._calm_from >= CALM_S
        self._paused_mark = self._paused
        self._val_s += gap
        self._val_n += 1
        steady = self._val_n > 1  # past the phase's first (warm-up) epoch
        if steady:
            self._rest_s += gap
            self._rest_n += 1
        self._after_epoch = True
        base = split_phase(ev.phase)[0]
        # a kind of phase measured before (an earlier seed's) keeps its pace until this one has
        # enough steps of its own to read a pace from
        if self._step_pace() is not None and (base not in self._paces or len(self._loop_cum) >= PACE_STEPS):
            self._paces[base] = self._step_pace()
        if probe is not None:
            self._probe = {**(self._probe or {}), **probe}
        model, val_rows = _model_of(ev.phase), self._sizes.get("val", 0)
        forward = self._probed_forward(model)
        if forward is not None and (steady or not self._fixed_known):
            if steady:
                self._fixed_s += max(gap - val_rows * forward, 0.0)
                self._fixed_n += 1
            self._epoch_fixed = (self._fixed_s / self._fixed_n if self._fixed_n
                                 else max(gap - val_rows * forward, 0.0))  # a first epoch's, until a steady one
            self._fixed_known = self._fixed_known or steady
        if val_rows and (steady or model not in self._eval_ps):
            self._eval_ps[model] = (self._rest_s / self._rest_n if steady else gap) / val_rows
            n_train = self._total // max(self._epochs, 1) * self._batch_size(self._phase)
            for p in self._phases:
                if p not in self._started:
                    self._planned[p] = self._planned_steps(p, n_train)
        # after the probe: its time is no step's
        self._t_mark, self._w_mark = now + probe_s, work + (probe_s if probe_w is None else probe_w)

    # -- reading -------------------------------------------------------------------------
    def _step_pace(self) -> float | None:
        """Measured work seconds per training step of the current phase (None before its first
        step): the mean of its newer half of steps once it has PACE_STEPS, else of all after the first."""
        cum = self._loop_cum
        n = len(cum)
        if not n:
            return self._first_step_s
        half = n // 2 if n >= PACE_STEPS else 0
        return (cum[-1] - (cum[half - 1] if half else 0.0)) / (n - half)

    def _progress_eta(self, now: float) -> tuple[float, float | None]:
        planned = sum(self._planned.get(p, 0) for p in self._phases)
        done = sum(min(self._done_steps.get(p, 0), self._planned.get(p, 0)) for p in self._phases)
        if self._status in DONE:
            return (1.0 if self._status == "completed" else (done / planned if planned else 0.0)), 0.0
        if not planned:
            return 0.0, None
        frac = min(done / planned, 1.0)
        pace = self._step_pace()
        if self._step == 0 or pace is None or self._probe is None or not self._calm:
            return frac, None  # "estimating": no pace yet, the phases after it not yet probed, or
            # every epoch so far shared the cores with a page's start-up
        if len(self._loop_cum) < PACE_STEPS:  # too few steps yet: the kind's pace measured before, if any
            pace = self._paces.get(split_phase(self._phase)[0], pace)
        # The current phase: its steps left at its measured pace and its validation passes left at
        # their measured time, counting down from its newest event, then its test evaluation; then
        # each phase to come at its own measured or probed costs.
        # an epoch's end: this phase's after its first, else its model's (a first epoch's at worst)
        rows, model = self._sizes.get("val", 0), _model_of(self._phase)
        if self._rest_n:
            val = self._rest_s / self._rest_n
        elif rows and model in self._eval_ps:
            val = rows * self._eval_ps[model]
        elif self._val_n:
            val = self._val_s / self._val_n
        else:
            val = rows * (self._eval_cost(self._phase) or 0.0)
        # Work seconds, made wall seconds by the recent slowdown; counting down on the wall clock.
        k = self.slowdown()
        starts = max(self._epochs - self._val_n - (0 if self._after_epoch else 1), 0)  # epochs yet to begin
        left = (max(self._total - self._step, 0) * pace + max(self._epochs - self._val_n, 0) * val
                + starts * self._epoch_start)
        eta = max(k * (left + self._finish_s(self._phase)) - (now - self._t_mark), 0.0)
        return frac, eta + k * sum(self.phase_estimate(p) for p in self._phases_after(self._phase))

    def phase_estimate(self, phase: str, *, teacher_logits: bool = True) -> float:
        """Planned work seconds of a phase that has not started: its steps at its measured pace (a phase
        of the same kind ran before: an earlier seed's, a sweep's first cell's) or its probed one,
        its validation passes and test evaluation at its model's eval cost; with ``teacher_logits``
        a phase that trains on cached teacher logits first has the teacher compute them."""
        c = _probed(self._probe or {}, phase)
        pace = self._paces.get(split_phase(phase)[0]) or (c.step_s if c is not None else None)
        steps = self._planned.get(phase, 0)
        if pace is None:  # nothing measured or probed for it: the current pace is all there is
            return steps * (self._step_pace() or 0.0)
        optim = self.cfg.teacher_optim if phase.startswith("teacher") else self.cfg.optim
        out = (steps * pace + optim.epochs * self._epoch_end_s(phase) + (optim.epochs - 1) * self._epoch_start
               + self._finish_s(phase))
        if teacher_logits and c is not None and c.pre_rows:
            out += c.pre_rows * (self._eval_cost("teacher") or 0.0)
        return out

    def _epoch_end_s(self, phase: str) -> float:
        """Work seconds of one epoch's end (validation pass, filing, recorders) of a phase to
        come: as measured for its model (whose validation passes already include the rest), else
        its probed validation forward plus the rest as measured in the newest phase."""
        rows, model = self._sizes.get("val", 0), _model_of(phase)
        if model in self._eval_ps:
            return rows * self._eval_ps[model]
        return rows * (self._eval_cost(phase) or 0.0) + self._epoch_fixed

    def _probed_forward(self, model: str) -> float | None:
        """A model's probed eval forward per sample (None if not probed)."""
        probe = self._probe or {}
        names = ("baseline", "distilled", "pseudo") if model == "student" else (model,)
        return next((probe[n].forward_s for n in names if n in probe), None)

    def _eval_cost(self, phase: str) -> float | None:
        """Eval seconds per sample of a phase's model: measured by its validation passes (every
        student phase shares one architecture), else probed."""
        model = _model_of(phase)
        if model in self._eval_ps:
            return self._eval_ps[model]
        return self._probed_forward(model)

    def _finish_s(self, phase: str) -> float:
        """Seconds of a phase's end (test metrics, latency profile, comparisons): as long as the
        same kind of phase took (a student's, for another student), else its model over the test
        set and the latency profile at its eval cost, as kdcore.train.experiment runs them."""
        base = split_phase(phase)[0]
        if base in self._finished_s:
            return self._finished_s[base]
        same = [s for k, s in self._finished_s.items() if _model_of(k) == _model_of(phase) == "student"]
        if same:
            return max(same)
        return (self._eval_cost(phase) or 0.0) * (self._sizes.get("test", 0)
                                                  + PROFILE_BATCHES * self.cfg.optim.batch_size)

    def pace(self, now: float | None = None) -> float | None:
        """Measured work seconds per training step of the current phase (None before its first step)."""
        with self._lock:
            return self._step_pace()

    def snapshot(self) -> LiveSnapshot:
        """A consistent copy of the run's state, cheap enough to take several times a second."""
        now = time.perf_counter()
        with self._lock:
            progress, eta = self._progress_eta(now)
            end = self._t_end if self._t_end is not None else now
            return LiveSnapshot(
                status=self._status, message=self._message, config=to_dict(self.cfg),
                run_id=self._run_id, phases=self._phases, phase=self._phase, epoch=self._epoch,
                epochs=self._epochs, step=self._step, total_steps=self._total,
                progress=progress, eta_s=eta,
                elapsed_s=(end - self._t0) if self._t0 else 0.0,
                first_point_s=self._first_point,
                last_step=dict(self._last_step) if self._last_step else None,
                steps={p: s.points() for p, s in self._steps.items()},
                epochs_log={p: s.points() for p, s in self._epochs_log.items()},
                metrics={k: dict(v) for k, v in self._metrics.items()},
                version=self._version)


SEED_SEP = " · seed "  # a multi-seed run's student phases are named "baseline · seed 3"


class LiveResume(LiveRun):
    """An interrupted or stopped run trained on from its checkpoints (:func:`kdcore.train.experiment.resume`)
    under its own id, watched like a new run."""

    def __init__(self, run_id: int, *, store: RunStore, max_points: int = 300):
        from kdcore.config import from_dict

        super().__init__(from_dict(store.get(run_id)["config"]), store=store, max_points=max_points)
        self.resume_id = run_id

    def _run(self) -> RunResult:
        from kdcore.train.experiment import resume

        data, self._sizes = load_with_sizes(self.cfg.data)
        self._data = data  # what the ETA's probe of the phases to come trains on
        return resume(self.resume_id, store=self.store, callbacks=[self._on_event], stop=self.stop_event,
                      data=data, recorders=LAB_RECORDERS)


def seed_phase(phase: str, seed: int) -> str:
    """The name a student phase of ``seed`` has in a multi-seed run."""
    return f"{phase}{SEED_SEP}{seed}"


def split_phase(name: str) -> tuple[str, int | None]:
    """("baseline · seed 3") -> ("baseline", 3); a plain phase name -> (name, None)."""
    base, sep, seed = name.partition(SEED_SEP)
    return (base, int(seed)) if sep and seed.isdigit() else (name, None)


class LiveSeeds(LiveRun):
    """The same run over several seeds, all distilled from one teacher (:func:`kdcore.compare`).

    Teachers train once (first seed); every seed's students are filed under their own phase
    names (``baseline · seed 1``) so a page can draw each seed's curves and their mean. When it
    ends, ``result`` is the :class:`~kdcore.train.experiment.CompareResult`.
    """

    thread_name = "kd-live-seeds"

    def __init__(self, cfg: RunConfig, seeds: list[int], *, store: RunStore | None = None,
                 max_points: int = 300):
        super().__init__(cfg, store=store, max_points=max_points)
        self.seeds = list(seeds)
        base = _planned_phases(cfg, store)
        teachers = tuple(p for p in base if p.startswith("teacher"))
        students = tuple(p for p in base if not p.startswith("teacher"))
        self._phases = teachers + tuple(seed_phase(p, s) for s in self.seeds for p in students)
        self._steps = {p: Series(max_points) for p in self._phases}
        self._epochs_log = {p: Series(max_points) for p in self._phases}
        self._phase = self._phases[0]
        self._seed: int | None = None

    def _run(self):
        import pandas  # noqa: F401  (the summary over seeds, after the last phase, needs it: its
        # one-off import, 0.25 s, is paid now, under "estimating", not after the ETA said 0 s left)
        from kdcore.train.experiment import compare

        data, self._sizes = load_with_sizes(self.cfg.data)
        self._data = data
        return compare(self.cfg, seeds=self.seeds, store=self.store, callbacks=[self._relabel],
                       stop=self.stop_event, data=data, recorders=LAB_RECORDERS)

    def _relabel(self, ev: Any) -> None:
        if isinstance(ev, SeedStart):
            self._seed = ev.seed
            return
        if isinstance(ev, RunEnd):  # one seed ended; the comparison's end is the worker's result
            with self._lock:
                self._version += 1
                if ev.run_id is not None:
                    self._run_id = ev.run_id
            return
        phase = getattr(ev, "phase", None)
        if phase is not None and not phase.startswith(("teacher", "ensemble")) and self._seed is not None:
            ev = dataclasses.replace(ev, phase=seed_phase(phase, self._seed))
        self._on_event(ev)
