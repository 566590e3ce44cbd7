"""One run in a background thread, read through a locked snapshot (the dashboard's worker).

:class:`LiveRun` calls :func:`kdcore.experiment.run_experiment` in a daemon thread with a
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

from .config import RunConfig, to_dict
from .events import EpochEnd, PhaseEnd, PhaseStart, RunEnd, SeedStart, StepEnd
from .experiment import RunResult, run_experiment
from .store import RunStore

__all__ = ["Worker", "LiveRun", "LiveSeeds", "seed_phase", "split_phase", "SEED_SEP", "LiveSnapshot", "Series", "RunLimitReached", "max_runs", "active_runs",
           "active_run_ids", "probe_costs", "PhaseCost", "claim_slot", "release_slot", "worker_threads", "foreground", "MAX_RUNS_ENV", "DEFAULT_MAX_RUNS"]

MAX_RUNS_ENV = "KD_MAX_RUNS"
DEFAULT_MAX_RUNS = 2  # two CPU-bound runs already share a small machine's cores
DONE = ("completed", "stopped", "diverged", "failed")

# A phase whose probed compute per step is at least this long tells the ETA how loaded the machine
# is; a lighter one (a small student) is mostly per-step overhead, which it measures instead.
HEAVY_STEP_S = 0.005

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

    def yield_to_pages(self) -> None:
        t0 = time.monotonic()
        if not self._idle.is_set():
            self._idle.wait(self.MAX_PAUSE_S)
        rest = min(self._until - time.monotonic(), self.MAX_PAUSE_S - (time.monotonic() - t0))
        if rest > 0:
            time.sleep(rest)


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
    from .experiment import find_trained_teacher

    trains = cfg.teacher_source == "train" and (store is None or find_trained_teacher(store, cfg) is None)
    phases = ["teacher"] if trains else []
    extra = getattr(cfg, "extra_teachers", ())
    sources = getattr(cfg, "extra_teacher_sources", ()) or ("train",) * len(extra)
    phases += [f"teacher_{i + 2}" for i, src in enumerate(sources) if src == "train"]
    return tuple(phases) + ("baseline", "distilled") + (("pseudo",) if getattr(cfg, "pseudo_arm", False) else ())


def load_with_sizes(data_cfg) -> tuple[Any, dict]:
    """(the DataBundle, the sizes an ETA plans with), loaded before a job so it is loaded once;
    (None, {}) when it cannot be loaded: the job loads it again and reports why."""
    from .data import load_data

    try:
        data = load_data(data_cfg)
    except Exception:  # noqa: BLE001  (the job's own load names the problem)
        return None, {}
    return data, {"test": len(data.y_test), "train": len(data.y_train), "val": len(data.y_val),
                  "in_shape": tuple(data.in_shape), "classes": len(data.classes)}


def _tiny_step(model: torch.nn.Module, num_classes: int) -> None:
    x = torch.ones(8, 1)
    loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long))
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for q in model.parameters():
            q -= 1e-3 * q.grad


@dataclass(frozen=True)
class PhaseCost:
    """Probed costs of one phase's model: seconds per training step and per test sample."""

    step_s: float  # forward + backward + optimiser step on one batch of the phase's batch size
    forward_s: float  # eval-mode forward pass, per sample (test metrics, cached teacher logits)


def probe_costs(cfg: RunConfig, phases: tuple[str, ...], in_shape: tuple[int, ...], num_classes: int, *,
                repeats: int = 3, min_s: float = 0.05) -> dict[str, PhaseCost]:
    """The planned work of each phase, measured: what the ETA charges a phase that has not run.

    Each phase's model (the teacher, each extra teacher, the student alone, the student with its
    distiller) takes ``repeats`` forward + backward + Adam steps on a random batch of the phase's
    batch size (more while they take under ``min_s`` together) after one warm-up step, and as
    many eval forward passes; medians count. The distilled step includes the teacher's forward
    pass only when the method needs the live teacher (a logit method reads cached logits). Runs
    under a forked RNG, so the run's own random streams are untouched.

    Returns:
        {phase: PhaseCost}, plus "teacher_forward" (the teacher's eval forward, which a distilled
        phase with cached logits runs over its training set first); a phase whose model cannot be
        built here is left out.
    """
    from .config import phase_architectures
    from .models import build_model, seeded_init
    from .trainer import Alone, make_distiller

    arch = phase_architectures(cfg)

    def median_time(fn) -> float:
        times: list[float] = []
        start = time.perf_counter()
        # a tiny model's step is well under a millisecond: repeat it for long enough to time it
        while len(times) < repeats + 1 or (time.perf_counter() - start < min_s and len(times) < 200):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rest = sorted(times[1:])
        return rest[len(rest) // 2]

    def cost(distiller: torch.nn.Module, model: torch.nn.Module, batch: int,
             teacher: torch.nn.Module | None) -> PhaseCost:
        x, y = torch.randn(batch, *in_shape), torch.randint(num_classes, (batch,))
        with torch.no_grad():
            t_logits = teacher(x) if teacher is not None else None
        opt = torch.optim.Adam([q for q in distiller.parameters() if q.requires_grad], lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            _, terms = distiller(x, y, t_logits) if teacher is not None else distiller(x, y)
            sum(terms.values()).backward()
            opt.step()

        def forward() -> None:
            with torch.inference_mode():
                model(x)

        step_s = median_time(step)
        model.eval()
        forward_s = median_time(forward) / batch
        model.train()
        return PhaseCost(step_s, forward_s)

    out: dict[str, PhaseCost] = {}
    with seeded_init(0):  # the init lock: a probe's draws never land inside another run's init
        # the cost of a step that does almost nothing: autograd, optimiser and Python overhead,
        # which a tiny student's step is mostly made of
        bias = torch.nn.Linear(1, num_classes)
        out["overhead"] = PhaseCost(median_time(lambda: _tiny_step(bias, num_classes)), 0.0)
        try:
            teacher = build_model(cfg.teacher.name, in_shape=in_shape, num_classes=num_classes,
                                  params=cfg.teacher.params)
        except Exception:  # noqa: BLE001  (best effort: the ETA then uses the current pace)
            return out
        for phase in phases:
            m = arch.get(phase)
            if m is None:
                continue
            try:
                optim = cfg.teacher_optim if phase.startswith("teacher") else cfg.optim
                model = teacher if phase == "teacher" else build_model(
                    m.name, in_shape=in_shape, num_classes=num_classes, params=m.params)
                if phase == "distilled":
                    teacher.eval()
                    for q in teacher.parameters():
                        q.requires_grad_(False)
                    d = make_distiller(cfg.loss, model, teacher, in_shape=in_shape)
                    cached = getattr(d, "uses_teacher_logits_only", True)
                    out[phase] = cost(d.train(), model, optim.batch_size, teacher if cached else None)
                    if cached:  # the teacher's logits over the training set, computed once first
                        out["teacher_forward"] = PhaseCost(0.0, out["teacher"].forward_s if "teacher" in out
                                                           else cost(Alone(teacher), teacher, 1, None).forward_s)
                else:
                    out[phase] = cost(Alone(model).train(), model, optim.batch_size, None)
            except Exception:  # noqa: BLE001  (a phase it cannot probe is charged the current pace)
                continue
    return out


def _probed(probe: dict[str, PhaseCost], phase: str) -> PhaseCost | None:
    """A phase's probed cost; a seed's student phase costs what its base phase does, the pseudo-label
    arm (the student alone on other labels) what the baseline does."""
    base = split_phase(phase)[0]
    return probe.get("baseline" if base == "pseudo" else base)


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

    def _finally(self) -> None:
        """Hook: runs after the job ended, before :meth:`join` returns."""

    def _work(self) -> None:
        try:
            # Small models gain nothing from intra-op threads, and OpenMP threads that spin while
            # the web server and other runs want the same cores make training many times slower
            # (measured: 60x on 2 busy cores). Give each job its share of the cores instead.
            torch.set_num_threads(worker_threads())
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
        self._phase_t0 = 0.0
        self._steps = {p: Series(max_points) for p in self._phases}
        self._epochs_log = {p: Series(max_points) for p in self._phases}
        self._metrics: dict[str, dict] = {}
        self._last_step: dict | None = None
        self._probe: dict[str, PhaseCost] | None = None  # measured at the first epoch's end
        self._load_factor: float | None = None  # real / probed compute seconds, from a heavy phase
        self._sizes: dict[str, int] = {}  # test and training set sizes, for the planned evaluations

    def _run(self) -> RunResult:
        data, self._sizes = load_with_sizes(self.cfg.data)
        return run_experiment(self.cfg, store=self.store, callbacks=[self._on_event],
                              stop=self.stop_event, data=data)

    def _finally(self) -> None:
        self.first_point.set()  # nobody waits for a point that will never come

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, StepEnd) and self._first_point is not None:
            foreground.yield_to_pages()  # outside the lock; never before the first point
        if isinstance(ev, EpochEnd) and self._probe is None:
            # The planned work of the phases to come, measured once the first epoch is done (not
            # before the first point). Its own time is left out of the current phase's pace.
            t0 = time.perf_counter()
            base = tuple(dict.fromkeys(split_phase(p)[0] for p in self._phases))  # "baseline · seed 2"
            probe = (probe_costs(self.cfg, base, self._sizes["in_shape"], self._sizes["classes"])
                     if self._sizes else {})
            with self._lock:
                self._probe = probe
                self._phase_t0 += time.perf_counter() - t0
        now = time.perf_counter()
        with self._lock:
            self._version += 1
            if getattr(ev, "run_id", None) is not None:
                self._run_id = ev.run_id
            if isinstance(ev, StepEnd):
                self._on_step(ev, now)
            elif isinstance(ev, EpochEnd):
                self._epoch = ev.epoch
                self._epochs_log.setdefault(ev.phase, Series(self.max_points)).add({
                    "epoch": ev.epoch, "train_loss": ev.train_loss, "train_acc": ev.train_acc,
                    "val_loss": ev.val_loss, "val_acc": ev.val_acc, "seconds": ev.seconds,
                    **{f"term_{k}": v for k, v in ev.terms.items()}})
            elif isinstance(ev, PhaseStart):
                self._on_phase_start(ev, now)
            elif isinstance(ev, PhaseEnd):
                if ev.status == "completed":
                    self._metrics[ev.phase] = dict(ev.metrics)
                    self._done_steps[ev.phase] = self._planned.get(ev.phase, 0)
            elif isinstance(ev, RunEnd):
                # the slot is free before any page can see the end: a page redraws once on "done",
                # and a slot released after that redraw read "2 of 2 in use" until the next one
                release_slot(self)
                self._status, self._message = ev.status, ev.message
                self._metrics.update({k: dict(v) for k, v in ev.metrics.items()})

    def _on_phase_start(self, ev: PhaseStart, now: float) -> None:
        self._status = "running"
        self._phase, self._epoch, self._epochs, self._step = ev.phase, 0, ev.epochs, 0
        self._total = ev.epochs * ev.steps_per_epoch
        self._phase_t0 = now
        self._planned[ev.phase] = self._total
        if ev.phase not in self._phases:  # a phase this module does not know: before the students
            i = self._phases.index("baseline") if "baseline" in self._phases else len(self._phases)
            self._phases = self._phases[:i] + (ev.phase,) + self._phases[i:]
        self._started.add(ev.phase)
        # Until a phase starts its step count is unknown; estimate it from this phase's
        # training-set size (steps_per_epoch * batch_size is within one batch of it).
        n_train = ev.steps_per_epoch * self._batch_size(ev.phase)
        for p in self._phases:
            if p not in self._started:
                optim = self.cfg.teacher_optim if p.startswith("teacher") else self.cfg.optim
                self._planned[p] = optim.epochs * math.ceil(n_train / optim.batch_size)

    def _batch_size(self, phase: str) -> int:
        return (self.cfg.teacher_optim if phase.startswith("teacher") else self.cfg.optim).batch_size

    def _on_step(self, ev: StepEnd, now: float) -> None:
        if self._first_point is None:
            self._first_point = now - self._t0
            self.first_point.set()
        self._status = "running"
        self._phase, self._epoch, self._step, self._total = ev.phase, ev.epoch, ev.step, ev.total_steps
        self._done_steps[ev.phase] = ev.step
        spe = ev.total_steps / max(self._epochs, 1) if self._epochs else ev.total_steps
        point = {"phase": ev.phase, "x": ev.step / spe if spe else float(ev.epoch), "step": ev.step,
                 "loss": ev.loss, **ev.terms}
        self._last_step = point
        self._steps.setdefault(ev.phase, Series(self.max_points)).add(point)

    # -- reading -------------------------------------------------------------------------
    def _progress_eta(self, now: float) -> tuple[float, float | None]:
        planned = sum(self._planned.get(p, 0) for p in self._phases)
        done = sum(min(self._done_steps.get(p, 0), self._planned.get(p, 0)) for p in self._phases)
        if self._status in DONE:
            return (1.0 if self._status == "completed" else (done / planned if planned else 0.0)), 0.0
        if not planned:
            return 0.0, None
        frac = min(done / planned, 1.0)
        eta = None
        if self._step > 0 and now > self._phase_t0:
            # The current phase at its measured pace (validation passes included), then the
            # planned work still ahead: this phase's test evaluation, and each phase to come at its
            # probed costs (steps, validation passes, the teacher's logits it caches, its test
            # evaluation). Real time = load x probed compute + a per-step overhead (batching,
            # events): a heavy phase tells the load, a light one its overhead.
            pace = (now - self._phase_t0) / self._step
            probe = self._probe or {}
            cur = _probed(probe, self._phase)
            eta = max(self._total - self._step, 0) * pace
            if cur is None or "overhead" not in probe:
                after = self._phases[self._phases.index(self._phase) + 1:] if self._phase in self._phases else ()
                return frac, eta + sum(self._planned.get(p, 0) * pace for p in after)
            load, _ = self._load_overhead(pace, probe)
            eta += self._finish_s(self._phase, probe, load)
            after = self._phases[self._phases.index(self._phase) + 1:] if self._phase in self._phases else ()
            eta += sum(self.phase_estimate(p, pace) for p in after)
        return frac, eta

    def _load_overhead(self, pace: float, probe: dict[str, PhaseCost]) -> tuple[float, float]:
        """(load, per-step overhead) from the current phase's pace; a heavy phase sets the load."""
        o0 = probe["overhead"].step_s
        compute = self._train_s(self._phase, probe) / max(self._total, 1)
        if compute >= HEAVY_STEP_S or self._load_factor is None:
            self._load_factor = max((pace - o0) / compute, 0.1) if compute > 0 else 1.0
        load = self._load_factor
        overhead = max(pace - load * compute, o0) if compute < HEAVY_STEP_S else o0
        return load, overhead

    def phase_estimate(self, phase: str, pace: float, *, teacher_logits: bool = True) -> float:
        """Planned seconds of a phase that has not started, given the current phase's ``pace``
        (seconds per step): its probed work times the load, plus the per-step overhead; with
        ``teacher_logits`` a distilled phase first computes the teacher's logits it caches."""
        probe = self._probe or {}
        if _probed(probe, phase) is None or _probed(probe, self._phase) is None or "overhead" not in probe:
            return self._planned.get(phase, 0) * pace
        load, overhead = self._load_overhead(pace, probe)
        out = (self._planned.get(phase, 0) * overhead + load * self._train_s(phase, probe)
               + self._finish_s(phase, probe, load))
        if teacher_logits and split_phase(phase)[0] == "distilled" and "teacher_forward" in probe:
            out += load * self._sizes.get("train", 0) * probe["teacher_forward"].forward_s
        return out

    def pace(self, now: float | None = None) -> float | None:
        """Seconds per step of the current phase so far (None before its first step)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            return (now - self._phase_t0) / self._step if self._step > 0 and now > self._phase_t0 else None

    def _train_s(self, phase: str, probe: dict[str, PhaseCost]) -> float:
        """Probed compute seconds of a phase's training: its steps and validation passes."""
        c = _probed(probe, phase)
        optim = self.cfg.teacher_optim if phase.startswith("teacher") else self.cfg.optim
        return self._planned.get(phase, 0) * c.step_s + optim.epochs * self._sizes.get("val", 0) * c.forward_s

    def _finish_s(self, phase: str, probe: dict[str, PhaseCost], load: float | None) -> float:
        """Planned seconds of a phase's end: its model over the test set and the latency profile
        (2 warm-up + 9 timed batches), as kdcore.experiment does."""
        c = _probed(probe, phase)
        if c is None or load is None:
            return 0.0
        return load * c.forward_s * (self._sizes.get("test", 0) + 11 * self.cfg.optim.batch_size)

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
    ends, ``result`` is the :class:`~kdcore.experiment.CompareResult`.
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
        from .experiment import compare

        data, self._sizes = load_with_sizes(self.cfg.data)
        return compare(self.cfg, seeds=self.seeds, store=self.store, callbacks=[self._relabel],
                       stop=self.stop_event, data=data)

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
